"""SLUG nodes (nodes/unlearn/) in real ComfyUI, 2024-03 and 0.3.75.

Apply SLUG Patch: patches made by the core on a transformers CLIPTextModel, applied to ComfyUI's own SD1
CLIP holding the same (random, 64-wide) encoder, must condition exactly like the core-patched model;
stacking, strength, refusals. SLUG Unlearn on the tiny world: a patch file + plot come back, and the
patched CLIP moves the concept's prompt more than an unrelated one. SD SLUG (MODEL + VAE), UNet patches and
the example workflow: test_unlearn_sd_nodes.py.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from comfy_harness import Graph
from real_size_models import random_text_encoder
from safetensors.torch import save_file
from suite import suite_fixtures
from test_erase_nodes import NARROW, fp16_state

from unlearnkit.tinyworld import store
from unlearnkit.unlearn import apply_patch, load_patch, make_patch, save_patch

PROMPT = "a handwritten digit 3 in bold style"
OTHER = "a drawing of the digit 5"
LAYERS = {"p1": "encoder.layers.1.mlp.fc1.weight", "p2": "encoder.layers.0.self_attn.v_proj.weight",
          "p3": "encoder.layers.1.mlp.fc1.weight"}  # p3 stacks on p1's layer
TINY_TOWER = "tiny world (built in)"


def hf_text_config(config: dict) -> dict:
    return {**config, "eos_token_id": 49407, "bos_token_id": 49406, "pad_token_id": 1, "layer_norm_eps": 1e-5,
            "projection_dim": config["hidden_size"], "model_type": "clip_text_model"}


def random_patch(model, layer: str, seed: int, concept: str):
    gen = torch.Generator().manual_seed(seed)
    weight = dict(model.named_parameters())[layer]
    return make_patch(model, layer, 0.5 * torch.randn(weight.shape, generator=gen), concept, 1.0)


def tiny_world_encoder(root: Path) -> tuple[Path, Path]:
    """The tiny world's SD text encoder as a file + ComfyUI config (a missing committed weight fails the
    suite)."""
    encoder = store.load_text_encoder()
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items() if not k.endswith("position_ids")},
              root / "tiny_te.safetensors")
    text = {
        k: getattr(encoder.config, k)
        for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "vocab_size", "hidden_act",
        )
    }
    (root / "tiny_te.json").write_text(json.dumps(hf_text_config(text)))
    return root / "tiny_te.safetensors", root / "tiny_te.json"


def build_world(root: Path) -> dict:
    """A random 64-wide encoder S (and T) with core-made patch files; the tiny world's encoder and CLIP
    folder."""
    patch_dir = root / "slug_patches"
    patch_dir.mkdir()
    s, t = random_text_encoder(NARROW, 11, fp16_exact=True), random_text_encoder(NARROW, 12, fp16_exact=True)
    save_file(fp16_state(s), root / "s.safetensors")
    (root / "s.json").write_text(json.dumps(hf_text_config(NARROW)))
    patches = {
        name: random_patch(s, layer, seed, f"concept {name}")
        for seed, (name, layer) in enumerate(LAYERS.items())
    }
    patches["other"] = random_patch(t, LAYERS["p1"], 9, "other model")
    for name, patch in patches.items():
        save_patch(patch, patch_dir / f"{name}.safetensors")
    (root / "no_images").mkdir()
    tiny = tiny_world_encoder(root)
    # the tiny world's CLIPModel as an HF folder: an image tower from models/clip_vision
    store.load_clip().save_pretrained(root / "clip_vision" / "tiny_clip")
    return {"root": root, "s": s, "patches": patches, "tiny": tiny,
            "folders": f"slug_patches={patch_dir};clip_vision={root / 'clip_vision'}"}


def small_clip(g: Graph, world: dict):
    root = world["root"]
    return g.node(
        "UKTestClipFromFile",
        weights=str(root / "s.safetensors"),
        config=str(root / "s.json"),
        precision="fp32",
    )


def apply(g: Graph, clip, name: str, strength: float = 1.0, **extra):
    return g.node("UnlearnKitApplySlugPatch", clip=clip, patch_name=name, strength=strength, **extra)


def apply_graph(world: dict) -> dict:
    g = Graph()
    clip = small_clip(g, world)
    last = g.node("UKTestEncode", clip=clip, text=PROMPT, key="base")
    variants = {
        "p1": apply(g, clip, "p1.safetensors"),
        "p123": apply(
            g, clip, "p1.safetensors", patch_name_2="p2.safetensors", patch_name_3="p3.safetensors"
        ),
        "chain12": apply(g, apply(g, clip, "p1.safetensors"), "p2.safetensors"),
        "half": apply(g, clip, "p1.safetensors", strength=0.5),
    }
    for key, patched in variants.items():
        last = g.node("UKTestEncode", clip=patched, text=PROMPT, key=key, after=last)
    g.node("UKTestEncode", clip=clip, text=PROMPT, key="base_after", after=last)
    return g.prompt()


def refusal_graph(world: dict, *names: str) -> dict:
    g = Graph()
    clip = small_clip(g, world)
    for name in names:
        clip = apply(g, clip, name)
    g.node("UKTestEncode", clip=clip, text=PROMPT, key="never")
    return g.prompt()


def hf_tower_graph(world: dict, retain_captions: str) -> dict:
    """SLUG Unlearn with an HF CLIPModel folder as the image tower and the user's retain images + captions."""
    weights, config = world["tiny"]
    g = Graph()
    clip = g.node("UKTestClipFromFile", weights=str(weights), config=str(config), precision="fp32")
    slug = g.node(
        "UnlearnKitSlugUnlearn", clip=clip, concept="bold style", image_tower="tiny_clip/model.safetensors",
        filename_prefix="test/bold",
        forget_images=g.node("UnlearnKitTinyWorldImages", source="style/bold", count=8, seed=0),
        retain_images=g.node("UnlearnKitTinyWorldImages", source="style/slanted", count=4, seed=0),
        retain_captions=retain_captions, forget_captions="a handwritten digit in bold style",
    )
    g.node("UKTestSaveValue", key="outputs", text=slug.out(1))
    g.node("UKTestEncode", clip=slug, text=PROMPT, key="slug_concept")
    return g.prompt()


