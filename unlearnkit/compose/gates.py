"""Gates: per-sample shard weights w(x_t, t) with rows summing to 1 (CDM §3, Prop. 3.1).

A gate is called once per model evaluation with the sampler's (VE-form) x, sigma and returns
(B, N) weights; the same weights serve the cond and uncond halves of a CFG batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from .mixture import normalise_priors


@runtime_checkable
class Gate(Protocol):
    names: list[str]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) sampler state, sigma: (B,) -> weights (B, N)."""
        ...


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


class StaticGate:
    """The prior λ itself, for every x and t: the paper's "naive averaging" baseline."""

    def __init__(self, names: Sequence[str], priors: Sequence[float]) -> None:
        self.names = list(names)
        self.weights = normalise_priors(priors, names)  # (N,)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.weights.to(x.device).expand(x.shape[0], -1).clone()
