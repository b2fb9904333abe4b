"""The example workflows as the real frontend (1.32.9) draws them: saved sizes equal drawn sizes, no node
(with its title bar and badge) overlaps another, the saved view shows the graph beside the frontend's own UI,
and "Fit view" on a 1600×900 window keeps the zoom where the frontend still draws text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from workflow_layout import (
    BADGE,
    REPO,
    TITLE,
    core_types,
    fit_view_scale,
    has_badge,
    layout_problems,
    measured,
    min_size,
    overlapping,
    rect,
    saved_view_corner,
    specs,
)

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
VIEWPORT = (1600, 900)  # a laptop-sized browser window
SIDEBAR, TOP_BARS = 70, 100  # px of the window the frontend's sidebar and its tab / workflow-name bars cover


@pytest.fixture(scope="module")
def known() -> dict:
    return specs()


@pytest.fixture(scope="module")
def core() -> dict:
    return core_types()


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_size_rule_reproduces_every_size_measured_in_the_real_frontend():
    data = measured()
    assert data["frontend"] == "1.32.9" and data["constants"]["title"] == TITLE
    wrong = {t: (min_size(v, t), v["min"]) for t, v in data["types"].items()
             if min_size(v, t)[1] != v["min"][1] or min_size(v, t)[0] > v["min"][0]}
    assert wrong == {} and len(data["types"]) >= 15


def test_the_overlap_rule_counts_title_bars_and_badges():
    upper = {"pos": [0, 0], "size": [300, 100]}
    lower = {"pos": [0, 100 + TITLE + BADGE - 1], "size": [300, 100]}
    assert overlapping({1: rect(upper, (300, 100)), 2: rect(lower, (300, 100), badge=True)}) == [(1, 2)]
    lower["pos"][1] += 2
    assert overlapping({1: rect(upper, (300, 100)), 2: rect(lower, (300, 100), badge=True)}) == []
    assert has_badge("UnlearnKitShard", {"KSampler": {}}) and not has_badge("KSampler", {"KSampler": {}})


def test_there_are_example_workflows():
    assert len(WORKFLOWS) >= 3


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_saved_sizes_are_drawn_sizes_and_nodes_do_not_overlap(path, known, core):
    assert layout_problems(load(path), known, core) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_fit_view_keeps_text_readable(path, known, core):
    threshold = measured()["constants"]["lowQuality"]  # below this zoom the frontend stops drawing text
    assert fit_view_scale(load(path), known, core, VIEWPORT) >= threshold


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_saved_view_shows_the_graph_beside_the_frontends_bars(path, known, core):
    scale, x, y = saved_view_corner(load(path), known, core)
    assert scale >= measured()["constants"]["lowQuality"]
    corner = f"graph's top-left corner at ({x:.0f}, {y:.0f}) px"
    assert SIDEBAR <= x <= VIEWPORT[0] / 3 and TOP_BARS <= y <= VIEWPORT[1] / 3, corner
