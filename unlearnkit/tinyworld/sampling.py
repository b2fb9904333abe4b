"""Sampling the tiny world: DDIM with classifier-free guidance over one UNet or a static mixture of shards.

A convex mixture of shards' ε is the same mixture of their x0 (x0 is affine in ε at fixed x_t, t),
so a static mixture here equals the core's x0 mixture (ARCHITECTURE.md) with fixed weights (CDM's naive
averaging).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .models import build_scheduler, encode_prompts

log = logging.getLogger(__name__)


def check_sampling(prompts: Sequence[str], steps: int, guidance: float) -> None:
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts: expected a non-empty list of strings, got {prompts!r}")
    if not 1 <= int(steps) <= 1000:
        raise ValueError(f"steps: expected 1..1000, got {steps!r}")
    if not guidance >= 1.0:
        raise ValueError(f"guidance: expected >= 1 (1 = no CFG), got {guidance!r}")


def mixture_eps(unets: Sequence[torch.nn.Module], weights: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                cond: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i ε_i(x_t, t, c): x (B, 4, 8, 8), cond (B, 77, 64), weights (N,) summing to 1."""
    out = torch.zeros_like(x)
    for unet, w in zip(unets, weights.tolist()):
        if w > 0:
            out = out + w * unet(x, t, encoder_hidden_states=cond).sample
    return out


def guided_eps(unets, weights, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """CFG: ε_u + g (ε_c − ε_u), one batched call for both halves."""
    eps = mixture_eps(unets, weights, torch.cat([x, x]), t.expand(2 * len(x)), torch.cat([uncond, cond]))
    eps_u, eps_c = eps.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@torch.no_grad()
def sample_latents(unets, text_encoder, prompts: Sequence[str], steps: int = 20, guidance: float = 4.0,
                   seed: int = 0, weights: Sequence[float] | None = None, batch: int = 250) -> torch.Tensor:
    """DDIM (η = 0) latents (B, 4, 8, 8) for prompts; unets is one UNet or a list mixed with `weights`."""
    check_sampling(prompts, steps, guidance)
    unets = list(unets) if isinstance(unets, (list, tuple)) else [unets]
    w = (
        torch.full((len(unets),), 1.0 / len(unets))
        if weights is None
        else torch.tensor(weights, dtype=torch.float32)
    )
    if w.shape != (len(unets),) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-4:
        raise ValueError(
            f"weights: expected {len(unets)} values >= 0 summing to 1, got {list(map(float, w))}"
        )
    cfg = unets[0].config
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.randn(len(prompts), cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
    out = []
    for i in range(0, len(prompts), batch):
        cond = encode_prompts(text_encoder, list(prompts[i : i + batch]))
        uncond = encode_prompts(text_encoder, [""]).expand_as(cond)
        sched = build_scheduler("ddim")
        sched.set_timesteps(steps)
        x = x_all[i : i + batch] * sched.init_noise_sigma
        for t in sched.timesteps:
            eps = guided_eps(unets, w, x, t.view(1), cond, uncond, guidance)
            x = sched.step(eps, t, x).prev_sample
        out.append(x)
    return torch.cat(out)


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, 4, 8, 8) -> images (B, 3, 16, 16) in [-1, 1]."""
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)


def generate(unets, text_encoder, vae, prompts: Sequence[str], steps: int = 20, guidance: float = 4.0,
             seed: int = 0, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Images (B, 3, 16, 16) in [-1, 1] for prompts."""
    return decode(vae, sample_latents(unets, text_encoder, prompts, steps, guidance, seed, weights))
