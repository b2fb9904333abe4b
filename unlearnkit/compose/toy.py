"""Gaussian shards with closed-form scores and p_t: the ground truth that gates are checked on.

Shard i's data is N(μ_i, s_i² I). Under the VE forward process x_t = x_0 + σ ε its marginal is
p_t^i = N(μ_i, (s_i² + σ²) I), so scores, denoisers and the exact posterior P(i | x_t) are known.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianShard:
    mean: torch.Tensor  # (D,)
    std: float

    def log_density(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_t(x) for x (B, D), sigma (B,) -> (B,)."""
        var = self.std**2 + sigma**2  # (B,)
        d = x.shape[1]
        sq = ((x - self.mean) ** 2).sum(dim=1)
        return -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """∇_x log p_t(x) = -(x - μ) / (s² + σ²)."""
        return -(x - self.mean) / (self.std**2 + sigma[:, None] ** 2)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Tweedie: E[x_0 | x_t] = x + σ² ∇ log p_t(x)."""
        return x + sigma[:, None] ** 2 * self.score(x, sigma)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, self.mean.shape[0], generator=generator)


def exact_posterior(
    shards: list[GaussianShard], priors: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """P(shard = i | x_t) = λ_i p_t^i(x) / Σ_j λ_j p_t^j(x), shape (B, N)."""
    log_p = torch.stack([s.log_density(x, sigma) for s in shards], dim=1)
    return torch.softmax(log_p + priors.log(), dim=1)


def joint_score(
    shards: list[GaussianShard], priors: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """∇ log Σ_i λ_i p_t^i(x), by autograd on the closed-form joint density."""
    x = x.detach().requires_grad_(True)
    log_p = torch.stack([s.log_density(x, sigma) for s in shards], dim=1)
    torch.logsumexp(log_p + priors.log(), dim=1).sum().backward()
    return x.grad.detach()


def sample_joint(
    shards: list[GaussianShard], priors: torch.Tensor, n: int, generator: torch.Generator
) -> torch.Tensor:
    """Exact samples of Σ_i λ_i N(μ_i, s_i² I)."""
    idx = torch.multinomial(priors, n, replacement=True, generator=generator)
    all_samples = torch.stack([s.sample(n, generator) for s in shards], dim=0)  # (N, n, D)
    return all_samples[idx, torch.arange(n)]


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E‖a-b‖ - E‖a-a'‖ - E‖b-b'‖ (Székely); 0 iff the distributions are equal."""
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def three_shards() -> tuple[torch.Tensor, list[GaussianShard]]:
    """(priors λ, shards) of the checks' example: three 2-D Gaussians with unequal spreads, so the
    divergence term differs between shards and matters for ODE paths."""
    shards = [GaussianShard(torch.tensor([-2.0, 0.0]), 0.3), GaussianShard(torch.tensor([2.0, 0.0]), 1.0),
              GaussianShard(torch.tensor([0.0, 3.0]), 0.6)]
    return torch.tensor([0.5, 0.3, 0.2]), shards
