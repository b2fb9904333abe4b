"""SLUG on the tiny world: its CLIP as an adapter and a concept's forget/retain image-text pairs.

Concepts are :class:`~unlearnkit.tinyworld.tasks.concept.Concept` ("digit:7", "bold style"). Forget pairs
are images of the concept with captions naming it (every caption template, so prompts in any
wording are hit); retain pairs are the other classes' images with their captions. Zero-shot
classification uses the tiny world's class prompts (``tinyworld.judges.digit_prompts`` / ``style_prompts``).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ...unlearn.evaluation import Metrics, class_metrics
from ...unlearn.gradients import Batch
from ...unlearn.targets import HFClipAdapter
from ..data import TEMPLATES, Subset, caption
from ..styles import STYLES
from ..tokenizer import tokenize
from .concept import Concept

logger = logging.getLogger(__name__)

def tiny_adapter(clip: nn.Module, tower: str = "text") -> HFClipAdapter:
    """Adapter on the tiny CLIP: its tokenizer (SD1.x padding) and its pixel range [-1, 1] (mean = std =
    0.5)."""
    adapter = HFClipAdapter(clip, tower=tower, tokenizer=tokenize)
    adapter.image_mean, adapter.image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return adapter


def pair_captions(subset: Subset, concept_kind: str, offset: int = 0) -> list[str]:
    """A caption per image, cycling through every template; style-kind captions always name the style."""
    out = []
    for i, (d, s) in enumerate(zip(subset.digits.tolist(), subset.styles.tolist())):
        named = concept_kind == "style" or (i + offset) % 2 == 1
        out.append(caption(d, STYLES[s] if named else None, (i + offset) % len(TEMPLATES)))
    return out


def _pick(n: int, count: int | None, gen: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(n, generator=gen)
    return perm if count is None else perm[: min(count, n)]


def captioned_pairs(
    subset: Subset, count: int, seed: int = 0, kind: str = "digit", offset: int = 0
) -> list[Batch]:
    """One batch of ``count`` random images of ``subset`` with their captions (e.g. retain pairs for any
    concept)."""
    if len(subset) == 0:
        raise ValueError("subset: no images")
    picked = subset.where(_pick(len(subset), count, torch.Generator().manual_seed(seed)))
    return [(picked.images, pair_captions(picked, kind, offset))]


def concept_pairs(subset: Subset, concept: Concept, n_forget: int = 64, n_retain: int = 128,
                  seed: int = 0) -> tuple[list[Batch], list[Batch]]:
    """(forget, retain) batches: n_forget images of the concept, n_retain of the other classes, with
    captions."""
    if n_forget < 1 or n_retain < 2:
        raise ValueError(f"n_forget/n_retain: need >= 1 / >= 2, got {n_forget}/{n_retain}")
    mask = concept.mask(subset)
    if not mask.any() or int((~mask).sum()) < 2:
        raise ValueError(f"concept {concept.spec}: no images of it (or too few others) in the subset")
    return (captioned_pairs(subset.where(mask), n_forget, seed, concept.kind),
            captioned_pairs(subset.where(~mask), n_retain, seed + 1, concept.kind, offset=1))


def concept_metrics(encoders: HFClipAdapter, subset: Subset, concept: Concept, limit: int | None = None,
                    seed: int = 0) -> Metrics:
    """metrics() -> (zero-shot accuracy on the concept's images, on the other images) over ``subset``."""
    if limit is not None:
        subset = subset.where(_pick(len(subset), limit, torch.Generator().manual_seed(seed)))
    return class_metrics(encoders, subset.images, concept.labels(subset), tokenize(concept.class_prompts()),
                         [concept.index])
