"""k-diffusion-style samplers over a denoiser ``model(x, sigma) -> x0`` (VE form x = x0 + σ ε).

Small and host-free: used by the core's own checks, benches and the CLI; hosts use their own.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5 noise levels, n steps, with a final 0 appended: shape (n + 1,)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step from σ to σ_next (k-diffusion get_ancestral_step)."""
    if sigma_next == 0:
        return 0.0, 0.0
    up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


@torch.no_grad()
def sample_euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler on the probability-flow ODE dx/dσ = (x - x0) / σ."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sb = s.expand(x.shape[0])
        d = (x - model(x, sb)) / s
        x = x + d * (s_next - s)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
) -> torch.Tensor:
    """Euler ancestral: an Euler step to σ_down, then fresh noise of std σ_up (a reverse-SDE sampler)."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        sb = s.expand(x.shape[0])
        down, up = ancestral_split(float(s), float(s_next), eta)
        d = (x - model(x, sb)) / s
        x = x + d * (down - s)
        if up > 0:
            x = x + up * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x
