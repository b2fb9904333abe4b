"""SD SLUG nodes in real ComfyUI, 2024-03 and 0.3.75: UNet patches through the model patcher, SLUG Unlearn
with a MODEL and VAE, and example_workflows/"Unlearn a style with SLUG.json" judged.

Apply SLUG Patch: a UNet K/V patch made by the core on the tiny world's diffusers UNet goes on ComfyUI's MODEL
(the weight ComfyUI loads is the core's base + delta), is refused on another UNet and without a MODEL. SLUG
Unlearn with MODEL + VAE and an HF CLIP folder as image tower runs the generic search; without a VAE it is
refused. The example workflow erases "bold style" at the default strength (judged).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_harness import REPO_ROOT, Graph
from suite import suite_fixtures
from test_unlearn_nodes import apply

from unlearnkit.tinyworld import store
from unlearnkit.unlearn import load_patch, make_patch, save_patch

UNET_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight"
UNET_LDM = "input_blocks.3.1.transformer_blocks.0.attn2.to_v.weight"
WORKFLOW = REPO_ROOT / "example_workflows" / "Unlearn a style with SLUG.json"
HF_TOWER = "tiny_clip_sd/model.safetensors"


def build_world(root: Path) -> dict:
    """A UNet patch file made on the tiny world's paragon UNet; the tiny world's CLIPModel as an HF folder."""
    patch_dir = root / "slug_patches"
    patch_dir.mkdir()
    unet = store.load_unet("paragon")
    delta = 0.05 * torch.randn(64, 64, generator=torch.Generator().manual_seed(5))
    unet_patch = make_patch(unet, UNET_LAYER, delta, "unet concept", 1.0, target="unet")
    save_patch(unet_patch, patch_dir / "unet.safetensors")
    store.load_clip().save_pretrained(root / "clip_vision" / "tiny_clip_sd")
    folders = f"slug_patches={patch_dir};clip_vision={root / 'clip_vision'}"
    return {"unet_patch": unet_patch, "folders": folders}


def unet_patch_graph(unet: str = "paragon", with_model: bool = True) -> dict:
    """Apply SLUG Patch with a UNet patch file: the MODEL as ComfyUI loads it, patched and not."""
    g = Graph()
    tiny = g.node("UnlearnKitLoadTinyWorld", unet=unet)
    extra = {"model": tiny.out(0)} if with_model else {}
    patched = apply(g, tiny.out(1), "unet.safetensors", **extra)
    g.node("UKTestLoadedWeight", model=patched.out(1), name=UNET_LDM, key="patched")
    g.node("UKTestLoadedWeight", model=tiny.out(0), name=UNET_LDM, key="unpatched")
    return g.prompt()


def sd_hf_tower_graph(with_vae: bool = True) -> dict:
    """SD SLUG (MODEL + VAE) with an HF CLIPModel folder as the image tower and the user's retain pairs: the
    generic search (forget captions vs the anchor, each retain caption among the retain captions)."""
    g = Graph()
    tiny = g.node("UnlearnKitLoadTinyWorld", unet="paragon")
    slug = g.node(
        "UnlearnKitSlugUnlearn", clip=tiny.out(1), concept="bold style",
        image_tower=HF_TOWER, filename_prefix="test/sd_bold", model=tiny.out(0),
        **({"vae": tiny.out(2)} if with_vae else {}),
        forget_images=g.node("UnlearnKitTinyWorldImages", source="style/bold", count=8, seed=0),
        retain_images=g.node("UnlearnKitTinyWorldImages", source="style/slanted", count=4, seed=1),
        retain_captions="\n".join(f"a handwritten digit {d} in slanted style" for d in (1, 4, 6, 9)),
        forget_captions="a handwritten digit in bold style", anchor="plain", max_evals=4,
    )
    g.node("UKTestSaveValue", key="outputs", text=slug.out(1))
    return g.prompt()


def attach_saver(workflow: dict, source_id: int, slot: int, key: str) -> None:
    """Link output ``slot`` of node ``source_id`` to a new UKTestSaveValue node (UI format), to read it
    back."""
    source = next(n for n in workflow["nodes"] if n["id"] == source_id)
    kind = source["outputs"][slot]["type"]
    node_id = max(n["id"] for n in workflow["nodes"]) + 1
    link_id = max(link[0] for link in workflow["links"]) + 1
    workflow["nodes"].append(
        {
            "id": node_id,
            "type": "UKTestSaveValue",
            "pos": [0, 0],
            "size": [200, 60],
            "flags": {},
            "order": node_id,
            "mode": 0,
            "outputs": [],
            "properties": {},
            "widgets_values": [key],
            "inputs": [{"name": "images" if kind == "IMAGE" else "text", "type": kind, "link": link_id}],
        }
    )
    source["outputs"][slot]["links"].append(link_id)
    workflow["links"].append([link_id, source_id, slot, node_id, 0, kind])


def workflow_graph() -> dict:
    """The example SLUG workflow as saved, plus savers on both decodes and the patch path."""
    workflow = json.loads(WORKFLOW.read_text())
    titles = {n["id"]: n.get("title", "") for n in workflow["nodes"]}
    for link in [x for x in workflow["links"] if x[5] == "LATENT" and titles[x[1]].startswith("Sample (")]:
        tag = (
            titles[link[1]].removeprefix("Sample (").removesuffix(")").replace(" ", "_")
        )  # original, erased, from_file
        attach_saver(workflow, link[3], 0, tag)
    attach_saver(
        workflow, next(n["id"] for n in workflow["nodes"] if n["type"] == "UnlearnKitSlugUnlearn"), 1, "patch"
    )
    return workflow


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    return {"unet_patch": unet_patch_graph(), "unet_other": unet_patch_graph("base"),
            "unet_no_model": unet_patch_graph(with_model=False), "sd_hf_tower": sd_hf_tower_graph(),
            "sd_no_vae": sd_hf_tower_graph(with_vae=False), "workflow": workflow_graph()}


world, comfy_run = suite_fixtures(__name__)


def test_a_unet_patch_goes_on_the_model_through_its_patcher(comfy_run, world):
    r = comfy_run["unet_patch"].assert_ok()
    patched, unpatched = r.latent("patched"), r.latent("unpatched")
    assert r.record("patched")["patches"] == 1 and r.record("unpatched")["patches"] == 0
    assert r.record("patched")["key"].endswith("diffusion_model." + UNET_LDM)
    base = dict(store.load_unet("paragon").named_parameters())[UNET_LAYER].detach()
    np.testing.assert_allclose(unpatched, base.numpy(), atol=2e-3)  # the checkpoint holds fp16 weights
    np.testing.assert_allclose(patched, unpatched + world["unet_patch"].delta.numpy(), atol=2e-3)
    assert np.abs(patched - unpatched).max() > 0.05


@pytest.mark.parametrize(("graph", "fragments"), [
    ("unet_other", ["unet.safetensors", "made for another model"]),
    ("unet_no_model", ["unet.safetensors", "patches a UNet layer; connect the MODEL"]),
    ("sd_no_vae", ["vae: connect the model's VAE"]),
])
def test_refusals(comfy_run, graph, fragments):
    assert "Error" in comfy_run[graph].assert_failed(*fragments)


def test_sd_slug_with_an_hf_clip_folder_and_user_retain_pairs(comfy_run, world):
    r = comfy_run["sd_hf_tower"].assert_ok()
    patch = load_patch(json.loads((r.out_dir / "outputs.json").read_text())["text"])
    assert patch.concept == "bold style" and patch.step > 0
    assert patch.metrics["forget_before"] > 0.5 and 1 <= patch.metrics["layers_tried"] <= 4
    assert patch.metrics["search_evals"] <= 1 + 4 * 4


def test_example_workflow_erases_the_style(comfy_run):
    """Judged by the tiny world's style and digit judges (never used by SLUG): at the default strength the
    images prompted "a handwritten digit 3 in bold style" are no longer bold, and most are still 3s.

    Measured (0.3.75, seed 1, 16 images): bold 16/16 originally, 0/16 with SLUG's outputs and with the
    written file reloaded; digit 3 14/16 in all three (the chosen layer: a UNet cross-attention V).
    """
    r = comfy_run["workflow"].assert_ok()
    patch = load_patch(json.loads((r.out_dir / "patch.json").read_text())["text"])
    assert patch.concept == "bold style" and patch.metrics["search_success"] == 1.0
    assert patch.layer.startswith(("encoder.layers.", "input_blocks.", "middle_block.", "output_blocks."))
    saved = json.loads(WORKFLOW.read_text())  # its Show Text nodes show the patch file and SLUG's report
    assert r.shown_text(saved, "Patch path") == json.loads((r.out_dir / "patch.json").read_text())["text"]
    assert patch.layer in r.shown_text(saved, "Report")
    from unlearnkit.tinyworld.styles import STYLES

    style_judge, digit_judge = store.load_judge("style"), store.load_judge("digit")
    bold, digit_ok = {}, {}
    for tag in ("original", "erased", "from_file"):
        images = torch.from_numpy(r.latent(tag)).permute(0, 3, 1, 2).float() * 2 - 1  # (B, 3, 16, 16)
        with torch.no_grad():
            bold[tag] = float((style_judge(images).argmax(1) == STYLES.index("bold")).float().mean())
            digit_ok[tag] = float((digit_judge(images).argmax(1) == 3).float().mean())
    assert bold["original"] >= 0.8, bold
    assert bold["erased"] <= 0.15 and bold["from_file"] <= 0.15, bold
    assert digit_ok["erased"] >= digit_ok["original"] - 0.2 and digit_ok["from_file"] >= 0.5, digit_ok
    np.testing.assert_allclose(r.latent("from_file"), r.latent("erased"), atol=2e-2)
