"""Noise levels and sampler states: discrete σ <-> t, and the VE / VP / flow forms of x_t.

Every host's sampler state maps to the VE pair (x, σ) with x = x0 + σ ε, which is what gates read:
- VE (ComfyUI / Forge EPS, V, EDM models; k-diffusion): x itself.
- VP (A1111's UNet call, diffusers): x_t = √ᾱ x0 + √(1-ᾱ) ε = x / √(1 + σ²), with ᾱ = 1 / (1 + σ²).
- flow (ComfyUI's CONST model sampling, SD3 / Flux style): x_t = (1 - σ) x0 + σ ε = (1 - σ) x_VE at
  σ_VE = σ / (1 - σ).

Discrete schedules interpolate log σ linearly between the trained timesteps (k-diffusion's
DiscreteSchedule.t_to_sigma / sigma_to_t, ComfyUI's ModelSamplingDiscrete.sigma); ComfyUI and Forge
hand their UNet the nearest timestep (``quantize=True``), k-diffusion in A1111 the fractional one.
"""
from __future__ import annotations

import torch

STATES = ("ve", "vp", "flow")  # how a host's sampler state relates to the VE pair
FLOW_SIGMA_MAX = 1.0 - 1e-4  # flow σ = 1 is pure noise: σ_VE = ∞, clamped for the gates


def sigmas_of(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 - ᾱ_t) / ᾱ_t) of a discrete schedule: (T,)."""
    acp = alphas_cumprod.double()
    return ((1 - acp) / acp).sqrt().float()


def t_to_sigma(t: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """σ at (fractional) timesteps, linear in log σ between trained steps: (B,)."""
    t = t.float().to(log_sigmas.device).clamp(0, log_sigmas.shape[0] - 1)
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def sigma_to_t(sigma: torch.Tensor, log_sigmas: torch.Tensor, quantize: bool = False) -> torch.Tensor:
    """Timestep of σ: the nearest trained step (``quantize``), else the inverse of t_to_sigma: (B,)."""
    log_sigma = sigma.float().to(log_sigmas.device).log()
    dists = log_sigma - log_sigmas[:, None]  # (T, B)
    if quantize:
        return dists.abs().argmin(dim=0).view(sigma.shape)
    low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])).clamp(0, 1)
    return ((1 - w) * low + w * (low + 1)).view(sigma.shape)


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) matching ``like``'s rank, dtype and device."""
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def vp_scale(sigma: torch.Tensor) -> torch.Tensor:
    """√ᾱ = 1 / √(1 + σ²): x_t = √ᾱ · x_VE."""
    return (1 + sigma.float() ** 2).rsqrt()


def ve_from_vp(x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_VE = x_t / √ᾱ."""
    return x_t / bcast(vp_scale(sigma), x_t)


def vp_from_ve(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ · x_VE."""
    return x * bcast(vp_scale(sigma), x)


def ve_from_flow(x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_VE, σ_VE) = (x / (1 - σ), σ / (1 - σ)) of a flow state x = (1 - σ) x0 + σ ε."""
    s = sigma.float().clamp(max=FLOW_SIGMA_MAX)
    return x / bcast(1 - s, x), s / (1 - s)


def from_ve(x: torch.Tensor, sigma: torch.Tensor, state: str) -> torch.Tensor:
    """A VE-form x at the host's σ back in the host's state (inverse of to_ve for x)."""
    if state == "flow":
        return x * bcast(1 - sigma.float().clamp(max=FLOW_SIGMA_MAX), x)
    if state == "vp":
        return vp_from_ve(x, sigma)
    return x


def to_ve(x: torch.Tensor, sigma: torch.Tensor, state: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The VE pair of a host's sampler state (``state`` one of STATES)."""
    if state == "ve":
        return x, sigma
    if state == "vp":
        return ve_from_vp(x, sigma), sigma
    if state == "flow":
        return ve_from_flow(x, sigma)
    raise ValueError(f"state: expected one of {list(STATES)}, got {state!r}")
