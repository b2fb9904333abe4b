"""ESD / AdvUnlearn training: it erases, the retain term holds, resume is exact, bad input is refused."""
import dataclasses
import math

import pytest
import torch

from unlearnkit.erase.advunlearn import EraseConfig, prepare, train_erased_encoder
from unlearnkit.erase.denoise import Denoiser, SamplerConfig, TrajectoryBank
from unlearnkit.erase.prompts import encode_ids, tokenize

CONCEPT, RETAIN = ("a photo of a cat",), ("a photo of a dog", "a red car")
BASE = EraseConfig(concept=CONCEPT, retain=RETAIN, attack="none", iterations=20, warmup=0, lr=1e-3,
                   sampler_steps=3, bank_size=2)


@torch.no_grad()
def probe(comps, encoder):
    """On original-model x_t of the concept: the concept direction coefficient, retain drift and ∅ drift."""
    den = Denoiser(comps.unet, comps.scheduler, SamplerConfig(5, 3.0))
    orig, tok = comps.text_encoder, comps.tokenizer
    c_o, u_o = encode_ids(orig, tokenize(tok, list(CONCEPT))), encode_ids(orig, tokenize(tok, [""]))
    bank = TrajectoryBank(den, c_o, u_o, 8, torch.Generator().manual_seed(123))
    x, t = bank.states[0].flatten(0, 1), bank.timesteps.repeat(8)
    n = len(x)
    e_u, e_c = den.out(x, t, u_o.expand(n, -1, -1)), den.out(x, t, c_o.expand(n, -1, -1))
    e_new = den.out(x, t, encode_ids(encoder, tokenize(tok, list(CONCEPT))).expand(n, -1, -1))
    d = e_c - e_u
    coef = float(((e_new - e_u) * d).sum() / (d * d).sum())  # 1: as the original; -η: the ESD target

    def drift(prompt):
        ids = tokenize(tok, [prompt])
        return float((den.out(x, t, encode_ids(encoder, ids).expand(n, -1, -1))
                      - den.out(x, t, encode_ids(orig, ids).expand(n, -1, -1))).pow(2).mean())

    return coef, drift(RETAIN[0]), drift("")


def test_esd_training_turns_the_concept_direction_around(tiny_components):
    comps = tiny_components()
    before = probe(comps, comps.text_encoder)
    result = train_erased_encoder(comps, dataclasses.replace(BASE, retain_weight=0.0), progress=False)
    coef = probe(comps, result.encoder)[0]
    assert before[0] == pytest.approx(1.0) and coef < -0.3, coef
    assert len(result.losses) == 20 and result.base_sha256
    assert all(not p.requires_grad for p in comps.unet.parameters())
    assert probe(comps, comps.text_encoder) == before  # the input encoder is untouched


def test_retain_term_holds_retain_outputs_and_the_empty_prompt(tiny_components):
    comps = tiny_components()
    runs = {"none": dict(retain_weight=0.0), "retain": dict(retain_weight=3.0, retain_empty=True)}
    drift = {
        k: probe(comps, train_erased_encoder(comps, dataclasses.replace(BASE, **v), progress=False).encoder)[
            1:
        ]
        for k, v in runs.items()
    }
    assert drift["retain"][0] < 0.5 * drift["none"][0], drift  # retain prompts held
    assert drift["retain"][1] < 0.5 * drift["none"][1], drift  # and ε(∅), CFG's other branch
    prep = prepare(comps, BASE, torch.device("cpu"))
    assert (
        torch.equal(prep.retain_ids[-1:], tokenize(comps.tokenizer, [""]))
        and len(prep.retain_ids) == len(RETAIN) + 1
    )


def test_resume_after_a_kill_is_bit_identical(tiny_components, tmp_path):
    comps = tiny_components()
    cfg = dataclasses.replace(BASE, attack="pgd", iterations=6, warmup=2, attack_steps=2, attack_lr=1e-2)
    full = train_erased_encoder(comps, cfg, tmp_path / "a", checkpoint_every=2, progress=False)

    class Killed(Exception):
        pass

    def kill_at_5(done):
        if done == 5:
            raise Killed

    with pytest.raises(Killed):
        train_erased_encoder(
            comps, cfg, tmp_path / "b", checkpoint_every=2, progress=False, on_step=kill_at_5
        )
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "checkpoint-0000002.pt",
        "checkpoint-0000004.pt",
    ]
    with pytest.raises(FileExistsError, match="resume"):
        train_erased_encoder(comps, cfg, tmp_path / "b", checkpoint_every=2, progress=False)
    resumed = train_erased_encoder(
        comps, cfg, tmp_path / "b", checkpoint_every=2, resume=True, progress=False
    )
    assert resumed.resumed_from == 4 and resumed.losses == full.losses
    for (name, a), b in zip(full.encoder.state_dict().items(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="other settings.*lr"):
        train_erased_encoder(
            comps, dataclasses.replace(cfg, lr=2e-3), tmp_path / "b", resume=True, progress=False
        )


def test_bad_input_is_refused_with_the_input_named(tiny_components):
    comps = tiny_components()
    with pytest.raises(ValueError, match="retain: empty retain set"):
        train_erased_encoder(comps, dataclasses.replace(BASE, retain=()), progress=False)
    with pytest.raises(ValueError, match="concept: .*tokenise to nothing"):
        train_erased_encoder(comps, dataclasses.replace(BASE, concept=(" ",)), progress=False)
    with pytest.raises(ValueError, match="text encoder: width 48 does not match .* 32"):
        train_erased_encoder(tiny_components(width=48, cross=32), BASE, progress=False)
    with pytest.raises(ValueError, match="attack"):
        dataclasses.replace(BASE, attack="gcg")


HALF_RUN = dataclasses.replace(BASE, attack="pgd", iterations=2, attack_steps=1, lr=1e-5, bank_size=1)


def test_a_half_precision_unet_stays_half_and_trains_the_encoder(tiny_components):
    """A bf16 UNet (as loaded for a GPU), a float32 encoder: x_t and conditionings are cast to the UNet."""
    comps = tiny_components()
    comps = dataclasses.replace(comps, unet=comps.unet.to(torch.bfloat16))
    result = train_erased_encoder(comps, HALF_RUN, progress=False)
    assert all(math.isfinite(v) for v in result.losses) and len(result.losses) == 2
    assert {p.dtype for p in comps.unet.parameters()} == {torch.bfloat16}


def test_a_half_precision_encoder_trains_in_float32(tiny_components):
    """bf16 weights of ~0.02 cannot hold Adam's steps of 1e-5 (they round away): float32 master weights."""
    comps = tiny_components()
    comps = dataclasses.replace(comps, unet=comps.unet.to(torch.bfloat16),
                                text_encoder=comps.text_encoder.to(torch.bfloat16))
    key = next(k for k in comps.text_encoder.state_dict() if k.endswith("encoder.layers.0.mlp.fc1.weight"))
    before = comps.text_encoder.state_dict()[key].float()
    result = train_erased_encoder(comps, HALF_RUN, progress=False)
    after = result.encoder.state_dict()[key]
    assert after.dtype == torch.float32
    assert (after != before).float().mean() > 0.5  # the steps landed
    assert comps.text_encoder.state_dict()[key].dtype == torch.bfloat16  # the input is untouched
