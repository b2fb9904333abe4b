"""`python -m unlearnkit tinyworld {train,eval,export}`."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def set_threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise ValueError(f"--threads: expected >= 1, got {threads}")
    torch.set_num_threads(threads)


def run_train(args: argparse.Namespace) -> int:
    from ..tinyworld import store
    from ..tinyworld.stages import QUICK, STAGES, Steps, train_all

    set_threads(args.threads)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    out = Path(args.weights_dir) if args.weights_dir else store.WEIGHTS_DIR
    took = train_all(stages, QUICK if args.quick else Steps(), args.seed, out, force=args.force)
    print(f"trained {','.join(stages)} into {out} in {took / 60:.1f} min")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..tinyworld import store
    from ..tinyworld.evaluate import evaluate

    set_threads(args.threads)
    shard_sets = tuple(s for s in args.shard_sets.split(",") if s and s != "none")
    bad = [s for s in shard_sets if s not in store.SHARD_SETS]
    if bad:
        raise ValueError(
            f"--shard-sets: unknown {bad}; expected a comma list of {store.SHARD_SETS} or 'none'"
        )
    res = evaluate(
        k=args.samples, steps=args.steps, guidance=args.guidance, seed=args.seed, shard_sets=shard_sets,
        weights_dir=Path(args.weights_dir) if args.weights_dir else store.WEIGHTS_DIR,
    )
    if not args.json:
        for key, value in res.items():
            print(f"{key}: {value}")
    print(json.dumps(res))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..tinyworld.export import save_ldm_checkpoint
    from ..tinyworld.webui_export import export_for_webui

    if args.webui:
        for path in export_for_webui(Path(args.out), unet=args.unet, text_encoder_dir=args.text_encoder_dir):
            print(path)
    else:
        print(save_ldm_checkpoint(Path(args.out), unet=args.unet))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("tinyworld", help="the embedded tiny SD world: train, eval, export")
    tsub = p.add_subparsers(dest="tinyworld_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights-dir", default=None, help="weights folder (default: the committed one)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on small CPUs)")

    t = tsub.add_parser("train", parents=[common], help="re-create every weight from a seed")
    t.add_argument("--quick", action="store_true", help="a few steps per stage (tests)")
    t.add_argument("--stages", default=None, help="comma list of vae,clip,judges,base,style,split,paragon")
    t.add_argument("--force", action="store_true", help="retrain stages whose files exist")
    t.set_defaults(func=run_train)

    e = tsub.add_parser(
        "eval", parents=[common], help="print the world's figures; last line is one JSON object"
    )
    e.add_argument("--json", action="store_true", help="print only the JSON line")
    e.add_argument(
        "--samples", type=int, default=10, help="generated samples per digit (half as many per digit x style)"
    )
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--guidance", type=float, default=6.0)
    e.add_argument(
        "--shard-sets", default="style,split", help="shard sets to score as uniform mixtures, or 'none'"
    )
    e.set_defaults(func=run_eval)

    x = tsub.add_parser("export", help="write an SD1.x-layout single-file checkpoint (LDM key names)")
    x.add_argument("--unet", default="paragon", help="base, paragon, style/<style>, split/split<k>")
    x.add_argument("--out", default="unlearnkit-out/tinyworld-sd1.safetensors")
    x.add_argument("--webui", action="store_true",
                   help="also write OUT's .yaml and a local text-encoder folder: what AUTOMATIC1111 / Forge "
                        "need to load it offline (put OUT in models/Stable-diffusion; ask 64x64 images)")
    x.add_argument("--text-encoder-dir", default=None,
                   help="with --webui: the text-encoder folder (default: tinyworld_text_encoder/ beside OUT)")
    x.set_defaults(func=run_export)
