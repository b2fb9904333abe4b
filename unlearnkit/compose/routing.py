"""Which shards a composed step evaluates on which samples (ours; measured in bench/compose*.py).

The user-facing choice is one of EVALUATE:
- ``every-shard``: every shard on every sample, every step — the exact mixture (cost: N models); with
  ε > 0 a shard is skipped only when its weight is below ε for every sample of the batch.
- ``per-sample``: a shard runs only on the samples whose weight for it reaches ε; the weights of the
  skipped pairs are dropped and each row renormalised (cost: about one model once the gate settles).
- ``fast``: per-sample, and above the noise level ``mc_sigma`` (VE σ) each sample uses ONE shard drawn
  from its weights — an unbiased estimate of the mix at one model's cost, where shards still agree; the
  draws are coupled across the batch (``draw_one_hot``) so a step calls few distinct shards.
A gate that needs every shard's score (the density gate) turns the Monte-Carlo part off, and says so.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

EVALUATE = ("fast", "per-sample", "every-shard")
DEFAULT_EVALUATE = "fast"
DEFAULT_EPS = 0.01
DEFAULT_MC_SIGMA = 1.0
MAX_EPS = 0.5


def seed_of(x: torch.Tensor) -> int:
    """A seed that follows the sampler's own noise: the same inputs draw the same shards (and probes).

    It reads the signs of x only, so every host gets the same seed from the same noise although each
    reaches x through its own float steps (A1111 divides its scaled latent back; fp16 vs fp32 paths)."""
    signs = (x.detach().float().cpu() > 0).numpy()
    return int(hashlib.sha1(signs.tobytes() + str(tuple(x.shape)).encode()).hexdigest()[:15], 16)


def prune(weights: torch.Tensor, eps: float) -> list[int]:
    """Shards whose weight reaches eps for at least one sample; the rest need not be evaluated."""
    if eps <= 0:
        return list(range(weights.shape[1]))
    keep = (weights >= eps).any(dim=0)
    keep[weights.max(dim=0).values.argmax()] = True  # never prune everything
    return keep.nonzero().flatten().tolist()


def renormalise(weights: torch.Tensor, active: Sequence[int]) -> torch.Tensor:
    """Weights restricted to the active shards, rows summing to 1 again: (B, len(active))."""
    w = weights[:, list(active)]
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


def sample_mask(weights: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, N) bool: which (sample, shard) pairs to evaluate — weight ≥ ε, and always each row's argmax."""
    mask = weights >= eps if eps > 0 else torch.ones_like(weights, dtype=torch.bool)
    mask[torch.arange(weights.shape[0]), weights.argmax(dim=1)] = True
    return mask


def draw_one_hot(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B, N) bool: one shard per sample drawn from its weights — an unbiased estimate of its mix.

    The samples share one uniform u (inverse CDF of each row at u, coupled draws): each sample still
    draws shard i with probability w_i, but samples whose weights are alike pick the same shard, so a
    step needs few distinct shard calls (at high noise, where this is used, the weights are alike)."""
    u = torch.rand(1, generator=generator, dtype=torch.float64)
    cdf = weights.detach().cpu().double().cumsum(dim=1)  # (B, N)
    idx = (cdf < u * cdf[:, -1:]).sum(dim=1).clamp(max=weights.shape[1] - 1)  # (B,)
    return torch.nn.functional.one_hot(idx, weights.shape[1]).bool().to(weights.device)


def masked_weights(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weights of the evaluated pairs only, each row renormalised to sum to 1: (B, N)."""
    w = torch.where(mask, weights, torch.zeros_like(weights))
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Evaluation:
    """An EVALUATE mode with its ε (per-sample skip threshold) and σ threshold of the one-shard draw."""

    mode: str = DEFAULT_EVALUATE
    eps: float = DEFAULT_EPS
    mc_sigma: float = DEFAULT_MC_SIGMA

    def check(self, names: tuple[str, str, str] = ("evaluate", "epsilon", "threshold")) -> None:
        """Raise ValueError naming the input (``names`` as the host calls them) and what was expected."""
        if self.mode not in EVALUATE:
            raise ValueError(f"{names[0]}: expected one of {list(EVALUATE)}, got {self.mode!r}")
        if not (isinstance(self.eps, (int, float)) and 0 <= self.eps <= MAX_EPS):
            raise ValueError(f"{names[1]}: expected a number in [0, {MAX_EPS}], got {self.eps!r}")
        sigma = self.mc_sigma
        if not (isinstance(sigma, (int, float)) and sigma >= 0 and not math.isnan(sigma)):
            raise ValueError(f"{names[2]}: expected a noise level σ >= 0, got {self.mc_sigma!r}")

    def routing(self) -> dict:
        """The Composer's knobs (route, prune_eps, mc_sigma) for this mode."""
        if self.mode == "every-shard":
            return {"route": "batch", "prune_eps": float(self.eps), "mc_sigma": math.inf}
        mc = self.mc_sigma if self.mode == "fast" else math.inf
        return {"route": "sample", "prune_eps": float(self.eps), "mc_sigma": float(mc)}

    def for_gate(self, needs_every_score: bool) -> Evaluation:
        """This evaluation, the one-shard draw turned off (and logged) when the gate needs every score."""
        if self.mode != "fast" or not needs_every_score:
            return self
        logger.warning(
            "Compose: the density gate tracks every shard's score along the path, so 'fast' evaluates "
            "as 'per-sample' (no one-shard draw above sigma %g)", self.mc_sigma
        )
        return Evaluation("per-sample", self.eps, self.mc_sigma)
