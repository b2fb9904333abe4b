"""Side by side: attack success rate on "bold" for ESD, AdvUnlearn and exact forgetting, same attack "
"budget."""
from __future__ import annotations

from pathlib import Path

from .attacks import AttackRun, budget
from .panels import Panel, Section, bar_chart, save
from .world import DemoSettings

EXPLAINED = {
    "ESD": "erased text encoder, trained without an adversary",
    "AdvUnlearn": "erased text encoder, trained against the attack",
    "exact forgetting": "the bold shard dropped from the composition (its weights never loaded)",
}


def side_by_side_section(runs: dict[str, AttackRun], out: Path, settings: DemoSettings) -> Section:
    """One bar per method: the share of attack instances whose image the judge calls bold."""
    chart = bar_chart({n: r.asr for n, r in runs.items()}, 'Attack success rate on "bold" (lower is better)',
                      "ASR")
    rows = [f"{name:17s} ASR {run.asr:.2f}   bold without attack {run.pre_attack_rate:.2f}   "
            f"({EXPLAINED.get(name, '')})" for name, run in runs.items()]
    panel = Panel(
        "Attack success rate, same attack budget", image=save(chart, out, "side_by_side_asr.png"),
        caption=(f"The same attack instances and budget ({budget(settings)}) and the same target (the "
                 "original "
                 f"model's bold image) against three ways of removing \"bold\". "
                 + "; ".join(f"{n}: {r.asr:.2f}" for n, r in runs.items())
                 + ". Erasure hides a concept the UNet still knows, so a strong enough prompt can bring it "
                 "back; "
                 "dropping the shard removes the weights that learned it. Full-budget figures: "
                 "`python bench/erase.py --json`."),
        numbers={"asr": {n: r.asr for n, r in runs.items()},
                 "pre_attack_rate": {n: r.pre_attack_rate for n, r in runs.items()},
                 "instances": len(next(iter(runs.values())).outcomes)},
        text="\n".join(rows))
    return Section("side_by_side", "Side by side — erasing vs forgetting \"bold\"",
                   "Three ways to stop a model drawing a style, attacked the same way.", [panel])
