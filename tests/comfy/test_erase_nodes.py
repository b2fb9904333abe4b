"""Swap Text Encoder (nodes/erase.py) in real ComfyUI, 2024-03 and 0.3.75, at real SD1.x size.

ComfyUI's own SD1 CLIP (768 wide, 12 layers; fixture UKTestClipFromFile) holds random encoder A; the
node swaps in random encoder B from a file (also as an HF folder). The swapped
CLIP's conditioning must equal transformers' CLIPTextModel(B) on ComfyUI's tokens, the input CLIP must
still give A's, a SLUG patch made by the core on B must apply on top, and a 64-wide encoder is refused.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
from comfy_harness import Graph
from real_size_models import SD1_TEXT as SD1
from real_size_models import random_text_encoder
from safetensors.torch import save_file
from suite import suite_fixtures

from unlearnkit.unlearn import apply_patch, make_patch, save_patch

PROMPT = "a painting of a lighthouse in the style of van gogh"
NARROW = {
    **SD1,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
SLUG_LAYER = "encoder.layers.7.mlp.fc1.weight"
SWAPS = {"b_file": "te_b.safetensors", "b_folder": "te_b_hf/model.safetensors"}  # .pt files: tests/erase


def fp16_state(model) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().half().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("position_ids")
    }


def build_world(root: Path) -> dict:
    """Encoder files (A outside the model folders; B as a file and an HF folder, a 64-wide one), a patch on
    B."""
    enc_dir, patch_dir = root / "clip", root / "slug_patches"
    (enc_dir / "te_b_hf").mkdir(parents=True)
    patch_dir.mkdir()
    a, b = random_text_encoder(SD1, 1, fp16_exact=True), random_text_encoder(SD1, 2, fp16_exact=True)
    with torch.no_grad():  # a signed zero: ComfyUI's 0*w + new makes it +0.0; patch hashes must not care
        dict(b.named_parameters())[SLUG_LAYER][0, :2] = torch.tensor([-0.0, 0.0])
    save_file(fp16_state(a), root / "te_a.safetensors")
    b_state = fp16_state(b)
    save_file(b_state, enc_dir / "te_b.safetensors")
    os.link(enc_dir / "te_b.safetensors", enc_dir / "te_b_hf" / "model.safetensors")
    b.config.to_json_file(enc_dir / "te_b_hf" / "config.json")
    save_file(fp16_state(random_text_encoder(NARROW, 3, fp16_exact=True)), enc_dir / "te_w64.safetensors")
    gen = torch.Generator().manual_seed(4)
    weight = dict(b.named_parameters())[SLUG_LAYER]
    patch = make_patch(b, SLUG_LAYER, 0.05 * torch.randn(weight.shape, generator=gen), "test concept", 1.0)
    save_patch(patch, patch_dir / "b_patch.safetensors")
    return {"root": root, "a": a, "b": b, "patch": patch,
            "folders": f"clip={enc_dir};slug_patches={patch_dir}"}


def swap_graph(world: dict) -> dict:
    g = Graph()
    clip = g.node(
        "UKTestClipFromFile", weights=str(world["root"] / "te_a.safetensors"), config="", precision="fp32"
    )
    before = g.node("UKTestEncode", clip=clip, text=PROMPT, key="a_before")
    last = before
    for key, name in SWAPS.items():
        swapped = g.node("UnlearnKitSwapTextEncoder", clip=clip, encoder_name=name)
        last = g.node("UKTestEncode", clip=swapped, text=PROMPT, key=key, after=last)
        if key == "b_file":
            g.node(
                "UKTestSaveConditioning",
                conditioning=g.node("CLIPTextEncode", clip=swapped, text=PROMPT),
                key="b_real_node",
            )
            patched = g.node(
                "UnlearnKitApplySlugPatch", clip=swapped, patch_name="b_patch.safetensors", strength=1.0
            )
            last = g.node("UKTestEncode", clip=patched, text=PROMPT, key="b_slug", after=last)
    last = g.node("UKTestEncode", clip=clip, text=PROMPT, key="a_after", after=last)
    # ComfyUI's own dtype choice (fp16 weights on CPU): the swapped tensors are stored in it
    clip16 = g.node(
        "UKTestClipFromFile",
        weights=str(world["root"] / "te_a.safetensors"),
        config="",
        precision="comfy default",
    )
    swapped16 = g.node("UnlearnKitSwapTextEncoder", clip=clip16, encoder_name="te_b.safetensors")
    g.node("UKTestEncode", clip=swapped16, text=PROMPT, key="b_fp16", after=last)
    return g.prompt()


def wrong_width_graph(world: dict) -> dict:
    g = Graph()
    clip = g.node(
        "UKTestClipFromFile", weights=str(world["root"] / "te_a.safetensors"), config="", precision="fp32"
    )
    g.node(
        "UKTestEncode",
        clip=g.node("UnlearnKitSwapTextEncoder", clip=clip, encoder_name="te_w64.safetensors"),
        text=PROMPT,
        key="never",
    )
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    return {"swap": swap_graph(world), "wrong_width": wrong_width_graph(world)}


world, comfy_run = suite_fixtures(__name__)


def comfy_ids(out_dir: Path, key: str) -> torch.Tensor:
    ids = json.loads((out_dir / f"{key}.json").read_text())["ids"]
    assert list(ids) == ["l"] and len(ids["l"]) == 1, ids  # one 77-token chunk
    return torch.tensor(ids["l"])


@torch.no_grad()
def reference(model, ids: torch.Tensor) -> np.ndarray:
    return model(input_ids=ids).last_hidden_state.numpy()  # what ComfyUI's "last" layer conditioning is


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape == (1, 77, 768), (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4, err_msg=what)


def test_swapped_clip_conditions_like_transformers_on_the_new_encoder(comfy_run, world):
    r = comfy_run["swap"].assert_ok()
    ids = comfy_ids(r.out_dir, "b_file")
    assert ids[0, 0] == 49406 and int((ids[0] == 49407).sum()) > 1  # <start> … <end> and padding with <end>
    expected = reference(world["b"], ids)
    for key in [*SWAPS, "b_real_node", "b_fp16"]:  # B's values are fp16-exact, so fp16 storage holds them too
        assert_close(r.latent(key), expected, f"{key}: swapped CLIP vs CLIPTextModel(B)")
    assert np.abs(expected - reference(world["a"], ids)).max() > 0.1  # A and B really differ


def test_input_clip_is_untouched(comfy_run, world):
    r = comfy_run["swap"].assert_ok()
    expected = reference(world["a"], comfy_ids(r.out_dir, "a_before"))
    assert_close(r.latent("a_before"), expected, "input CLIP before the swap")
    assert_close(r.latent("a_after"), expected, "input CLIP after the swapped clones were used")
    assert json.loads((r.out_dir / "a_after.json").read_text())["patches"] == 0


def test_slug_patch_applies_on_the_swapped_encoder(comfy_run, world):
    r = comfy_run["swap"].assert_ok()
    b = copy.deepcopy(world["b"])
    apply_patch(b, world["patch"])
    expected = reference(b, comfy_ids(r.out_dir, "b_slug"))
    assert_close(r.latent("b_slug"), expected, "swapped + SLUG patch vs core-patched CLIPTextModel(B)")
    assert np.abs(r.latent("b_slug") - r.latent("b_file")).max() > 1e-3


def test_wrong_width_encoder_is_refused_naming_file_and_dims(comfy_run):
    message = comfy_run["wrong_width"].assert_failed(
        "te_w64.safetensors", "hidden size", "64", "768", "ValueError"
    )
    assert "Source: width 64" in message and "Target: width 768" in message
