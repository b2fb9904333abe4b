"""Gradient ascent (GA): the fine-tuning baseline SLUG is compared with (arXiv 2407.11867 §4, Tab. 1).

Every parameter of the editable tower(s) is trained with Adam to *raise* the SLUG forget loss
L_f = 1 - cos(f_img, f_txt) on the forget pairs, until ``metrics()`` says the forget set is
forgotten (forget metric <= target) or the step budget runs out. With ``retain_weight > 0`` the
contrastive loss on retain pairs is minimised at the same time (GA + FT, see :mod:`.ga_ft`).
Unlike SLUG, this trains ``encoders.model`` in place: copy the model first to keep the original.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .adapter import Encoders
from .evaluation import Metrics, prepare_pairs
from .gradients import Batch, contrastive_loss, forget_loss

logger = logging.getLogger(__name__)

FROZEN_WORDS = ("logit_scale",)


@dataclass(frozen=True)
class GradientAscentConfig:
    """Adam learning rate, step budget, how often to measure, and the forget level that stops training."""

    lr: float = 1e-4
    max_steps: int = 300
    eval_every: int = 5
    forget_target: float = 0.0
    forget_tolerance: float = 1e-6
    progress: bool = True

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: must be a positive number, got {self.lr}")
        if self.max_steps < 1 or self.eval_every < 1:
            raise ValueError(f"max_steps/eval_every: must be >= 1, got {self.max_steps}/{self.eval_every}")


@dataclass
class BaselineResult:
    """Steps taken, metrics at the stop, whether the forget level was reached, every (step, forget,
    retain)."""

    steps: int
    forget_metric: float
    retain_metric: float
    reached: bool
    baseline: tuple[float, float]
    history: list[tuple[int, float, float]] = field(default_factory=list)
    params_updated: int = 0


def trainable_parameters(encoders: Encoders) -> list[tuple[str, torch.nn.Parameter]]:
    """Every floating parameter of the tower(s) the adapter may edit (all layers, embeddings, norms; not the
    temperature)."""
    in_tower = getattr(encoders, "in_tower", lambda name: True)
    out = [(n, p) for n, p in encoders.model.named_parameters()
           if p.is_floating_point() and in_tower(n) and not any(w in n for w in FROZEN_WORDS)]
    if not out:
        raise ValueError("encoders: no trainable parameters in the editable tower(s)")
    return out


def _loss(
    encoders: Encoders,
    forget: tuple[torch.Tensor, torch.Tensor],
    retain: tuple[torch.Tensor, torch.Tensor] | None,
    retain_weight: float,
) -> torch.Tensor:
    """-L_f (descending it is ascent on L_f) + retain_weight * contrastive loss on a retain batch."""
    loss = -forget_loss(encoders.encode_image(forget[0]), encoders.encode_text(forget[1]))
    if retain is not None and retain_weight > 0:
        img, txt = encoders.encode_image(retain[0]), encoders.encode_text(retain[1])
        loss = loss + retain_weight * contrastive_loss(img, txt, encoders.logit_scale())
    return loss


def gradient_ascent(encoders: Encoders, forget: Iterable[Batch], metrics: Metrics,
                    config: GradientAscentConfig | None = None, retain: Iterable[Batch] | None = None,
                    retain_weight: float = 0.0) -> BaselineResult:
    """Train the editable tower(s) by gradient ascent on L_f until metrics()[0] <= target (model changed in
    place)."""
    config = config or GradientAscentConfig()
    if retain_weight < 0:
        raise ValueError(f"retain_weight: must be >= 0, got {retain_weight}")
    if retain_weight > 0 and retain is None:
        raise ValueError("retain: GA + FT (retain_weight > 0) needs retain pairs")
    forget_p = prepare_pairs(encoders, forget, "forget")
    retain_p = prepare_pairs(encoders, retain, "retain") if retain_weight > 0 else None
    params = [p for _, p in trainable_parameters(encoders)]
    model = encoders.model
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        return _train(encoders, forget_p, retain_p, retain_weight, params, metrics, config)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _measure(encoders: Encoders, metrics: Metrics) -> tuple[float, float]:
    encoders.model.eval()
    with torch.no_grad():
        f, r = metrics()
    if not (math.isfinite(f) and math.isfinite(r)):
        raise ValueError(f"metrics(): returned non-finite values ({f}, {r}); did training diverge? lower lr")
    return float(f), float(r)


def _train(
    encoders: Encoders, forget_p: list, retain_p: list | None, retain_weight: float,
    params: list[torch.nn.Parameter], metrics: Metrics, config: GradientAscentConfig,
) -> BaselineResult:
    done = config.forget_target + config.forget_tolerance
    baseline = _measure(encoders, metrics)
    result = BaselineResult(0, *baseline, baseline[0] <= done, baseline, [], sum(p.numel() for p in params))
    opt = torch.optim.Adam(params, lr=config.lr)
    forget_cycle = itertools.cycle(forget_p)
    retain_cycle = itertools.cycle(retain_p) if retain_p else None
    bar = tqdm(range(1, config.max_steps + 1), desc="GA" if retain_p is None else "GA+FT",
               disable=not config.progress, leave=False)
    for step in bar:
        if result.reached:
            break
        encoders.model.train()  # as fine-tuning does (the tiny models have no dropout; large ones may)
        loss = _loss(
            encoders, next(forget_cycle), next(retain_cycle) if retain_cycle else None, retain_weight
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % config.eval_every == 0 or step == config.max_steps:
            f, r = _measure(encoders, metrics)
            result.history.append((step, f, r))
            result.steps, result.forget_metric, result.retain_metric, result.reached = step, f, r, f <= done
            bar.set_postfix(forget=f"{f:.3g}", retain=f"{r:.3g}")
    encoders.model.eval()
    logger.info(
        "%s: %d steps, forget %.4g -> %.4g, retain %.4g -> %.4g (%s)", "GA" if retain_p is None else "GA+FT",
        result.steps, baseline[0], result.forget_metric, baseline[1], result.retain_metric,
        "reached the forget level" if result.reached else "did not reach the forget level",
    )
    return result
