"""Training-free density gate: Itô estimate of log p_t^i(x_t) along the sampling path.

SuperDiff (Skreta et al., ICLR 2025), VE form with score s_i = (x0_i - x) / σ²: a step from
(x, σ) to (x + dx, σ + dσ) adds ⟨dx, s_i⟩ − σ|dσ|·‖s_i‖² to ℓ_i (terms common to all shards
cancel in the softmax). Exact in the small-step limit for reverse-SDE paths (ancestral/SDE
samplers); a deterministic (ODE) path also needs the divergence term σ|dσ|·∇·s_i, estimated
here with one Hutchinson probe direction per step (central difference) when ``ode=True``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .gates import Gate, log_priors, posterior_weights
from .routing import seed_of


def score_from_x0(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """s = ∇ log p_t(x) = (x0 - x) / σ² (Tweedie, VE form). sigma: (B,)."""
    return (x0 - x) / sigma.view(-1, *([1] * (x.dim() - 1))) ** 2


def ito_increment(
    dx: torch.Tensor, sigma: torch.Tensor, dsigma: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """⟨dx, s_i⟩ − σ|dσ|‖s_i‖² per sample and shard. dx (B, ...), scores (N, B, ...) -> (B, N)."""
    flat = scores.flatten(start_dim=2)  # (N, B, D)
    inner = (flat * dx.flatten(start_dim=1)).sum(-1)  # (N, B)
    sq = (flat**2).sum(-1)  # (N, B)
    return (inner - (sigma * dsigma.abs())[None] * sq).T


def initial_log_lik(x: torch.Tensor, sigma: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """log N(x; x0_i, σ² I) up to shared terms = −σ²‖s_i‖²/2: the start of ℓ at the first, noisiest step."""
    sq = (scores.flatten(start_dim=2) ** 2).sum(-1)  # (N, B)
    return (-0.5 * sigma[None] ** 2 * sq).T


def divergence_increment(sigma: torch.Tensor, dsigma: torch.Tensor, divergence: torch.Tensor) -> torch.Tensor:
    """ODE correction −σ|dσ|·∇·s_i, divergence (N, B) -> (B, N)."""
    return (-(sigma * dsigma.abs())[None] * divergence).T


class DensityGate(Gate):
    """w = softmax(ℓ + log λ), ℓ_i tracked per sample from the shards' own predictions."""

    needs_every_score = True

    def __init__(
        self, names: Sequence[str], priors: Sequence[float], ode: bool = False, probe_scale: float = 1e-3
    ) -> None:
        self.names = list(names)
        self.log_prior = log_priors(priors, names)
        self.ode = ode
        self.probe_scale = probe_scale
        self.reset()

    def reset(self) -> None:
        self.log_lik: torch.Tensor | None = None  # (B, N)
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, sigma, scores
        self._at: torch.Tensor | None = None  # the x that log_lik is up to date for
        self._divergence: torch.Tensor | None = None  # (N, B)
        self._generator: torch.Generator | None = None  # of the probe directions

    def _is_new_path(self, x: torch.Tensor, sigma: torch.Tensor) -> bool:
        if self.log_lik is None or self._last is None:
            return True
        last_x, last_sigma, _ = self._last
        return last_x.shape != x.shape or bool((sigma > last_sigma + 1e-6).any())

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weights at (x, σ). Several calls at one point (cond and uncond evaluated apart) add the step
        once."""
        if self._is_new_path(x, sigma):
            self.reset()
            self.log_lik = torch.zeros(x.shape[0], len(self.names), device=x.device)
            self._at = x.detach().clone()
        elif not torch.equal(self._at, x):
            last_x, last_sigma, scores = self._last
            dsigma = sigma - last_sigma
            self.log_lik = self.log_lik + ito_increment(x - last_x, last_sigma, dsigma, scores)
            if self.ode and self._divergence is not None:
                self.log_lik = self.log_lik + divergence_increment(last_sigma, dsigma, self._divergence)
            self._at = x.detach().clone()
        return posterior_weights(self.log_lik, self.log_prior)

    def observe(self, x: torch.Tensor, sigma: torch.Tensor, x0s: torch.Tensor, mask: torch.Tensor) -> None:
        """Record scores at (x, σ) from x0s (N, B, ...); pairs not evaluated (mask (B, N) False) leave the
        race."""
        scores = score_from_x0(x, x0s, sigma) * mask.T.reshape(*mask.T.shape, *([1] * (x.dim() - 1))).to(x)
        if self.log_lik is not None:
            if self._last is None:  # start of a path: p_T^i(x) ≈ N(x; x0_i, σ² I) at high noise
                self.log_lik = self.log_lik + initial_log_lik(x, sigma, scores)
            self.log_lik = self.log_lik.masked_fill(~mask.to(self.log_lik.device), -math.inf)
        self._last = (x.detach().clone(), sigma.detach().clone(), scores)

    def probe(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A Rademacher direction v and the probe points x ± h v (2B, ...) for the Hutchinson divergence of
        the ODE form (central difference).

        Directions come from the path's own generator, seeded by its first point: the same inputs give
        the same estimate whatever else uses torch's global generator."""
        if not self.ode:
            return None
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(seed_of(x))
        v = torch.randint(0, 2, x.shape, generator=self._generator).to(x) * 2 - 1
        return v, torch.cat([x + self.probe_scale * v, x - self.probe_scale * v])

    def observe_probe(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        v: torch.Tensor,
        x0s: torch.Tensor,
        probe_x0s: torch.Tensor,
    ) -> None:
        """∇·s_i ≈ vᵀ(s_i(x + h v) − s_i(x − h v)) / 2h, one probe direction per sample.

        probe_x0s (N, 2B, ...) holds the x0 at x + h v, then at x − h v, both from one model call: their
        difference is not the float noise of two differently batched calls."""
        h, b = self.probe_scale, x.shape[0]
        plus = score_from_x0(x + h * v, probe_x0s[:, :b], sigma)  # (N, B, ...)
        minus = score_from_x0(x - h * v, probe_x0s[:, b:], sigma)
        self._divergence = ((plus - minus) * v).flatten(start_dim=2).sum(-1) / (2 * h)  # (N, B)
