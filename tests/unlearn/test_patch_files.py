"""SLUG patches applied to weight files: key matching across layouts, stacking, dtype, refusals."""
import pytest
import torch

from unlearnkit import io
from unlearnkit.unlearn.patch_files import apply_patches_to_file, apply_patches_to_state, state_key
from unlearnkit.unlearn.patches import PatchMismatchError, apply_patch, make_patch, save_patch

LAYER = "text_model.encoder.layers.1.mlp.fc1.weight"
OTHER = "text_model.encoder.layers.0.self_attn.v_proj.weight"


def _patch(model, layer, seed, concept):
    w = dict(model.named_parameters())[layer]
    delta = 0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
    return make_patch(model, layer, delta, concept, 1.0)


def test_patched_file_equals_patched_model_and_keeps_other_tensors(make_hf_clip, tmp_path):
    model = make_hf_clip()
    src = io.save_safetensors(tmp_path / "clip.safetensors", model.state_dict(), {"note": "kept"})
    p1, p2, p3 = _patch(model, LAYER, 0, "a"), _patch(model, LAYER, 1, "b"), _patch(model, OTHER, 2, "c")
    paths = [save_patch(p, tmp_path / f"{p.concept}.safetensors") for p in (p1, p2, p3)]
    out, records = apply_patches_to_file(src, tmp_path / "out.safetensors", paths)
    assert [r["concept"] for r in records] == ["a", "b", "c"]
    state, meta = io.load_state_dict(out)
    for p in (p1, p2, p3):
        apply_patch(model, p)
    expected = model.state_dict()
    assert all(torch.allclose(state[k], expected[k], atol=1e-6) for k in state)
    before, _ = io.load_state_dict(src)
    assert torch.equal(
        state["text_model.encoder.layers.0.mlp.fc1.weight"],
        before["text_model.encoder.layers.0.mlp.fc1.weight"],
    )
    assert meta["note"] == "kept" and "unlearnkit.slug_patches" in meta
    with pytest.raises(ValueError, match="already applied"):
        apply_patches_to_file(out, tmp_path / "again.safetensors", paths[:1])
    with pytest.raises(FileExistsError):
        apply_patches_to_file(src, out, paths[:1])


def test_layouts_matched_by_suffix_and_dtype_kept(make_hf_clip):
    model = make_hf_clip()
    p = _patch(model, LAYER, 0, "a")
    text_only = {
        k.removeprefix("text_model."): v for k, v in model.state_dict().items() if k.startswith("text_model.")
    }
    ldm = {f"cond_stage_model.transformer.text_model.{k}": v.half() for k, v in text_only.items()}
    ldm["model.diffusion_model.x.weight"] = torch.ones(3)
    assert state_key(text_only, p) == "encoder.layers.1.mlp.fc1.weight"  # transformers 5 CLIPTextModel keys
    out = apply_patches_to_state(ldm, [p])
    key = "cond_stage_model.transformer." + LAYER
    assert out[key].dtype == torch.float16
    assert torch.allclose(out[key].float(), ldm[key].float() + p.delta, atol=2e-3)
    assert ldm[key] is not out[key]  # the input dict is not modified


def test_other_models_refused_with_reason(make_hf_clip):
    model, other = make_hf_clip(0), make_hf_clip(1)
    p = _patch(model, LAYER, 0, "a")
    with pytest.raises(PatchMismatchError, match="holds other weights"):
        state_key(other.state_dict(), p)
    with pytest.raises(PatchMismatchError, match="no tensor named like"):
        state_key({"transformer.resblocks.1.mlp.c_fc.weight": torch.zeros(64, 32)}, p)
    with pytest.raises(ValueError, match="given twice"):
        apply_patches_to_state(model.state_dict(), [p, p])
