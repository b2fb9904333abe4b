"""The continuous (soft-prompt) attack lowers the loss it optimises and touches nothing but δ."""
import pytest
import torch

from unlearnkit.erase.denoise import Denoiser, SamplerConfig, TrajectoryBank
from unlearnkit.erase.objectives import denoise_concept, fixed, match_original
from unlearnkit.erase.prompts import encode_ids, tokenize
from unlearnkit.erase.soft_attack import SoftAttackConfig, attack_loss, random_tokens, soft_prompt_attack


@pytest.fixture
def setup(tiny_components):
    comps = tiny_components(seed=1)
    erased = tiny_components(seed=2).text_encoder  # "erased": another encoder of the same shape
    den = Denoiser(comps.unet, comps.scheduler, SamplerConfig(steps=4, guidance=3.0))
    ids = tokenize(comps.tokenizer, ["a photo of a cat"])
    with torch.no_grad():
        cond, uncond = (
            encode_ids(comps.text_encoder, ids),
            encode_ids(comps.text_encoder, tokenize(comps.tokenizer, [""])),
        )
    bank = TrajectoryBank(den, cond, uncond, 2, torch.Generator().manual_seed(0))
    return comps, erased, den, ids, cond, bank


@pytest.mark.parametrize("method,lr", [("pgd", 1e-2), ("fast_at", 2e-3)])
def test_attack_lowers_its_loss_on_a_fixed_batch(setup, method, lr):
    comps, erased, den, ids, cond, bank = setup
    draw = match_original(den, bank, ids, cond, batch=4)
    batch = fixed(draw, 7)
    fixed_draw = lambda gen: batch  # noqa: E731 - the same batch every step
    gen = torch.Generator().manual_seed(0)
    delta0 = random_tokens(erased, 2, gen)
    with torch.no_grad():
        before = float(attack_loss(erased, den, batch, delta0))
    cfg = SoftAttackConfig(tokens=2, steps=15, lr=lr, method=method)
    res = soft_prompt_attack(erased, den, fixed_draw, cfg, gen, delta=delta0)
    with torch.no_grad():
        after = float(attack_loss(erased, den, batch, res.delta))
    assert after < 0.9 * before, (before, after)
    assert res.delta.shape == delta0.shape and len(res.losses) == 15
    assert all(p.grad is None for p in erased.parameters())  # gradients only for δ


def test_latest_init_warm_starts_and_random_init_does_not(setup):
    comps, erased, den, ids, cond, bank = setup
    draw = denoise_concept(den, bank.states[:, 0, -1], ids)
    start = torch.ones(1, 1, 32)
    warm = soft_prompt_attack(erased, den, draw, SoftAttackConfig(steps=1, lr=1e-3), torch.Generator(), start)
    cold = soft_prompt_attack(
        erased, den, draw, SoftAttackConfig(steps=1, lr=1e-3, init="random"), torch.Generator(), start
    )
    assert (warm.delta - start).abs().max() <= 1e-3 + 1e-6
    assert (cold.delta - start).abs().max() > 0.5


def test_bad_attack_settings_are_refused():
    with pytest.raises(ValueError, match="attack method"):
        SoftAttackConfig(method="fgsm")
    with pytest.raises(ValueError, match="attack steps"):
        SoftAttackConfig(steps=0)
