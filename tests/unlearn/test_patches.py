"""SLUG patch files: save/load, apply/stack/remove exactly, and refusal for other models."""
import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from unlearnkit.unlearn.patches import (
    PatchMismatchError,
    applied_patches,
    apply_patch,
    layer_sha256,
    load_patch,
    make_patch,
    remove_patch,
    save_patch,
)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap):
    return all(torch.equal(snap[k], v) for k, v in model.state_dict().items())


def _patch(model, layer, concept, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    w = dict(model.named_parameters())[layer]
    return make_patch(
        model, layer, scale * torch.randn(w.shape, generator=g), concept, 1.5, {"forget_after": 0.0}
    )


def test_save_load_roundtrip_and_no_silent_overwrite(toy, tmp_path):
    p = _patch(toy.model, "text_in.weight", "Elon Musk", 0)
    path = save_patch(p, tmp_path / "elon.safetensors")
    q = load_patch(path)
    assert (q.layer, q.concept, q.step, q.metrics, q.layer_sha256, q.stack_signature) == (
        p.layer, p.concept, p.step, p.metrics, p.layer_sha256, p.stack_signature)
    assert torch.equal(q.delta, p.delta) and q.id == p.id
    assert path.stat().st_size < 4 * p.delta.numel() + 4096  # one layer's delta + header
    with pytest.raises(FileExistsError):
        save_patch(p, path)
    save_patch(p, path, overwrite=True)


def test_load_refuses_foreign_or_altered_files(toy, tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not an UnlearnKit SLUG patch"):
        load_patch(tmp_path / "other.safetensors")
    p = _patch(toy.model, "text_in.weight", "x", 0)
    save_patch(p, tmp_path / "p.safetensors")
    from unlearnkit import io

    tensors, meta = io.load_state_dict(tmp_path / "p.safetensors")
    save_file({k: v * 2 for k, v in tensors.items()}, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="altered or corrupt"):
        load_patch(tmp_path / "bad.safetensors")
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={**meta, "format_version": "99"})
    with pytest.raises(ValueError, match="newer"):
        load_patch(tmp_path / "future.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_apply_then_remove_restores_exact_bytes(make_toy, dtype):
    toy = make_toy()
    p = _patch(toy.model, "text_in.weight", "a", 0)  # made on fp32; applies to an fp16 copy too
    toy.model.to(dtype)
    snap = _snapshot(toy.model)
    assert apply_patch(toy.model, p) == "text_in.weight"
    changed = [k for k, v in toy.model.state_dict().items() if not torch.equal(snap[k], v)]
    assert changed == ["text_in.weight"]
    expected = (snap["text_in.weight"].float() + p.delta).to(
        dtype
    )  # the sum, rounded once to the layer's dtype
    assert torch.equal(toy.model.text_in.weight, expected)
    remove_patch(toy.model, p)
    assert _same(toy.model, snap) and applied_patches(toy.model) == []


@pytest.mark.parametrize(
    "layers", [("text_in.weight", "image_in.weight"), ("text_in.weight", "text_in.weight")]
)
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_stacking_is_additive_and_removal_in_any_order_restores(toy, layers, order):
    model = toy.model
    snap = _snapshot(model)
    a, b = _patch(model, layers[0], "a", 1), _patch(model, layers[1], "b", 2)
    apply_patch(model, a)
    apply_patch(model, b)
    expected = {k: v.clone() for k, v in snap.items()}
    expected[layers[0]] = expected[layers[0]] + a.delta
    expected[layers[1]] = expected[layers[1]] + b.delta
    assert all(torch.allclose(expected[k], v, atol=1e-6) for k, v in model.state_dict().items())
    assert [p.concept for _, p in applied_patches(model)] == ["a", "b"]
    first, second = (a, b)[order[0]], (a, b)[order[1]]
    remove_patch(model, first.id)
    solo = make_toy_weights(snap, second)
    assert all(torch.equal(solo[k], v) for k, v in model.state_dict().items())  # = the other patch alone
    remove_patch(model, second)
    assert _same(model, snap)


def make_toy_weights(snap, patch):
    out = {k: v.clone() for k, v in snap.items()}
    out[patch.layer] = (snap[patch.layer].float() + patch.delta).to(snap[patch.layer].dtype)
    return out


def test_patch_made_on_a_patched_model_is_valid_for_the_base(make_toy, caplog):
    toy = make_toy()
    a = _patch(toy.model, "text_in.weight", "a", 1)
    apply_patch(toy.model, a)
    b = _patch(toy.model, "text_in.weight", "b", 2)  # made while a is applied: hashed against the original
    assert b.layer_sha256 == a.layer_sha256 and b.made_on_top_of == (a.id,)
    fresh = make_toy()
    with caplog.at_level(logging.WARNING):
        apply_patch(fresh.model, b)
    assert "not applied now" in caplog.text


def test_refuses_patches_for_other_models(make_toy):
    toy = make_toy()
    p = _patch(toy.model, "text_in.weight", "a", 0)
    with pytest.raises(PatchMismatchError, match="other weights"):
        apply_patch(make_toy(seed=5).model, p)  # same architecture, other weights
    with pytest.raises(PatchMismatchError, match="shape"):
        apply_patch(make_toy(width=12).model, p)
    with pytest.raises(PatchMismatchError, match="missing"):
        apply_patch(nn.Sequential(nn.Linear(8, 16)), p)
    apply_patch(toy.model, p)
    with pytest.raises(ValueError, match="already applied"):
        apply_patch(toy.model, p)
    with pytest.raises(ValueError, match="not applied to this model"):
        remove_patch(make_toy().model, p)


def test_layers_changed_behind_the_registry(make_toy, caplog):
    toy = make_toy()
    p = _patch(toy.model, "text_in.weight", "a", 0)
    apply_patch(toy.model, p)
    with torch.no_grad():
        toy.model.text_in.weight.add_(1.0)  # e.g. weights reloaded by the host
    with pytest.raises(ValueError, match="changed outside"):
        remove_patch(toy.model, p)
    with caplog.at_level(logging.WARNING), pytest.raises(PatchMismatchError, match="other weights"):
        apply_patch(toy.model, _patch(make_toy().model, "text_in.weight", "b", 1))
    assert "changed outside" in caplog.text


def test_make_patch_bad_inputs(toy):
    w = toy.model.text_in.weight
    with pytest.raises(ValueError, match="concept"):
        make_patch(toy.model, "text_in.weight", torch.zeros_like(w), "  ", 1.0)
    with pytest.raises(ValueError, match="shape"):
        make_patch(toy.model, "text_in.weight", torch.zeros(2, 2), "c", 1.0)
    with pytest.raises(ValueError, match="NaN"):
        make_patch(toy.model, "text_in.weight", torch.full_like(w, float("nan")), "c", 1.0)
    with pytest.raises(PatchMismatchError, match="not in the model"):
        make_patch(toy.model, "nope.weight", torch.zeros_like(w), "c", 1.0)


def test_hash_is_dtype_stable_and_value_sensitive():
    w = torch.randn(4, 4)
    assert layer_sha256(w) == layer_sha256(w.half())
    w2 = w.clone()
    w2[0, 0] += 0.5
    assert layer_sha256(w) != layer_sha256(w2)


def test_patch_from_clipmodel_applies_to_sd_text_encoder_and_wrappers(make_hf_clip):
    from transformers import CLIPTextModel

    clip = make_hf_clip()
    layer = "text_model.encoder.layers.1.mlp.fc2.weight"
    p = _patch(clip, layer, "style", 0)
    te = CLIPTextModel(clip.config.text_config)
    te.load_state_dict(clip.text_model.state_dict())  # the SD text encoder with the same weights
    name = apply_patch(te, p)
    assert name in ("encoder.layers.1.mlp.fc2.weight", layer)  # transformers 5 drops the text_model. prefix

    class Wrapper(nn.Module):  # ComfyUI-style names: clip_l.transformer.text_model....
        def __init__(self, a, b):
            super().__init__()
            self.clip_l = nn.Module()
            self.clip_l.transformer = a
            self.clip_g = nn.Module()
            self.clip_g.transformer = b

    other = make_hf_clip(seed=3)
    wrapped = Wrapper(make_hf_clip(), other)  # both towers have the layer; the hash picks clip_l
    assert apply_patch(wrapped, p) == "clip_l.transformer." + layer
    twins = Wrapper(make_hf_clip(), make_hf_clip())
    with pytest.raises(PatchMismatchError, match="several identical"):
        apply_patch(twins, p)
    bigger = make_hf_clip()
    bigger.text_model.encoder.layers.append(type(bigger.text_model.encoder.layers[0])(clip.config.text_config))
    with pytest.raises(PatchMismatchError, match="block stack"):
        apply_patch(bigger, p)


def test_fp16_patch_roundtrip_half_size_and_applies_to_both_precisions(toy, tmp_path):
    import copy

    w = toy.model.text_in.weight
    delta = 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    p32 = make_patch(toy.model, "text_in.weight", delta, "x", 1.0)
    p16 = make_patch(toy.model, "text_in.weight", delta, "x", 1.0, dtype=torch.float16)
    a, b = save_patch(p32, tmp_path / "a.safetensors"), save_patch(p16, tmp_path / "b.safetensors")
    q = load_patch(b)
    assert q.delta.dtype == torch.float16 and q.id == p16.id and torch.equal(q.delta, p16.delta)
    assert b.stat().st_size < a.stat().st_size - 2 * delta.numel() + 512
    half = copy.deepcopy(toy.model).half()
    apply_patch(half, q)  # fingerprint is fp16-rounded: the fp16 copy of the model is the same base
    assert half.text_in.weight.dtype == torch.float16
    assert torch.allclose(half.text_in.weight.float(), (w.detach() + delta).half().float(), atol=2e-3)
    snap = _snapshot(toy.model)
    apply_patch(toy.model, q)
    assert torch.equal(
        toy.model.text_in.weight, w.detach().clone().copy_(snap["text_in.weight"] + q.delta.float())
    )
    remove_patch(toy.model, q)
    assert _same(toy.model, snap)


def test_fp16_delta_that_overflows_is_refused(toy):
    w = toy.model.text_in.weight
    with pytest.raises(ValueError, match="too large"):
        make_patch(toy.model, "text_in.weight", torch.full(w.shape, 1e6), "x", 1.0, dtype=torch.float16)
