"""A small fixed-noise sampler for the SD step search: deterministic DDIM (eta = 0), classifier-free guidance.

DDIM (Song et al. 2021, Eq. 12 with sigma = 0): x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps; CFG (Ho & Salimans 2022): eps = eps_u + g (eps_c - eps_u).
Seeds are fixed per prompt position, so every evaluation of the search sees the same noise.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .denoising import eps_from_prediction
from .generation_metric import Generate
from .sd_model import SDModel

Tokenize = Callable[[Sequence[str]], torch.Tensor]  # texts -> (B, L) token ids
Decode = Callable[[torch.Tensor], torch.Tensor]  # latents (B, C, h, w) -> images


def ddim_timesteps(num_train: int, steps: int) -> torch.Tensor:
    """``steps`` integer steps from T - 1 down to 0, evenly spaced: (steps,)."""
    if not 1 <= steps <= num_train:
        raise ValueError(f"steps: expected 1..{num_train}, got {steps}")
    return torch.linspace(num_train - 1, 0, steps).round().long()


def guided_eps(sd: SDModel, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """eps_u + g (eps_c - eps_u), both halves in one UNet call: x (B, C, h, w), states (B, L, W)."""
    abar = sd.alphas_cumprod.to(x.device)[t].expand(2 * len(x))
    x2 = torch.cat([x, x])
    out = sd.predict(x2, t.expand(2 * len(x)), torch.cat([uncond, cond])).float()
    eps_u, eps_c = eps_from_prediction(out, x2, abar, sd.prediction_type).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@torch.no_grad()
def sample_latents(sd: SDModel, token_ids: torch.Tensor, uncond_ids: torch.Tensor, noise: torch.Tensor,
                   steps: int = 10, guidance: float = 4.0) -> torch.Tensor:
    """DDIM latents (B, C, h, w) from noise (B, C, h, w) for prompts (B, L); uncond_ids (1, L)."""
    if len(token_ids) != len(noise):
        raise ValueError(f"noise: expected one draw per prompt ({len(token_ids)}), got {len(noise)}")
    abars = sd.alphas_cumprod.float().to(sd.device)
    cond = sd.text_states(token_ids)
    uncond = sd.text_states(uncond_ids).expand(len(cond), -1, -1)
    x = noise.to(sd.device, torch.float32)
    times = ddim_timesteps(len(abars), steps).tolist()
    for i, t in enumerate(times):
        a, a_next = abars[t], abars[times[i + 1]] if i + 1 < len(times) else torch.tensor(1.0)
        eps = guided_eps(sd, x, torch.full((1,), t, device=x.device), cond, uncond, guidance)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def fixed_noise_generator(sd: SDModel, tokenize: Tokenize, decode: Decode, latent_shape: Sequence[int],
                          steps: int = 10, guidance: float = 4.0, seed: int = 1, batch: int = 64) -> Generate:
    """prompts -> decoded images of DDIM samples, the same noise for the same prompt position on every
    call."""
    if len(latent_shape) != 3:
        raise ValueError(f"latent_shape: expected (C, h, w), got {tuple(latent_shape)}")
    uncond_ids = tokenize([""])

    def generate(prompts: list[str]) -> torch.Tensor:
        noise = torch.randn((len(prompts), *latent_shape), generator=torch.Generator().manual_seed(seed))
        ids = tokenize(prompts)
        images = [decode(sample_latents(sd, ids[i:i + batch], uncond_ids, noise[i:i + batch], steps,
                                        guidance)) for i in range(0, len(prompts), batch)]
        return torch.cat(images)

    return generate
