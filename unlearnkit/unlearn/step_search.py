"""Binary search on the SLUG step size lambda (arXiv 2407.11867 §3.3, Alg. 1).

Start near ||theta_l|| / ||grad_l L_f|| / 10. With ``evaluate(step) -> (forget_metric, retain_metric)``
(forget: lower = more forgotten, e.g. top-1 recognition of the concept; retain: higher = better):
grow (x2) while the forget set is still recognised and utility holds; shrink (bisect) when it is
forgotten but utility dropped; stop at the first step that forgets and keeps utility.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Evaluate = Callable[[float], tuple[float, float]]


@dataclass(frozen=True)
class StepSearchConfig:
    """Targets of the search. ``max_evals`` counts every call of evaluate, the baseline (step 0) included."""

    forget_target: float = 0.0  # forgotten when forget_metric <= forget_target + forget_tolerance
    forget_tolerance: float = 1e-6
    retain_drop: float = 0.05  # utility holds when retain_metric >= baseline retain - retain_drop
    max_evals: int = 10
    grow: float = 2.0
    initial_divisor: float = 10.0
    min_relative_gap: float = 1e-3  # stop bisecting once (hi - lo) / hi is below this

    def __post_init__(self) -> None:
        if self.max_evals < 2:
            raise ValueError(f"max_evals: need >= 2 (baseline + one step), got {self.max_evals}")
        if self.grow <= 1:
            raise ValueError(f"grow: must be > 1, got {self.grow}")
        if self.retain_drop < 0 or self.forget_tolerance < 0:
            raise ValueError(
                f"retain_drop/forget_tolerance: must be >= 0, got {self.retain_drop}/{self.forget_tolerance}"
            )
        if self.initial_divisor <= 0:
            raise ValueError(f"initial_divisor: must be > 0, got {self.initial_divisor}")


@dataclass
class StepSearchResult:
    """The chosen step, its metrics, whether it met both targets, and every (step, forget, retain) tried."""

    step: float
    forget_metric: float
    retain_metric: float
    success: bool
    reason: str
    baseline: tuple[float, float]
    history: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def evals(self) -> int:
        return len(self.history) + 1  # + the baseline


def initial_step(weight: torch.Tensor, grad: torch.Tensor, divisor: float = 10.0) -> float:
    """lambda_0 = ||theta_l|| / ||grad_l L_f|| / divisor (SLUG's starting ratio)."""
    g = float(grad.float().norm())
    if not math.isfinite(g) or g <= 0:
        raise ValueError(
            f"grad: the forget gradient of this layer is {g}; the layer cannot be edited with SLUG"
        )
    return float(weight.detach().float().norm()) / g / divisor


def _metrics(evaluate: Evaluate, step: float) -> tuple[float, float]:
    f, r = evaluate(step)
    f, r = float(f), float(r)
    if not (math.isfinite(f) and math.isfinite(r)):
        raise ValueError(f"evaluate({step:g}): returned non-finite metrics ({f}, {r})")
    return f, r


def search_step(evaluate: Evaluate, start: float, config: StepSearchConfig | None = None,
                progress: bool = False, baseline: tuple[float, float] | None = None) -> StepSearchResult:
    """Find lambda > 0 that forgets (forget <= target) while utility holds, in <= config.max_evals calls.

    ``baseline``: the metrics at step 0 if already known (e.g. from the search on another layer): not
    re-measured.
    """
    config = config or StepSearchConfig()
    if not (math.isfinite(start) and start > 0):
        raise ValueError(f"start: the first step must be a positive number, got {start}")
    with tqdm(total=config.max_evals, desc="SLUG step search", disable=not progress, leave=False) as bar:

        def counted(step: float) -> tuple[float, float]:
            out = _metrics(evaluate, step)
            bar.update(1)
            bar.set_postfix(step=f"{step:.3g}", forget=f"{out[0]:.3g}", retain=f"{out[1]:.3g}")
            return out

        if baseline is not None:
            baseline = (float(baseline[0]), float(baseline[1]))
            bar.update(1)
        return _search(counted, start, config, baseline or counted(0.0))


def _search(
    evaluate: Evaluate, start: float, config: StepSearchConfig, baseline: tuple[float, float]
) -> StepSearchResult:
    floor = baseline[1] - config.retain_drop
    done = config.forget_target + config.forget_tolerance
    history: list[tuple[float, float, float]] = []
    lo, hi, step = 0.0, math.inf, start
    reason = f"no step met both targets in {config.max_evals} evaluations"
    if baseline[0] <= done:
        logger.warning(
            "forget metric is already %.4g <= target before editing; nothing to forget", baseline[0]
        )
    while len(history) + 1 < config.max_evals:
        f, r = evaluate(step)
        history.append((step, f, r))
        forgotten, holds = f <= done, r >= floor
        logger.info(
            "SLUG step %.4g: forget %.4g, retain %.4g (%s, %s)", step, f, r,
            "forgotten" if forgotten else "recognised", "utility holds" if holds else "utility dropped",
        )
        if forgotten and holds:
            return StepSearchResult(step, f, r, True, "forgotten with utility kept", baseline, history)
        if not forgotten and not holds:
            reason = f"at step {step:g} utility already dropped while the forget set is still recognised"
            break
        if forgotten:  # utility dropped: too far
            hi = step
        else:  # still recognised, utility holds: go further
            lo = step
        step = step * config.grow if math.isinf(hi) else (lo + hi) / 2
        if not math.isinf(hi) and (hi - lo) / hi < config.min_relative_gap:
            reason = f"bracket [{lo:g}, {hi:g}] closed without a step meeting both targets"
            break
    return _fallback(history, floor, baseline, reason)


def _fallback(
    history: list[tuple[float, float, float]], floor: float, baseline: tuple[float, float], reason: str
) -> StepSearchResult:
    """Without success: the step that forgot most among those keeping utility, else the smallest tried."""
    keep = [h for h in history if h[2] >= floor]
    step, f, r = min(keep, key=lambda h: (h[1], -h[0])) if keep else min(history, key=lambda h: h[0])
    logger.warning(
        "SLUG step search: %s; best compromise step %.4g (forget %.4g, retain %.4g)", reason, step, f, r
    )
    return StepSearchResult(step, f, r, False, reason, baseline, history)


def _succeeded(f: float, r: float, config: StepSearchConfig, baseline: tuple[float, float]) -> bool:
    return f <= config.forget_target + config.forget_tolerance and r >= baseline[1] - config.retain_drop


def refine_step(evaluate: Evaluate, result: StepSearchResult, config: StepSearchConfig,
                margin: float = 0.0) -> StepSearchResult:
    """Bisect [largest step that did not forget, found step] to the smallest step meeting both targets, then
    take ``(1 + margin)`` times it if that still meets them (within ``config.max_evals`` in all).

    The smallest step that forgets every search image is where the last of them flips: images not searched
    flip at their own steps, so a small margin beyond it forgets more of them (the least edit otherwise).
    """
    if not result.success:
        return result
    done = config.forget_target + config.forget_tolerance
    lo = max((s for s, f, _ in result.history if f > done and s < result.step), default=0.0)
    hi, best, history = result.step, result, list(result.history)
    budget = config.max_evals - (1 if margin > 0 else 0)
    while len(history) + 1 < budget and (hi - lo) / hi >= config.min_relative_gap:
        step = (lo + hi) / 2
        f, r = _metrics(evaluate, step)
        history.append((step, f, r))
        if _succeeded(f, r, config, result.baseline):
            hi, best = step, StepSearchResult(step, f, r, True, "smallest step found that forgets with "
                                              "utility kept", result.baseline, history)
        else:
            lo = step
    if margin > 0 and len(history) + 1 < config.max_evals:
        step = best.step * (1 + margin)
        f, r = _metrics(evaluate, step)
        history.append((step, f, r))
        if _succeeded(f, r, config, result.baseline):
            best = StepSearchResult(step, f, r, True, f"smallest forgetting step x {1 + margin:g} (margin)",
                                    result.baseline, history)
    best.history = history
    logger.info("SLUG step refined to %.4g (forget %.4g, retain %.4g)", best.step, best.forget_metric,
                best.retain_metric)
    return best


def search_smallest_step(evaluate: Evaluate, start: float, config: StepSearchConfig | None = None,
                         baseline: tuple[float, float] | None = None,
                         margin: float = 0.0) -> StepSearchResult:
    """:func:`search_step`, then :func:`refine_step` (at most ``config.max_evals`` evaluations in all)."""
    config = config or StepSearchConfig()
    if margin < 0:
        raise ValueError(f"margin: expected >= 0, got {margin}")
    return refine_step(evaluate, search_step(evaluate, start, config, False, baseline), config, margin)
