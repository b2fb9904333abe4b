"""GA + FT: the retain term keeps the retain pairs' contrastive loss lower than GA alone."""
import pytest
import torch

from unlearnkit.unlearn.ga_ft import GaFtConfig, ga_ft
from unlearnkit.unlearn.gradient_ascent import GradientAscentConfig, gradient_ascent
from unlearnkit.unlearn.gradients import contrastive_loss


def _retain_loss(enc, retain):
    images, texts = retain[0]
    with torch.no_grad():
        tokens = enc.prepare_texts(texts, "t", count=images.shape[0])
        return float(contrastive_loss(enc.encode_image(images), enc.encode_text(tokens), enc.logit_scale()))


def test_ga_ft_keeps_retain_loss_below_plain_ga(make_toy, make_batches):
    forget, retain = make_batches((8, 8))
    never = lambda: (1.0, 1.0)  # noqa: E731  run the whole budget
    ga_enc, ft_enc = make_toy(), make_toy()
    gradient_ascent(ga_enc, forget, never, GradientAscentConfig(lr=1e-2, max_steps=30, progress=False))
    r = ga_ft(
        ft_enc, forget, retain, never, GaFtConfig(lr=1e-2, max_steps=30, retain_weight=1.0, progress=False)
    )
    assert r.steps == 30 and not r.reached
    assert _retain_loss(ft_enc, retain) < _retain_loss(ga_enc, retain)


def test_ga_ft_needs_a_positive_retain_weight():
    with pytest.raises(ValueError, match="positive weight"):
        GaFtConfig(retain_weight=0.0)
