"""The template browser: ComfyUI 0.3.75 lists ``example_workflows/*.json`` of a pack (server
app/custom_node_manager.py) and the 1.32.9 frontend shows each as a card whose title is the file name as is,
whose description is the name with "-" and "_" as spaces, and whose thumbnail is ``NAME.jpg`` beside it
(a placeholder when missing)."""
from __future__ import annotations

import pytest
from PIL import Image
from workflow_layout import REPO

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
MAX_TITLE = 36  # the card's one-line title shows about this many characters


def readable(title: str) -> bool:
    """Words separated by spaces, a capital first letter, short enough for the card's single line."""
    return "_" not in title and " " in title and title[:1].isupper() and len(title) <= MAX_TITLE


def test_the_title_rule():
    assert readable("Compose style shards with sliders")
    assert not readable("tinyworld_compose_slider_mix") and not readable("x" * 40)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_example_workflow_has_a_readable_title(path):
    assert readable(path.stem), f"the template browser shows the file name {path.stem!r} as the card's title"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_example_workflow_has_a_thumbnail(path):
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.name} missing: the card shows a placeholder"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and min(image.size) >= 256
        assert 0.75 <= image.width / image.height <= 1.34  # the card crops to a square
