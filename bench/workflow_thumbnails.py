"""Thumbnails for the template browser: ``example_workflows/NAME.jpg`` beside every ``NAME.json``.

ComfyUI 0.3.75 serves a pack's example workflows and the frontend (1.32.9) shows ``NAME.jpg`` as the card's
picture (a placeholder when it is missing). Each card here is a panel of the demo report that shows what the
workflow makes (``python -m unlearnkit demo`` first), on the frontend's dark background, square:

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
BACKGROUND = (32, 32, 32)
PANELS = (  # (words in the workflow's name, report panel)
    (("slider",), "compose_slider.png"),
    (("gate", "attribution"), "compose_attribution.png"),
    (("forget",), "compose_forget.png"),
    (("slug",), "unlearn_before_after.png"),
    (("erase", "advunlearn", "encoder"), "erase_prompts.png"),
)


def panel_for(name: str) -> str | None:
    lowered = name.lower()
    return next((panel for words, panel in PANELS if any(w in lowered for w in words)), None)


def card(panel: Image.Image, size: int = SIZE, margin: int = 16) -> Image.Image:
    """The panel fitted into a square on a dark card (pixel art enlarged nearest-neighbour)."""
    box = size - 2 * margin
    scale = min(box / panel.width, box / panel.height)
    method = Image.NEAREST if scale >= 1 else Image.LANCZOS
    width, height = max(1, round(panel.width * scale)), max(1, round(panel.height * scale))
    fitted = panel.convert("RGB").resize((width, height), method)
    out = Image.new("RGB", (size, size), BACKGROUND)
    out.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", default="unlearnkit-out/demo", help="folder of `python -m unlearnkit demo`")
    p.add_argument("--workflows", default=str(REPO / "example_workflows"))
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    made, missing = {}, []
    for workflow in sorted(Path(args.workflows).glob("*.json")):
        target = workflow.with_suffix(".jpg")
        panel = panel_for(workflow.stem)
        if panel is None or not (Path(args.report) / panel).is_file():
            missing.append(workflow.name)
            continue
        if target.exists() and not args.overwrite:
            continue
        card(Image.open(Path(args.report) / panel)).save(target, "JPEG", quality=88)
        made[workflow.name] = panel
    print(json.dumps({"made": made, "no_panel": missing}))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