def unlearn_graph(world: dict, forget_count: int = 8, concept: str = "bold style") -> dict:
    weights, config = world["tiny"]
    g = Graph()
    clip = g.node("UKTestClipFromFile", weights=str(weights), config=str(config), precision="fp32")
    if forget_count:
        images = g.node("UnlearnKitTinyWorldImages", source="style/bold", count=forget_count, seed=0)
    else:
        images = g.node("UKTestLoadImages", folder=str(world["root"] / "no_images"), count=0)
    slug = g.node("UnlearnKitSlugUnlearn", clip=clip, forget_images=images, concept=concept,
                  image_tower=TINY_TOWER, filename_prefix="test/bold")
    g.node("UKTestSaveValue", key="outputs", text=slug.out(1), images=slug.out(2))
    last = None
    for key, model in [("base", clip), ("slug", slug)]:
        for what, text in [("concept", PROMPT), ("other", OTHER)]:
            last = g.node(
                "UKTestEncode",
                clip=model,
                text=text,
                key=f"{key}_{what}",
                **({"after": last} if last else {}),
            )
    from_file = apply(g, clip, "none", patch_path=slug.out(1))
    g.node("UKTestEncode", clip=from_file, text=PROMPT, key="from_file_concept", after=last)
    return g.prompt()


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    graphs = {
        "apply": apply_graph(world),
        "other_model": refusal_graph(world, "other.safetensors"),
        "twice": refusal_graph(world, "p1.safetensors", "p1.safetensors"),
        "none": refusal_graph(world, "none"),
    }
    graphs.update(unlearn=unlearn_graph(world), no_images=unlearn_graph(world, forget_count=0),
                  no_concept=unlearn_graph(world, concept="  "),
                  hf_tower=hf_tower_graph(world, "\n".join(f"a handwritten digit in slanted style, take {i}"
                                                           for i in range(4))),
                  retain_mismatch=hf_tower_graph(world, "only one caption"))
    return graphs


world, comfy_run = suite_fixtures(__name__)


def ids_of(out_dir: Path, key: str) -> torch.Tensor:
    return torch.tensor(json.loads((out_dir / f"{key}.json").read_text())["ids"]["l"])


@torch.no_grad()
def reference(model, ids: torch.Tensor) -> np.ndarray:
    return model(input_ids=ids).last_hidden_state.numpy()


def patched(world: dict, *names: str, strength: float = 1.0):
    model = copy.deepcopy(world["s"])
    for name in names:
        patch = world["patches"][name]
        apply_patch(
            model,
            patch if strength == 1.0 else type(patch)(**{**patch.__dict__, "delta": patch.delta * strength}),
        )
    return model


