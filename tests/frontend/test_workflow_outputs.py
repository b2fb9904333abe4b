"""What the example workflows show a user: every text output of the pack's nodes reaches a display node, no
image output is left dangling, and the tiny world's 16 px images are also shown scaled up (nearest-neighbour)
to be readable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_layout import REPO

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
TEXT_DISPLAYS = {"PreviewAny", "UnlearnKitShowText"}
READABLE_SCALE = 4  # 16 px x 4 = 64 px on the node


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def consumers(workflow: dict, node_id: int, slot: int) -> list[dict]:
    by_id = {n["id"]: n for n in workflow["nodes"]}
    return [by_id[link[3]] for link in workflow["links"] if link[1] == node_id and link[2] == slot]


def undisplayed(workflow: dict) -> list[str]:
    """STRING outputs of the pack's nodes that reach no text display, IMAGE outputs that reach nothing."""
    out = []
    for node in workflow["nodes"]:
        if not node["type"].startswith("UnlearnKit") or node["type"] in TEXT_DISPLAYS:
            continue
        for slot, output in enumerate(node.get("outputs", [])):
            used = consumers(workflow, node["id"], slot)
            if (output["type"] == "STRING" and not any(c["type"] in TEXT_DISPLAYS for c in used)) or (
                    output["type"] == "IMAGE" and not used):
                out.append(f"{node['type']} #{node['id']} {output['name']}")
    return out


def scaled_previews(workflow: dict) -> list[dict]:
    """ImageScaleBy nodes with nearest-neighbour scaling by >= READABLE_SCALE that feed a preview or save."""
    return [n for n in workflow["nodes"] if n["type"] == "ImageScaleBy"
            and n["widgets_values"][0] == "nearest-exact" and float(n["widgets_values"][1]) >= READABLE_SCALE
            and any(c["type"] in ("PreviewImage", "SaveImage") for c in consumers(workflow, n["id"], 0))]


def test_the_output_rules_see_a_missing_display():
    workflow = {"nodes": [{"id": 1, "type": "UnlearnKitSlugUnlearn",
                           "outputs": [{"name": "patch_path", "type": "STRING"}]},
                          {"id": 2, "type": "PreviewAny"}], "links": []}
    assert undisplayed(workflow) == ["UnlearnKitSlugUnlearn #1 patch_path"]
    workflow["links"] = [[1, 1, 0, 2, 0, "STRING"]]
    assert undisplayed(workflow) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_text_output_reaches_a_display_and_no_image_dangles(path):
    assert undisplayed(load(path)) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_generated_images_are_also_shown_scaled_up(path):
    workflow = load(path)
    decodes = [n for n in workflow["nodes"] if n["type"] == "VAEDecode"]
    assert len(scaled_previews(workflow)) >= min(len(decodes), 1)
