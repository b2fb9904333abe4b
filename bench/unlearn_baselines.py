"""The bench's baselines (bench/unlearn.py): gradient ascent and GA + fine-tuning on the text tower, one run
per learning rate until SLUG's forget level; the tuned run re-timed like SLUG (median of --repeats runs)."""
from __future__ import annotations

import argparse
import logging
import statistics
import time

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.tasks.slug_pairs import concept_metrics, concept_pairs, tiny_adapter
from unlearnkit.unlearn import GaFtConfig, GradientAscentConfig, ga_ft, gradient_ascent

log = logging.getLogger("bench.unlearn")


def r4(x: float) -> float:
    return round(float(x), 4)


def held_out_zero_shot(clip, held, concept) -> dict[str, float]:
    """(forget acc, retain acc) of CLIP zero-shot on held-out images."""
    forget, retain = concept_metrics(tiny_adapter(clip, "both"), held, concept)()
    return {"forget": r4(forget), "retain": r4(retain)}


def baseline_runs(kind: str, concept, public, held, level: float, args) -> list[dict]:
    """One run per learning rate: time to the forget level, search-set and held-out accuracies."""
    runs = []
    for lr in args.lrs:
        clip = store.load_clip()
        enc = tiny_adapter(clip, "text")
        forget, retain = concept_pairs(public, concept, args.n_forget, args.n_retain, args.seed)
        metrics = concept_metrics(enc, public, concept, limit=args.search_images, seed=args.seed)
        common = dict(
            lr=lr,
            max_steps=args.max_ga_steps,
            eval_every=args.eval_every,
            forget_target=level,
            progress=False,
        )
        start = time.perf_counter()
        if kind == "ga":
            res = gradient_ascent(enc, forget, metrics, GradientAscentConfig(**common))
        else:
            res = ga_ft(enc, forget, retain, metrics, GaFtConfig(**common, retain_weight=1.0))
        seconds = time.perf_counter() - start
        held_acc = held_out_zero_shot(clip, held, concept)
        runs.append({"lr": lr, "reached": res.reached, "steps": res.steps, "seconds": round(seconds, 2),
                     "search_forget": r4(res.forget_metric), "search_retain": r4(res.retain_metric),
                     "forget_acc_after": held_acc["forget"], "retain_acc_after": held_acc["retain"],
                     "params_updated": res.params_updated})
        log.info("%s lr %g: %s", kind, lr, runs[-1])
    return runs


def retimed(kind: str, best: dict | None, concept, public, held, level: float, args) -> dict | None:
    """The tuned run again ``args.repeats`` times in all, its time the median (SLUG's time is one too)."""
    if best is None or args.repeats < 2:
        return best
    again = argparse.Namespace(**{**vars(args), "lrs": [best["lr"]] * (args.repeats - 1)})
    runs = baseline_runs(kind, concept, public, held, level, again)
    times = [best["seconds"], *(r["seconds"] for r in runs)]
    return {**best, "seconds": round(statistics.median(times), 2), "seconds_runs": times}


def tuned(runs: list[dict]) -> dict | None:
    """The run that reached the forget level keeping the most search-set retain accuracy (then the
    fastest)."""
    reached = [r for r in runs if r["reached"]]
    return max(reached, key=lambda r: (r["search_retain"], -r["seconds"])) if reached else None
