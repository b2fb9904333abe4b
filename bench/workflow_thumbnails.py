"""Thumbnails for the template browser: ``example_workflows/NAME.jpg`` beside every ``NAME.json``.

ComfyUI 0.3.75 serves a pack's example workflows and the frontend (1.32.9) shows ``NAME.jpg`` as the card's
picture (a placeholder when it is missing). Each card here is a panel of the demo report that shows what the
workflow makes (``python -m unlearnkit demo`` first), square:

    python bench/workflow_thumbnails.py --report unlearnkit-out/demo [--overwrite]

A workflow is matched to a panel by words in its name (first match in PANELS); prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = 512
PANELS = (  # (words in the workflow's name, report panel, horizontal crop anchor: 0 left .. 1 right)
    (("slider",), "compose_slider.png", 0.5),
    (("gate", "attribution"), "compose_gated.png", 1.0),  # row labels are on the left: keep the pictures
    (("forget",), "compose_forget.png", 1.0),
    (("slug",), "unlearn_before_after.png", 0.5),
    (("erase", "advunlearn", "encoder"), "erase_prompts.png", 1.0),
)


def panel_for(name: str) -> tuple[str, float] | None:
    lowered = name.lower()
    hits = ((panel, anchor) for words, panel, anchor in PANELS if any(w in lowered for w in words))
    return next(hits, None)


def card(panel: Image.Image, size: int = SIZE, anchor: float = 0.5) -> Image.Image:
    """The panel scaled to cover a square card, cropped at its centre (pixel art enlarged nearest-neighbour):
    the card shows the pictures large rather than the whole panel small."""
    scale = max(size / panel.width, size / panel.height)
    method = Image.NEAREST if scale >= 1 else Image.LANCZOS
    width, height = max(size, round(panel.width * scale)), max(size, round(panel.height * scale))
    covered = panel.convert("RGB").resize((width, height), method)
    left, top = round((width - size) * anchor), (height - size) // 2
    return covered.crop((left, top, left + size, top + size))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", default="unlearnkit-out/demo", help="folder of `python -m unlearnkit demo`")
    p.add_argument("--workflows", default=str(REPO / "example_workflows"))
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    made, missing = {}, []
    for workflow in sorted(Path(args.workflows).glob("*.json")):
        target = workflow.with_suffix(".jpg")
        found = panel_for(workflow.stem)
        if found is None or not (Path(args.report) / found[0]).is_file():
            missing.append(workflow.name)
            continue
        if target.exists() and not args.overwrite:
            continue
        card(Image.open(Path(args.report) / found[0]), anchor=found[1]).save(target, "JPEG", quality=88)
        made[workflow.name] = found[0]
    print(json.dumps({"made": made, "no_panel": missing}))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
