"""What erasure must not break, on the tiny world: judge accuracy and judge-FID on everything else.

The retain set is every (digit, style) caption except those of the erased concept; accuracy is the
judge's on the concept's own axis (the digit judge for a digit, the style judge for a style) and
judge-FID compares the generated retain images with held-out real ones of the same classes.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...erase.measure import Scorer
from ...erase.prompts import tokenize
from ..data import caption, load_world
from ..judges import accuracy, judge_fid
from ..styles import STYLES
from .concept import Concept

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetainSet:
    prompts: tuple[str, ...]
    digits: torch.Tensor  # (P,)
    styles: torch.Tensor  # (P,)


def retain_set(concept: Concept) -> RetainSet:
    """Template-0 captions of every digit × style that does not show the concept."""
    rows = [(d, s) for d in range(10) for s in range(len(STYLES))
            if not (concept.kind == "digit" and d == concept.index)
            and not (concept.kind == "style" and s == concept.index)]
    return RetainSet(tuple(caption(d, STYLES[s], 0) for d, s in rows),
                     torch.tensor([d for d, _ in rows]), torch.tensor([s for _, s in rows]))


def real_reference(concept: Concept) -> torch.Tensor:
    """Held-out real images of every class in the retain set: (N, 3, 16, 16) in [-1, 1]."""
    held = load_world().held_out_set()
    return held.images[~concept.mask(held)]


@torch.no_grad()
def retain_scores(encoder, scorer: Scorer, concept: Concept, seeds: Sequence[int], judges: dict,
                  real: torch.Tensor) -> dict[str, float]:
    """acc (the concept axis' judge), digit_acc, style_acc, judge_fid on the retain set, len(seeds) images per
    prompt."""
    rs = retain_set(concept)
    ids = tokenize(scorer.tokenizer, list(rs.prompts)).repeat_interleave(len(seeds), dim=0)
    all_seeds = [int(s) for _ in rs.prompts for s in seeds]
    images = torch.cat([scorer.images(encoder, ids[i : i + 256], all_seeds[i : i + 256])
                        for i in range(0, len(ids), 256)])
    digits, styles = rs.digits.repeat_interleave(len(seeds)), rs.styles.repeat_interleave(len(seeds))
    out = {
        "digit_acc": accuracy(judges["digit"], images, digits),
        "style_acc": accuracy(judges["style"], images, styles),
        "judge_fid": judge_fid(judges["digit"], images, real),
    }
    out["acc"] = out["digit_acc"] if concept.kind == "digit" else out["style_acc"]
    return out
