"""example_workflows/Compose*.json run as UI workflows in real ComfyUI (2024-03 and 0.3.75) on the tiny
world.

The workflows are loaded as saved by the frontend; the test only attaches fixture nodes that
copy the decoded images and the attribution report out, then judges them with the tiny world's
digit and style judges.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from comfy_harness import REPO_ROOT
from suite import suite_fixtures

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.styles import STYLES

WORKFLOWS = REPO_ROOT / "example_workflows"
SLIDER = "Compose style shards with sliders.json"
GATED = "Compose with a gate and attribution.json"
SHARD_STYLES = ("bold", "slanted", "inverted", "outlined")


def attach(workflow: dict, source_type: str, slot: int, fixture: str, value_type: str, widgets: list) -> dict:
    """Link output ``slot`` of the (single) ``source_type`` node to a new fixture node, in UI format."""
    source = next(n for n in workflow["nodes"] if n["type"] == source_type)
    node_id = max(n["id"] for n in workflow["nodes"]) + 1
    link_id = max((link[0] for link in workflow["links"]), default=0) + 1
    workflow["nodes"].append(
        {
            "id": node_id,
            "type": fixture,
            "pos": [0, 0],
            "size": [200, 60],
            "flags": {},
            "order": node_id,
            "mode": 0,
            "inputs": [{"name": widgets[0], "type": value_type, "link": link_id}],
            "outputs": [],
            "properties": {},
            "widgets_values": widgets[1:],
        }
    )
    source["outputs"][slot]["links"].append(link_id)
    workflow["links"].append([link_id, source["id"], slot, node_id, 0, value_type])
    return workflow


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def suite_graphs(world: dict) -> dict:
    """This module's graphs for the shared ComfyUI run (suite.py)."""
    slider = attach(load(SLIDER), "VAEDecode", 0, "UKTestSaveImage", "IMAGE", ["images", "images"])
    gated = attach(load(GATED), "VAEDecode", 0, "UKTestSaveImage", "IMAGE", ["images", "images"])
    gated = attach(gated, "UnlearnKitShardAttribution", 1, "UKTestSaveText", "STRING", ["text", "", "report"])
    return {"slider": slider, "gated": gated}


def judge(kind: str, images: np.ndarray) -> list[int]:
    """Class indices of the tiny world's digit or style judge for ComfyUI IMAGEs (B, H, W, 3) in [0, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1
    with torch.no_grad():
        return store.load_judge(kind)(x).argmax(1).tolist()


def test_every_compose_example_is_covered_and_evaluates_fast():
    assert {p.name for p in WORKFLOWS.glob("*.json") if "compose" in p.name.lower()} == {SLIDER, GATED}
    for name in (SLIDER, GATED):
        compose = [n for n in load(name)["nodes"] if n["type"] == "UnlearnKitComposeShards"]
        assert [n["widgets_values"][2] for n in compose] == ["fast"], name  # gate, prune_eps, evaluate, ...


def test_slider_mix_workflow_draws_the_prompted_digit(comfy_run):
    images = comfy_run["slider"].assert_ok().latent("images")
    assert images.shape == (4, 16, 16, 3)
    digits = judge("digit", images)
    assert sum(d == 3 for d in digits) >= 3, f"digit judge: {digits} for 'a handwritten digit 3'"
    styles = [STYLES[s] for s in judge("style", images)]
    assert sum(s in ("bold", "slanted") for s in styles) >= 3, (
        f"style judge: {styles} (sliders: bold 1, slanted .5)"
    )


def test_gated_workflow_attributes_each_sample_to_the_shard_of_its_style(comfy_run):
    """The gate settles on one shard per sample, and that shard's style is what the style judge sees."""
    r = comfy_run["gated"].assert_ok()
    report = json.loads((r.out_dir / "report.txt").read_text())
    assert report["shards"] == list(SHARD_STYLES)
    weights = np.asarray(report["weights"])  # (samples, steps, shards)
    assert weights.shape[:2] == (8, 20)
    assert weights[:, -1].max(-1).min() > 0.9, (
        f"near one-hot weights expected at the last step: {weights[:, -1]}"
    )
    images = r.latent("images")
    styles = [STYLES[s] for s in judge("style", images)]
    matches = sum(t == s for t, s in zip(report["top_shard"], styles))
    assert matches >= 6, f"attribution {report['top_shard']} vs style judge {styles}"
    assert len(set(report["top_shard"])) >= 2, "the gate picked one shard for every sample"
    digits = judge("digit", images)
    assert sum(d == 3 for d in digits) >= 6, f"digit judge: {digits}"
    gated = load(GATED)  # the Show Text nodes show the gate's info and the attribution report
    assert "tinyworld_style_gate" in r.shown_text(gated, "Info")
    assert json.loads(r.shown_text(gated, "Report"))["top_shard"] == report["top_shard"]


world, comfy_run = suite_fixtures(__name__)
