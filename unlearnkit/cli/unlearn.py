"""``python -m unlearnkit unlearn …``: SLUG one-layer patches — run, apply to a weight file, show a patch.

  unlearn run --forget digit:7 --out patches/seven            # tiny world, text tower (the SD text encoder)
  unlearn run --forget style:bold --tower both --out bold      # both towers (CLIP zero-shot)
  unlearn run --forget-images imgs/ --concept "Van Gogh" --retain-images other/ --out vg
  unlearn apply model.safetensors patched.safetensors seven.safetensors bold.safetensors
  unlearn info seven.safetensors

``run`` exits with 1 when the step search met no target (the best-compromise patch is still written).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import guarded as _guarded

logger = logging.getLogger(__name__)

TOWERS = ("text", "both", "image")


def _threads(count: int | None) -> None:
    if count is None:
        return
    if count < 1:
        raise ValueError(f"--threads: expected >= 1, got {count}")
    import torch

    torch.set_num_threads(count)


def _run(args: argparse.Namespace) -> int:
    from .unlearn_job import JobOptions, run_job

    _threads(args.threads)
    options = JobOptions(
        out=args.out, forget=args.forget, forget_images=args.forget_images, concept=args.concept,
        retain_images=args.retain_images, clip_dir=args.clip_dir, tower=args.tower, layer=args.layer,
        exclude_last_blocks=args.exclude_last_blocks, max_layers=args.max_layers,
        retain_drop=args.retain_drop, max_evals=args.max_evals, n_forget=args.n_forget,
        n_retain=args.n_retain, dtype=args.dtype, seed=args.seed, overwrite=args.overwrite,
        progress=not args.no_progress, search=args.search, unet=args.unet,
    )
    summary = run_job(options)
    m = summary["metrics"]
    print(
        f"SLUG {summary['concept']!r}: layer {summary['layer']}, step {summary['step']:.4g}; "
        f"forget {m['forget_before']:.3f} -> {m['forget_after']:.3f}, retain {m['retain_before']:.3f} -> "
        f"{m['retain_after']:.3f} ({'ok' if summary['search_success'] else summary['search_reason']})",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0 if summary["search_success"] else 1


def _source_path(src: str) -> str:
    if src == "tinyworld":
        from ..tinyworld import store

        return str(store.WEIGHTS_DIR / "clip.safetensors")
    return src


def _apply(args: argparse.Namespace) -> int:
    from ..unlearn.patch_files import apply_patches_to_file

    path, records = apply_patches_to_file(
        _source_path(args.src), args.out, args.patches, overwrite=args.overwrite
    )
    print(json.dumps({"out": str(path), "patches": records}))
    return 0


def patch_info(path: str) -> dict:
    """A patch file's metadata and size, after the full validity check of load_patch."""
    from pathlib import Path

    from .. import io
    from ..unlearn.patches import load_patch

    patch = load_patch(path)
    _, meta = io.load_state_dict(path)
    return {
        "path": path, "id": patch.id, "concept": patch.concept, "layer": patch.layer,
        "target": patch.target or "text",
        "shape": list(patch.delta.shape), "dtype": str(patch.delta.dtype).removeprefix("torch."),
        "step": patch.step, "bytes": Path(path).stat().st_size, "metrics": patch.metrics,
        "made_on_top_of": list(patch.made_on_top_of), "layer_sha256": patch.layer_sha256,
        "stack_signature": patch.stack_signature, "format_version": patch.format_version,
        "created_by": meta.get("created_by"),
    }


def _info(args: argparse.Namespace) -> int:
    for path in args.patches:
        info = patch_info(path)
        if not args.json:
            print(f"{path}: {info['concept']!r} on {info['layer']} {tuple(info['shape'])} {info['dtype']}, "
                  f"step {info['step']:.4g}, {info['bytes']} bytes, id {info['id']}", file=sys.stderr)
        print(json.dumps(info))
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="one SLUG pass -> patch .safetensors + layer plot .png + summary .json")
    what = run.add_argument_group("what to forget")
    what.add_argument(
        "--forget", default=None, help="a tiny-world concept: digit:7, 7, seven, style:bold, bold"
    )
    what.add_argument("--forget-images", default=None, help="folder of images showing the concept")
    what.add_argument("--concept", default=None, help="the concept's name (needed with --forget-images)")
    what.add_argument("--retain-images", default=None,
                      help="folder of other images; captions from same-named .txt files or file names "
                           "(default on the tiny world: its own images)")
    target = run.add_argument_group("target")
    target.add_argument(
        "--clip-dir", default=None, help="transformers CLIPModel folder (default: the tiny world's CLIP)"
    )
    target.add_argument(
        "--tower",
        choices=TOWERS,
        default="text",
        help="towers SLUG may edit: text = the SD text encoder (default); both for CLIP zero-shot",
    )
    target.add_argument("--layer", default=None, help="edit this layer (default: search the candidates)")
    target.add_argument(
        "--max-layers",
        type=int,
        default=4,
        help="candidate layers searched, deepest Pareto-front layer first, until one meets both targets",
    )
    target.add_argument("--exclude-last-blocks", type=int, default=0,
                        help="leave the last N blocks out (CLIP skip: 1 for SD2 / 'clip skip 2')")
    search = run.add_argument_group("search")
    search.add_argument(
        "--search",
        choices=("zero-shot", "generation"),
        default="zero-shot",
        help="what the step search measures: CLIP zero-shot accuracy, or (tiny world, text tower) "
        "images the SD pipeline generates with the edited text encoder",
    )
    search.add_argument("--unet", default="paragon", help="tiny-world UNet for --search generation")
    search.add_argument(
        "--retain-drop", type=float, default=0.05, help="largest retain-accuracy drop allowed"
    )
    search.add_argument(
        "--max-evals", type=int, default=10, help="evaluations in the step search (baseline included)"
    )
    search.add_argument("--n-forget", type=int, default=64, help="forget images used at most")
    search.add_argument("--n-retain", type=int, default=128, help="retain images used at most")
    search.add_argument("--seed", type=int, default=0)
    out = run.add_argument_group("output")
    out.add_argument(
        "--out", required=True, help="output name: writes NAME.safetensors, NAME.layers.png, NAME.json"
    )
    out.add_argument("--dtype", choices=("layer", "fp16", "fp32", "bf16"), default="layer",
                     help="dtype of the stored delta (default: the layer's own)")
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    out.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_guarded(_run))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``unlearn`` with its ``run``, ``apply`` and ``info`` subcommands."""
    unlearn = subparsers.add_parser("unlearn", help="SLUG: forget a concept with a one-layer patch")
    sub = unlearn.add_subparsers(dest="unlearn_command", required=True)
    _add_run(sub)

    apply = sub.add_parser(
        "apply", help="add patches to a CLIP / text encoder / checkpoint file -> a new safetensors"
    )
    apply.add_argument(
        "src", help="weight file (safetensors, .pt/.bin state dict), or 'tinyworld' for its CLIP"
    )
    apply.add_argument("out", help="output .safetensors (never overwritten without --overwrite)")
    apply.add_argument("patches", nargs="+", help="patch files made on SRC's weights")
    apply.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    apply.set_defaults(func=_guarded(_apply))

    info = sub.add_parser("info", help="print patch metadata (one JSON line per patch)")
    info.add_argument("patches", nargs="+", help="patch files")
    info.add_argument("--json", action="store_true", help="only the JSON lines")
    info.set_defaults(func=_guarded(_info))
    return unlearn
