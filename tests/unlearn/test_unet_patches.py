"""SLUG patches on a UNet cross-attention K/V projection: one patch file for diffusers, LDM checkpoints and
ComfyUI keys (found by content), stacked, removed, and refused on another UNet."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.export import ldm_checkpoint, unet_to_ldm
from unlearnkit.unlearn import (
    PatchMismatchError,
    apply_patch,
    apply_patches_to_state,
    load_patch,
    make_patch,
    remove_patch,
    save_patch,
)
from unlearnkit.unlearn.patch_match import kv_signature

LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight"
LDM_KEY = "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_v.weight"


@pytest.fixture(scope="module")
def unet():
    return store.load_unet("paragon")


def unet_patch(unet, seed: int = 0, layer: str = LAYER, concept: str = "bold style"):
    weight = dict(unet.named_parameters())[layer]
    delta = 0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
    return make_patch(unet, layer, delta, concept, 1.0, target="unet")


def test_unet_patch_round_trips_and_applies_stacks_and_removes(unet, tmp_path):
    patch = load_patch(save_patch(unet_patch(unet), tmp_path / "p.safetensors"))
    assert patch.target == "unet" and patch.layer == LAYER
    weight = dict(unet.named_parameters())[LAYER]
    before = weight.detach().clone()
    apply_patch(unet, patch)
    torch.testing.assert_close(weight.detach(), before + patch.delta)
    second = unet_patch(unet, seed=1, concept="slanted style")  # made on the unpatched weights
    apply_patch(unet, second)
    torch.testing.assert_close(weight.detach(), before + patch.delta + second.delta)
    remove_patch(unet, second)
    remove_patch(unet, patch)
    assert torch.equal(weight.detach(), before)


def test_the_kv_signature_is_the_same_in_every_layout(unet):
    ldm = unet_to_ldm(unet.state_dict(), dict(unet.config))
    diffusers = kv_signature((k, tuple(v.shape)) for k, v in unet.state_dict().items())
    assert diffusers == kv_signature((k, tuple(v.shape)) for k, v in ldm.items())


@pytest.mark.parametrize("prefix", ["model.", ""])  # an LDM checkpoint; ComfyUI's model patcher keys
def test_unet_patch_applies_to_ldm_and_comfy_keys_by_content(unet, prefix):
    ckpt = ldm_checkpoint(unet, store.load_text_encoder(), store.load_vae())  # fp16, LDM keys
    state = {k.removeprefix("model.") if not prefix else k: v for k, v in ckpt.items()}
    patch = unet_patch(unet)
    out = apply_patches_to_state(state, [patch])
    key = LDM_KEY.removeprefix("model.") if not prefix else LDM_KEY
    changed = [k for k in state if not torch.equal(state[k], out[k])]
    assert changed == [key]
    torch.testing.assert_close(out[key].float(), state[key].float() + patch.delta, atol=2e-3, rtol=0)


def test_unet_patch_is_refused_on_another_unet(unet):
    patch = unet_patch(unet)
    other = store.load_unet("base")
    with pytest.raises(PatchMismatchError, match="made for another model"):
        apply_patch(other, patch)
    with pytest.raises(PatchMismatchError, match="none holds its weights|holds other weights"):
        apply_patches_to_state(unet_to_ldm(other.state_dict(), dict(other.config)), [patch])


def test_a_text_encoder_patch_is_not_found_in_the_unet(unet):
    encoder = store.load_text_encoder()
    name = "encoder.layers.0.self_attn.v_proj.weight"
    patch = make_patch(encoder, name, torch.zeros(64, 64), "bold style", 1.0)
    with pytest.raises(PatchMismatchError, match="missing"):
        apply_patch(unet, patch)


def test_unet_target_needs_a_cross_attention_kv_layer(unet):
    with pytest.raises(ValueError, match="cross-attention K/V"):
        make_patch(unet, "conv_in.weight", torch.zeros_like(unet.conv_in.weight), "x", 1.0, target="unet")
    with pytest.raises(ValueError, match="target"):
        make_patch(unet, LAYER, torch.zeros(64, 64), "x", 1.0, target="vae")
