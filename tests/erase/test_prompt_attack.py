"""The discrete (UnlearnDiffAtk-style) attack returns real tokens that lower its loss."""
import torch

from unlearnkit.erase.denoise import Denoiser, SamplerConfig
from unlearnkit.erase.objectives import denoise_concept
from unlearnkit.erase.prompt_attack import PromptAttackConfig, eval_loss, prompt_attack
from unlearnkit.erase.prompts import special_ids, tokenize, with_prefix_tokens


def test_prompt_attack_finds_tokens_with_lower_loss(tiny_components):
    comps = tiny_components(seed=3)
    den = Denoiser(comps.unet, comps.scheduler, SamplerConfig(steps=4, guidance=1.0))
    ids = tokenize(comps.tokenizer, ["a photo of a cat"])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    draw = denoise_concept(den, x0, ids, batch=2)
    cfg = PromptAttackConfig(tokens=3, steps=30, lr=0.05, eval_draws=3, check_every=5)
    res = prompt_attack(comps.text_encoder, den, draw, comps.tokenizer, cfg, torch.Generator().manual_seed(1))
    assert res.eval_loss < res.eval_loss_start
    assert res.prefix.shape == (3,) and not set(res.prefix.tolist()) & special_ids(comps.tokenizer)
    assert res.success is None and res.steps_run == 30


def test_a_judge_stops_the_attack_at_its_first_yes(tiny_components):
    comps = tiny_components(seed=3)
    den = Denoiser(comps.unet, comps.scheduler, SamplerConfig(steps=4, guidance=1.0))
    ids = tokenize(comps.tokenizer, ["a photo of a cat"])
    draw = denoise_concept(den, torch.zeros(1, 4, 8, 8), ids)
    seen = []

    def judge(adv_ids):
        seen.append(adv_ids)
        return len(seen) == 2

    cfg = PromptAttackConfig(tokens=2, steps=50, check_every=5, eval_draws=1)
    res = prompt_attack(
        comps.text_encoder, den, draw, comps.tokenizer, cfg, torch.Generator(), judge=judge, base_ids=ids
    )
    assert res.success is True and res.steps_run == 10 and len(seen) == 2
    assert torch.equal(seen[-1], with_prefix_tokens(ids, res.prefix))
    assert eval_loss(comps.text_encoder, den, [draw(torch.Generator().manual_seed(0))], res.prefix) > 0
