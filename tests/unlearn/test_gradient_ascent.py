"""Gradient ascent baseline: trains only the editable tower, stops at the forget level, restores grad
flags."""

import pytest
import torch

from unlearnkit.unlearn.gradient_ascent import GradientAscentConfig, gradient_ascent, trainable_parameters
from unlearnkit.unlearn.gradients import forget_loss


def _similarity(enc, forget):
    images, text = forget[0]
    with torch.no_grad():
        tokens = enc.prepare_texts(text, "t", count=images.shape[0])
        return 1 - float(forget_loss(enc.encode_image(images), enc.encode_text(tokens)))


def test_ga_lowers_similarity_until_the_forget_level_and_only_in_its_tower(make_toy, make_batches):
    enc = make_toy()
    enc.tower = "text"
    forget, _ = make_batches((8, 8))
    start = _similarity(enc, forget)
    image_before = {k: v.clone() for k, v in enc.model.state_dict().items() if k.startswith("image_")}
    scale = enc.model.logit_scale.detach().clone()
    metrics = lambda: (float(_similarity(enc, forget) > start - 0.5), 1.0)  # noqa: E731  "forgotten" at -0.5
    cfg = GradientAscentConfig(lr=1e-2, max_steps=200, eval_every=3, progress=False)
    r = gradient_ascent(enc, forget, metrics, cfg)
    assert r.reached and r.forget_metric == 0.0 and r.steps % 3 == 0 and r.steps < 200
    assert [h[0] for h in r.history] == list(range(3, r.steps + 1, 3))
    assert _similarity(enc, forget) <= start - 0.5
    assert all(torch.equal(v, enc.model.state_dict()[k]) for k, v in image_before.items())
    assert torch.equal(enc.model.logit_scale.detach(), scale)
    assert all(p.requires_grad for p in enc.model.parameters())  # flags as before
    assert r.params_updated == sum(p.numel() for _, p in trainable_parameters(enc))


def test_ga_stops_at_the_budget_when_the_level_is_not_reached(toy, make_batches):
    forget, _ = make_batches((8, 8))
    r = gradient_ascent(
        toy,
        forget,
        lambda: (1.0, 1.0),
        GradientAscentConfig(lr=1e-3, max_steps=4, eval_every=3, progress=False),
    )
    assert not r.reached and r.steps == 4 and [h[0] for h in r.history] == [3, 4]


def test_ga_already_forgotten_takes_no_step(toy, make_batches):
    forget, _ = make_batches((8, 8))
    before = {k: v.clone() for k, v in toy.model.state_dict().items()}
    r = gradient_ascent(toy, forget, lambda: (0.0, 1.0), GradientAscentConfig(progress=False))
    assert (
        r.reached
        and r.steps == 0
        and all(torch.equal(v, toy.model.state_dict()[k]) for k, v in before.items())
    )


def test_ga_config_and_input_checks(toy, make_batches):
    forget, _ = make_batches((8, 8))
    with pytest.raises(ValueError, match="lr"):
        GradientAscentConfig(lr=0)
    with pytest.raises(ValueError, match="max_steps"):
        GradientAscentConfig(max_steps=0)
    with pytest.raises(ValueError, match="needs retain pairs"):
        gradient_ascent(toy, forget, lambda: (1.0, 1.0), retain_weight=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        gradient_ascent(toy, forget, lambda: (float("nan"), 1.0), GradientAscentConfig(progress=False))