def test_applied_patches_condition_like_the_core_patched_model(comfy_run, world):
    r = comfy_run["apply"].assert_ok()
    ids = ids_of(r.out_dir, "base")
    cases = {"base": patched(world), "p1": patched(world, "p1"), "p123": patched(world, "p1", "p2", "p3"),
             "chain12": patched(world, "p1", "p2"), "half": patched(world, "p1", strength=0.5),
             "base_after": patched(world)}
    for key, model in cases.items():
        np.testing.assert_allclose(r.latent(key), reference(model, ids), atol=1e-4, rtol=1e-4, err_msg=key)
    assert np.abs(r.latent("p1") - r.latent("base")).max() > 1e-2
    assert np.abs(r.latent("p123") - r.latent("chain12")).max() > 1e-3  # p3 adds to p1's layer
    assert json.loads((r.out_dir / "base_after.json").read_text())["patches"] == 0  # input CLIP untouched


@pytest.mark.parametrize(("graph", "fragments"), [
    ("other_model", ["other.safetensors", "made for another model", "holds other weights"]),
    ("twice", ["p1.safetensors", "already applied"]),
    ("none", ["choose at least one patch"]),
])
def test_apply_refusals(comfy_run, graph, fragments):
    assert "Error" in comfy_run[graph].assert_failed(*fragments)


def unlearn_result(comfy_run, world, name: str = "unlearn"):
    return comfy_run[name].assert_ok()


def relative_change(r, what: str) -> float:
    base, slug = r.latent(f"base_{what}"), r.latent(f"slug_{what}")
    return float(np.linalg.norm(slug - base) / np.linalg.norm(base))


def test_slug_unlearn_writes_patch_and_plot(comfy_run, world):
    r = unlearn_result(comfy_run, world)
    path = Path(json.loads((r.out_dir / "outputs.json").read_text())["text"])
    assert path.name == "bold_00001.safetensors" and path.parent.name == "test"
    assert path.parent.parent.name == "slug_patches"
    patch = load_patch(path)
    assert patch.concept == "bold style" and patch.layer.startswith("text_model.encoder.layers.")
    assert patch.metrics["forget_after"] <= patch.metrics["forget_before"]
    plot = r.latent("outputs")
    assert plot.shape == (1, 480, 640, 3) and 0.0 <= plot.min() and plot.max() <= 1.0
    red = (plot[0, ..., 0] > 0.7) & (plot[0, ..., 1] < 0.3) & (plot[0, ..., 2] < 0.3)
    assert red.sum() > 20  # the chosen layer's marker


def test_slug_unlearn_changes_the_concept_more_than_other_prompts(comfy_run, world):
    r = unlearn_result(comfy_run, world)
    concept, other = relative_change(r, "concept"), relative_change(r, "other")
    assert concept > 1e-3 and concept > 1.5 * other, (concept, other)
    np.testing.assert_allclose(r.latent("from_file_concept"), r.latent("slug_concept"), atol=1e-5)


def test_slug_unlearn_never_overwrites_a_patch(comfy_run, world):
    first = unlearn_result(comfy_run, world)
    again = unlearn_result(comfy_run, world, "hf_tower")  # runs later with the same filename_prefix
    paths = [Path(json.loads((x.out_dir / "outputs.json").read_text())["text"]) for x in (first, again)]
    assert [p.name for p in paths] == ["bold_00001.safetensors", "bold_00002.safetensors"]
    assert load_patch(paths[0]).id != load_patch(paths[1]).id and paths[0].parent == paths[1].parent


def test_slug_unlearn_with_an_hf_clip_folder_as_image_tower(comfy_run, world):
    r = unlearn_result(comfy_run, world, "hf_tower")
    patch = load_patch(json.loads((r.out_dir / "outputs.json").read_text())["text"])
    assert patch.concept == "bold style" and patch.layer.startswith("text_model.encoder.layers.")


@pytest.mark.parametrize(
    ("graph", "fragment"),
    [
        ("no_images", "forget_images: no images"),
        ("no_concept", "concept:"),
        ("retain_mismatch", "retain_captions: give one caption per retain image"),
    ],
)
def test_slug_unlearn_bad_inputs(comfy_run, world, graph, fragment):
    comfy_run[graph].assert_failed(fragment, "ValueError")
