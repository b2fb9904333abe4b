"""The style part of bench/unlearn.py: SD SLUG erases a style ("bold") from the tiny world's paragon pipeline.

SD SLUG (``unlearnkit.unlearn.sd_slug``): K/V forget loss against the same captions naming "plain",
denoising retain loss of the other styles' pairs, candidates = the text encoder's linear weights and the
UNet's cross-attention K/V projections, one layer, one step projected off the retain prompts' inputs, the
step searched on images generated with fixed noise and read by the unedited CLIP. Judged by the tiny
world's style and digit judges (never used by SLUG) on other noise and more steps than the search:
``--style-samples`` prompts per style ("a handwritten digit N in S style", N cycling), DDIM 20, CFG 4.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from unlearnkit.tinyworld import store
from unlearnkit.tinyworld.data import caption, load_world
from unlearnkit.tinyworld.judges import predict
from unlearnkit.tinyworld.models import text_encoder_from_clip
from unlearnkit.tinyworld.pipeline import build_pipeline, pipeline_images
from unlearnkit.tinyworld.styles import STYLES
from unlearnkit.tinyworld.tasks import Concept
from unlearnkit.tinyworld.tasks.slug_generation import sd_generation_metrics
from unlearnkit.tinyworld.tasks.slug_pairs import sd_loss_batches, tiny_sd_model
from unlearnkit.unlearn import StepSearchConfig, apply_patch, remove_patch, save_patch
from unlearnkit.unlearn.sd_model import split_name
from unlearnkit.unlearn.sd_slug import SDSlugConfig, run_sd_slug


def add_style_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--style-concept", default="style:bold", help="the style SD SLUG erases")
    parser.add_argument("--style-anchor", default="plain", help="the style its captions are moved onto")
    parser.add_argument("--style-samples", type=int, default=50, help="judged prompts per style")
    parser.add_argument("--style-search-samples", type=int, default=24, help="search prompts per other style")
    parser.add_argument("--style-search-forget", type=int, default=32, help="search prompts naming the style")
    parser.add_argument("--style-search-unnamed", type=int, default=60, help="search prompts naming none")


def r4(x: float) -> float:
    return round(float(x), 4)


def judged(pipe, judges, concept: Concept, args) -> dict[str, float]:
    """Judge scores on ``style_samples`` prompts per style (template 0, digits cycling)."""
    styles = torch.arange(len(STYLES)).repeat_interleave(args.style_samples)
    digits = torch.arange(len(styles)) % 10
    prompts = [caption(int(d), STYLES[int(s)], 0) for d, s in zip(digits, styles)]
    images = pipeline_images(pipe, prompts, steps=args.steps, guidance=args.guidance, seed=args.seed)
    style, digit = predict(judges["style"], images), predict(judges["digit"], images)
    own = styles == concept.index
    return {"forget_rate": r4((style[own] == concept.index).float().mean()),
            "retain_acc": r4((style[~own] == styles[~own]).float().mean()),
            "digit_acc": r4((digit == digits).float().mean())}


def changed_tensors(before: dict[str, dict], sd) -> int:
    return sum(not torch.equal(before[t][k], v) for t, m in sd.modules.items()
               for k, v in m.state_dict().items())


def style_bench(args: argparse.Namespace) -> dict:
    """The ``style_*`` keys of the bench's JSON line."""
    concept = Concept.parse(args.style_concept)
    clip = store.load_clip()
    pipe = build_pipeline(store.load_unet("paragon"), text_encoder_from_clip(clip), store.load_vae())
    judges = {"digit": store.load_judge("digit"), "style": store.load_judge("style")}
    sd = tiny_sd_model(pipe)
    before = judged(pipe, judges, concept, args)
    states = {t: {k: v.clone() for k, v in m.state_dict().items()} for t, m in sd.modules.items()}
    start = time.perf_counter()
    forget, retain, retain_ids = sd_loss_batches(sd, pipe.vae, load_world().public_set(), concept,
                                                 args.style_anchor, seed=args.seed)
    metrics = sd_generation_metrics(clip, pipe, concept, args.style_search_samples,
                                    args.style_search_forget, args.style_search_unnamed, seed=args.seed + 1)
    config = SDSlugConfig(search=StepSearchConfig(retain_drop=args.gen_retain_drop, max_evals=args.max_evals))
    result = run_sd_slug(sd, forget, retain, metrics, config, retain_ids)
    patch = result.to_patch(sd, concept.name)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        patch_bytes = save_patch(patch, Path(tmp) / "p.safetensors").stat().st_size
    if changed_tensors(states, sd):
        raise AssertionError("SD SLUG left the model changed")
    tower = sd.modules[split_name(result.layer)[0]]
    apply_patch(tower, patch)
    layers_updated = changed_tensors(states, sd)
    after = judged(pipe, judges, concept, args)
    remove_patch(tower, patch)
    return {"style_concept": concept.spec, "style_layer": result.layer, "style_step": r4(result.step),
            "style_search_success": result.search.success,
            "style_search_evals": int(result.metrics()["search_evals"]),
            "style_samples_per_class": args.style_samples,
            "style_forget_rate_before": before["forget_rate"],
            "style_forget_rate_after": after["forget_rate"],
            "style_retain_acc_before": before["retain_acc"], "style_retain_acc_after": after["retain_acc"],
            "style_digit_acc_before": before["digit_acc"], "style_digit_acc_after": after["digit_acc"],
            "style_digit_acc_drop": r4(before["digit_acc"] - after["digit_acc"]),
            "style_layers_updated": layers_updated, "style_patch_bytes": patch_bytes,
            "style_slug_seconds": round(seconds, 2),
            "style_patch_removed_exactly": changed_tensors(states, sd) == 0}
