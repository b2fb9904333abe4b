"""SLUG on the tiny world vs gradient ascent (GA) and GA + FT, in one run: forgetting, utility, time.

Two SLUG runs on the CLIP text tower (= the SD text encoder), differing only in what the step search
measures (gradient pass, layer choice and one-step update are the same algorithm):
  * zero-shot search (CLIP use): CLIP zero-shot accuracy on public images. Reported: CLIP zero-shot on
    held-out real images against the class prompts (forgotten class vs the rest), and timed against GA.
  * generation search (SD use): images the tiny SD pipeline generates with the edited text encoder,
    classified by the *unedited* CLIP (``tinyworld.tasks.slug_generation``). Reported: the tiny world's
    judges on
    images generated with other noise and more steps (rate of the forgotten class among images prompted
    for it; accuracy on the other prompts). The zero-shot patch's generation numbers are reported too.
Baselines train every text-tower parameter with Adam until the search set's forget metric reaches
SLUG's level, for each learning rate of a grid; the "tuned" run is the one that keeps the most retain
accuracy on the search set (how a baseline's learning rate is chosen), and its time is compared with
SLUG's (both times: the median of --repeats runs).
All methods search/stop on public images; held-out images are used only for the reported numbers.
A second SLUG run on both towers (CLIP zero-shot only) is reported under "slug_both_towers".
The ``style_*`` keys: SD SLUG erases a style in generation (bench/unlearn_style.py).

Run: ``OMP_NUM_THREADS=1 nice python bench/unlearn.py --json`` (last stdout line: one JSON object).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from unlearn_baselines import baseline_runs, held_out_zero_shot, r4, retimed, tuned  # noqa: E402
from unlearn_style import add_style_args, style_bench  # noqa: E402

from unlearnkit.tinyworld import store  # noqa: E402
from unlearnkit.tinyworld.data import load_world  # noqa: E402
from unlearnkit.tinyworld.judges import predict  # noqa: E402
from unlearnkit.tinyworld.pipeline import build_pipeline, pipeline_images  # noqa: E402
from unlearnkit.tinyworld.tasks import Concept  # noqa: E402
from unlearnkit.tinyworld.tasks.slug_pairs import concept_metrics, concept_pairs, tiny_adapter  # noqa: E402
from unlearnkit.unlearn import (  # noqa: E402
    SlugConfig,
    StepSearchConfig,
    apply_patch,
    remove_patch,
    run_slug,
    save_patch,
)

log = logging.getLogger("bench.unlearn")


def slug_run(tower: str, concept, public, args, max_layers: int) -> tuple:
    """(clip, adapter, result, seconds) of one timed SLUG run on a fresh copy of the tiny CLIP."""
    clip = store.load_clip()
    enc = tiny_adapter(clip, tower)
    forget, retain = concept_pairs(public, concept, args.n_forget, args.n_retain, args.seed)
    metrics = concept_metrics(enc, public, concept, limit=args.search_images, seed=args.seed)
    config = SlugConfig(max_layers=max_layers, progress=False,
                        search=StepSearchConfig(retain_drop=args.retain_drop, max_evals=args.max_evals))
    start = time.perf_counter()
    result = run_slug(enc, forget, retain, config, metrics=metrics)
    return clip, enc, result, time.perf_counter() - start


def patch_sizes(patch) -> dict[str, int]:
    """Bytes of the saved patch as made (the layer's dtype) and stored as fp16."""
    from dataclasses import replace

    with tempfile.TemporaryDirectory() as tmp:
        made = save_patch(patch, Path(tmp) / "p.safetensors").stat().st_size
        half = replace(patch, delta=patch.delta.half())
        fp16 = save_patch(half, Path(tmp) / "h.safetensors").stat().st_size
    return {"patch_bytes": made, "patch_bytes_fp16": fp16}


def generation_scores(pipe, concept, judges, args) -> dict[str, float]:
    """Judge rate of the forgotten class on its own prompts, and judge accuracy on the other prompts."""
    prompts, labels = concept.generation_prompts(args.samples)
    images = pipeline_images(pipe, prompts, steps=args.steps, guidance=args.guidance, seed=args.seed)
    pred = predict(judges[concept.kind], images)
    own = labels == concept.index
    return {"forget_rate": r4((pred[own] == concept.index).float().mean()),
            "retain_acc": r4((pred[~own] == labels[~own]).float().mean())}


def patched_scores(pipe, patch, concept, judges, args) -> dict[str, float]:
    apply_patch(pipe.text_encoder, patch)
    try:
        return generation_scores(pipe, concept, judges, args)
    finally:
        remove_patch(pipe.text_encoder, patch)


def generation(zero_shot_patch, concept, public, args) -> dict:
    """SLUG with the generation search; judge scores before/after it and after the zero-shot patch."""
    from unlearnkit.tinyworld.models import text_encoder_from_clip
    from unlearnkit.tinyworld.tasks.slug_generation import generation_metrics

    unet = args.unet if store.unet_path(args.unet).is_file() else "base"
    if concept.kind == "style" and unet == "base":
        return {
            "skipped": "style generation needs the paragon UNet (the base UNet knows the plain style only)"
        }
    judges = {"digit": store.load_judge("digit"), "style": store.load_judge("style")}
    clip = store.load_clip()
    enc = tiny_adapter(clip, "text")
    pipe = build_pipeline(store.load_unet(unet), text_encoder_from_clip(clip), store.load_vae())
    metrics = generation_metrics(clip, pipe, concept, per_class=args.search_samples, seed=args.seed + 1)
    forget, retain = concept_pairs(public, concept, args.n_forget, args.n_retain, args.seed)
    config = SlugConfig(max_layers=args.max_layers, progress=False,
                        search=StepSearchConfig(retain_drop=args.gen_retain_drop, max_evals=args.max_evals))
    start = time.perf_counter()
    result = run_slug(enc, forget, retain, config, metrics=metrics)
    seconds = time.perf_counter() - start
    before = generation_scores(pipe, concept, judges, args)
    after = patched_scores(pipe, result.to_patch(enc, concept.name), concept, judges, args)
    zero_shot = patched_scores(pipe, zero_shot_patch, concept, judges, args)
    return {
        "unet": unet,
        "samples_per_class": args.samples,
        "steps": args.steps,
        "guidance": args.guidance,
        "layer": result.layer,
        "step": r4(result.step),
        "search_success": result.search.success,
        "search_evals": int(result.metrics()["search_evals"]),
        "search_samples_per_class": args.search_samples,
        "slug_seconds": round(seconds, 2),
        "forget_rate_before": before["forget_rate"],
        "forget_rate_after": after["forget_rate"],
        "retain_acc_before": before["retain_acc"],
        "retain_acc_after": after["retain_acc"],
        "zero_shot_patch": {
            "forget_rate_after": zero_shot["forget_rate"],
            "retain_acc_after": zero_shot["retain_acc"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--concept", default="digit:7", help="tiny-world digit or style to forget")
    parser.add_argument("--samples", type=int, default=20, help="generated images per class prompt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--unet", default="paragon", help="generator (base for digits if it is missing)")
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--lrs", type=floats, default=[1e-4, 3e-4, 1e-3, 3e-3])
    parser.add_argument("--max-ga-steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--n-forget", type=int, default=64)
    parser.add_argument("--n-retain", type=int, default=128)
    parser.add_argument("--search-images", type=int, default=1000)
    parser.add_argument("--max-layers", type=int, default=4)
    parser.add_argument("--max-layers-both", type=int, default=12, help="layers tried by the both-towers run")
    parser.add_argument("--max-evals", type=int, default=10)
    parser.add_argument("--retain-drop", type=float, default=0.02, help="SLUG search's allowed retain drop")
    parser.add_argument("--gen-retain-drop", type=float, default=0.05, help="the same, generation searches")
    parser.add_argument("--search-samples", type=int, default=8, help="generated images per class per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="SLUG timing: median of this many runs")
    parser.add_argument("--skip-style", action="store_true", help="leave out the style_* keys")
    add_style_args(parser)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING if args.json else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(args.seed)
    out = run(args)
    if not args.json:
        print(json.dumps(out, indent=1))
    print(json.dumps(out))


def baselines(concept: Concept, public, held, level: float, slug_s: float, args: argparse.Namespace) -> dict:
    """Gradient ascent (and GA + fine-tuning) to SLUG's forget level: their runs, best runs, and SLUG's
    speed-up over each."""
    ga, gaft = (baseline_runs(k, concept, public, held, level, args) for k in ("ga", "gaft"))
    ga_best, gaft_best = (retimed(k, tuned(r), concept, public, held, level, args)
                          for k, r in (("ga", ga), ("gaft", gaft)))
    ga_fast = min((r for r in ga if r["reached"]), key=lambda r: r["seconds"], default=None)
    speed = lambda r: round(r["seconds"] / slug_s, 1) if r else None  # noqa: E731
    return {"speedup_vs_ga": speed(ga_best), "speedup_vs_ga_fastest": speed(ga_fast),
            "speedup_vs_gaft": speed(gaft_best), "ga": ga_best, "gaft": gaft_best, "ga_runs": ga,
            "gaft_runs": gaft}


def both_towers(concept: Concept, public, held, args: argparse.Namespace) -> dict:
    """SLUG over the layers of both towers: the layer it edits and held-out zero-shot before / after."""
    clip, _, result, seconds = slug_run("both", concept, public, args, args.max_layers_both)
    before = held_out_zero_shot(clip, held, concept)
    apply_patch(clip, result.to_patch(tiny_adapter(clip, "both"), concept.name))
    after = held_out_zero_shot(clip, held, concept)
    return {"layer": result.layer, "success": result.search.success,
            "forget_acc_before": before["forget"], "forget_acc_after": after["forget"],
            "retain_acc_before": before["retain"], "retain_acc_after": after["retain"],
            "layers_tried": len(result.tried), "slug_seconds": round(seconds, 2)}


def run(args: argparse.Namespace) -> dict:
    wall = time.perf_counter()
    concept = Concept.parse(args.concept)
    world = load_world()
    public, held = world.public_set(), world.held_out_set()
    runs = [slug_run("text", concept, public, args, args.max_layers) for _ in range(args.repeats)]
    clip, enc, result, _ = runs[0]  # the runs are deterministic; their times vary with the machine's load
    slug_s = statistics.median(r[3] for r in runs)
    patch = result.to_patch(enc, concept.name)
    before = held_out_zero_shot(clip, held, concept)
    apply_patch(clip, patch)
    after = held_out_zero_shot(clip, held, concept)
    remove_patch(clip, patch)
    level = result.search.forget_metric
    return {
        "bench": "unlearn",
        "concept": concept.spec,
        "tower": "text",
        "layer": result.layer,
        "step": r4(result.step),
        "layers_updated": 1,
        "layers_tried": len(result.tried),
        "search_success": result.search.success,
        "search_evals": int(result.metrics()["search_evals"]),
        "forget_acc_before": before["forget"],
        "forget_acc_after": after["forget"],
        "retain_acc_before": before["retain"],
        "retain_acc_after": after["retain"],
        "generation": generation(patch, concept, public, args),
        "slug_seconds": round(slug_s, 2),
        "slug_seconds_runs": [round(r[3], 2) for r in runs],
        **baselines(concept, public, held, level, slug_s, args),
        **patch_sizes(patch),
        "forget_level": r4(level),
        "slug_both_towers": both_towers(concept, public, held, args),
        **({} if args.skip_style else style_bench(args)),
        "threads": torch.get_num_threads(),
        "bench_seconds": round(time.perf_counter() - wall, 1),
    }

if __name__ == "__main__":
    main()
