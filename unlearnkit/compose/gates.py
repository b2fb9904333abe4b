"""Gates: per-sample shard weights w(x_t, t) with rows summing to 1 (CDM §3, Prop. 3.1).

A gate is called once per sampler point with the VE-form x, sigma and returns (B, N) weights; the same
weights serve every chunk of a CFG batch. The registry of gate kinds is gate_registry.py.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from .mixture import normalise_priors

Tensor = torch.Tensor


@runtime_checkable
class Gate(Protocol):
    """Per-sample shard weights, plus the optional hooks a Composer calls; a gate class that subclasses
    Gate inherits their defaults (no prompt, no score tracking, no probe).

    ``reads_prompt``: the call takes the prompt's text-encoder states as a third argument.
    ``needs_every_score``: the gate follows the path from every shard's prediction (``observe``, and
    ``probe`` / ``observe_probe`` for a divergence probe), so a step must not draw one shard per sample.
    """

    names: list[str]
    reads_prompt: bool = False
    needs_every_score: bool = False

    def __call__(self, x: Tensor, sigma: Tensor, context: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) VE state, sigma: (B,), context: (B, T, D) or None -> weights (B, N)."""
        ...

    def observe(self, x: Tensor, sigma: Tensor, x0s: Tensor, mask: Tensor) -> None:
        """The shards' x0 (N, B, ...) at (x, σ); pairs not evaluated are False in mask (B, N)."""
        return None

    def probe(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """(direction v, K probe points per row stacked (K·B, ...)) where every shard must also be
        evaluated, or None."""
        return None

    def observe_probe(self, x: Tensor, sigma: Tensor, v: Tensor, x0s: Tensor, probe_x0s: Tensor) -> None:
        """The shards' x0 (N, K·B, ...) at the probe points."""
        return None


def log_priors(priors: Sequence[float], names: Sequence[str]) -> torch.Tensor:
    """log λ for normalised slider priors; a zero slider gives -inf (that shard is never used)."""
    lam = normalise_priors(priors, names)
    return torch.where(lam > 0, lam.log(), torch.full_like(lam, -math.inf))


def posterior_weights(log_lik: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
    """w_i = λ_i p_i / Σ_j λ_j p_j = softmax(log p_i + log λ_i) (CDM Prop. 3.1). log_lik: (B, N)."""
    if log_lik.dim() != 2 or log_lik.shape[1] != log_prior.shape[0]:
        raise ValueError(
            f"log-likelihoods: expected shape (B, {log_prior.shape[0]}), got {tuple(log_lik.shape)}"
        )
    if torch.isnan(log_lik).any():
        raise ValueError("log-likelihoods: contain NaN; a shard's prediction or the gate is broken")
    return torch.softmax(log_lik.float() + log_prior.to(log_lik.device).float(), dim=1)


class StaticGate(Gate):
    """The prior λ itself, for every x and t: the paper's "naive averaging" baseline."""

    def __init__(self, names: Sequence[str], priors: Sequence[float]) -> None:
        self.names = list(names)
        self.weights = normalise_priors(priors, names)  # (N,)

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.weights.to(x.device).expand(x.shape[0], -1).clone()
