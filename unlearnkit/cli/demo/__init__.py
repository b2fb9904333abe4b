"""`python -m unlearnkit demo`: the main job — walk the mission on the tiny world and write an illustrated
report (index.html + PNG panels + summary.json) from committed weights only.

Sections (one module each, each a function taking what it needs): ``compose_section`` (slider, gated mixture
and attribution, forgetting with its record, rights), ``erase_section`` (original vs ESD vs AdvUnlearn
encoders, and under attack), ``unlearn_section`` (a SLUG patch before/after, its layer and size) and
``side_by_side`` (attack success on "bold": ESD, AdvUnlearn, exact forgetting). ``artifacts`` makes and loads
the committed erased encoders, SLUG patch and gate (``--remake``); ``report`` runs the sections and writes the
page.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .world import DemoSettings


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    if args.remake is not None:
        from .artifacts import remake

        made = remake(args.remake or None)
        print(json.dumps({name: {k: v for k, v in entry.items() if k != "config"}
                          for name, entry in made.items()}))
        return 0
    from .report import run_demo

    settings = DemoSettings(steps=args.steps, guidance=args.guidance, seed=args.seed, scale=args.scale,
                            attack_prompts=args.attack_prompts, attack_steps=args.attack_steps,
                            progress=not args.no_progress)
    summary = run_demo(Path(args.out), settings)
    print("\n".join(f"{k}: {v}" for k, v in summary["glance"].items()))
    print(f"report: {Path(args.out) / 'index.html'} ({summary['seconds']:.0f} s)")
    return 0


def add_parser(sub) -> None:
    from .. import guarded

    p = sub.add_parser("demo", help="the main job: an illustrated report of compose, erase and unlearn "
                                    "on the tiny world")
    p.add_argument("--out", default="unlearnkit-out/demo",
                   help="report folder (index.html, PNG panels, summary.json)")
    p.add_argument("--steps", type=int, default=DemoSettings.steps, help="DDIM steps of the pictures")
    p.add_argument("--guidance", type=float, default=DemoSettings.guidance)
    p.add_argument("--seed", type=int, default=DemoSettings.seed)
    p.add_argument("--scale", type=int, default=DemoSettings.scale,
                   help="pixel enlargement of the 16 px images")
    p.add_argument("--attack-prompts", type=int, default=DemoSettings.attack_prompts,
                   help="attack instances per model (prompts naming bold, one seed each; at most 10)")
    p.add_argument("--attack-steps", type=int, default=DemoSettings.attack_steps,
                   help="optimisation steps of each attack")
    p.add_argument("--remake", nargs="*", metavar="ARTIFACT", default=None,
                   help="re-make the committed artifacts (gate, erase_esd, erase_advunlearn, slug; all when "
                        "none is named) into unlearnkit/tinyworld/weights/demo, then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=guarded(run))
