"""Generation-aware SLUG metric: generates with the *edited* text tower, classifies with the unedited CLIP."""
import types

import pytest
import torch

import unlearnkit.tinyworld.tasks.slug_generation as tg
from unlearnkit.tinyworld.tasks.slug_pairs import Concept
from unlearnkit.unlearn.layer_step import stepped_layer

LAYER = "text_model.encoder.layers.0.self_attn.v_proj.weight"


@pytest.fixture
def clip_and_pipe():
    from unlearnkit.tinyworld.models import build_clip, text_encoder_from_clip

    torch.manual_seed(0)
    clip = build_clip().eval()
    return clip, types.SimpleNamespace(text_encoder=text_encoder_from_clip(clip))


def _layer(te):
    return dict(te.named_parameters())[LAYER.removeprefix("text_model.")].detach().clone()


def test_generation_uses_the_edited_tower_and_restores_the_pipeline(clip_and_pipe, monkeypatch):
    clip, pipe = clip_and_pipe
    seen = []

    def fake_images(p, prompts, steps, guidance, seed):
        seen.append((_layer(p.text_encoder), len(prompts), steps, seed))
        return torch.zeros(len(prompts), 3, 16, 16)

    monkeypatch.setattr(tg, "pipeline_images", fake_images)
    metrics = tg.generation_metrics(clip, pipe, Concept("digit", 7), per_class=2, steps=3, seed=5)
    original = _layer(pipe.text_encoder)
    grad = torch.randn(dict(clip.named_parameters())[LAYER].shape)
    with stepped_layer(clip, LAYER, grad, 0.5):
        forget, retain = metrics()
        edited = dict(clip.named_parameters())[LAYER].detach().clone()
    assert torch.equal(seen[0][0], edited) and not torch.equal(edited, original)
    assert seen[0][1:] == (20, 3, 5)  # 10 digits x 2, the given steps and seed
    assert torch.equal(_layer(pipe.text_encoder), original)  # restored after measuring
    # identical images all get one class c: c == 7 -> (1, 0); otherwise (0, 2 of 18 other prompts name c)
    assert (forget, retain) == (1.0, 0.0) or (forget, retain) == (0.0, pytest.approx(1 / 9))


def test_classifier_is_frozen_against_later_edits(clip_and_pipe, monkeypatch):
    clip, pipe = clip_and_pipe
    images = torch.randn(20, 3, 16, 16, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    monkeypatch.setattr(tg, "pipeline_images", lambda *a, **k: images)
    metrics = tg.generation_metrics(clip, pipe, Concept("digit", 3), per_class=2)
    first = metrics()
    with torch.no_grad():
        for p in clip.vision_model.parameters():
            p.add_(torch.randn_like(p))  # the classifier is a copy: editing the model does not move it
    assert metrics() == first
