"""`python -m unlearnkit demo`: generate digits × styles with the embedded tiny world; write a grid and a
summary."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from ..plots import image_grid

log = logging.getLogger(__name__)


def run_demo(out: Path, unet: str = "paragon", per_cell: int = 2, steps: int = 20, guidance: float = 6.0,
             seed: int = 0) -> dict:
    """Grid: rows = digits 0..9, columns = styles × per_cell samples; summary with judge scores."""
    from ..tinyworld import store
    from ..tinyworld.data import caption
    from ..tinyworld.judges import predict
    from ..tinyworld.pipeline import load_pipeline, pipeline_images
    from ..tinyworld.styles import STYLES

    if per_cell < 1:
        raise ValueError(f"per_cell: expected >= 1, got {per_cell}")
    start = time.perf_counter()
    pipe = load_pipeline(unet)
    cells = [(d, s) for d in range(10) for s in range(len(STYLES)) for _ in range(per_cell)]
    prompts = [caption(d, STYLES[s], 0) for d, s in cells]
    images = pipeline_images(pipe, prompts, steps, guidance, seed)  # (N, 3, 16, 16) in [-1, 1]
    digits, styles = torch.tensor([d for d, _ in cells]), torch.tensor([s for _, s in cells])
    digit_ok = predict(store.load_judge("digit"), images) == digits
    style_ok = predict(store.load_judge("style"), images) == styles
    out.mkdir(parents=True, exist_ok=True)
    image_grid(images, rows=10).save(out / "grid.png")
    summary = {
        "unet": unet,
        "rows": "digits 0..9",
        "columns": [s for s in STYLES for _ in range(per_cell)],
        "prompt_template": caption(7, "bold", 0).replace("7", "{digit}").replace("bold", "{style}"),
        "steps": steps,
        "guidance": guidance,
        "seed": seed,
        "images": len(prompts),
        "judge_digit_acc": round(float(digit_ok.float().mean()), 4),
        "judge_style_acc": round(float(style_ok.float().mean()), 4),
        "judge_style_acc_by_style": {
            s: round(float(style_ok[styles == i].float().mean()), 4) for i, s in enumerate(STYLES)
        },
        "seconds": round(time.perf_counter() - start, 1),
        "grid": str(out / "grid.png"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = (
        f"tiny world demo ({unet} UNet, {steps} DDIM steps, CFG {guidance}): {len(prompts)} images\n"
        f"judge: digits correct {summary['judge_digit_acc']:.1%}, styles correct "
        f"{summary['judge_style_acc']:.1%}\n"
        f"grid: {out / 'grid.png'} (rows: digits 0-9; columns: {', '.join(STYLES)})\n"
    )
    (out / "summary.txt").write_text(text)
    print(text, end="")
    return summary


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    run_demo(Path(args.out), args.unet, args.per_cell, args.steps, args.guidance, args.seed)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="generate a digits × styles grid with the embedded tiny world")
    p.add_argument(
        "--out", default="unlearnkit-out/demo", help="output folder (grid.png, summary.json, summary.txt)"
    )
    p.add_argument("--unet", default="paragon", help="base, paragon, style/<style>, split/split<k>")
    p.add_argument("--per-cell", type=int, default=2, help="samples per digit × style cell")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)
