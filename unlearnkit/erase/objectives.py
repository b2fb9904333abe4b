"""What an attack on an erased encoder minimises: batches of (x_t, t, prompt ids, target output).

- ``match_original`` (AdvUnlearn's inner attack): x_t from the ORIGINAL model's sampling on the
  concept prompt; target ε_o(x_t, c), the original model's prediction there.
- ``denoise_concept`` (UnlearnDiffAtk): x_0 an image of the concept (the original model's
  generation), x_t = √ᾱ x_0 + √(1−ᾱ) ε at a uniform t; target ε (v for v-models): the erased model,
  used as a diffusion classifier, should denoise the concept image as if the prompt named it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoise import Denoiser, TrajectoryBank

OBJECTIVES = ("match_original", "denoise_concept")


@dataclass(frozen=True)
class AttackBatch:
    """One step's data: latents x (B, C, H, W), timesteps t (B,), prompt ids (B, L), target output (B, C, H,
    W)."""

    x: torch.Tensor
    t: torch.Tensor
    ids: torch.Tensor
    target: torch.Tensor


Draw = Callable[[torch.Generator], AttackBatch]


def match_original(denoiser: Denoiser, bank: TrajectoryBank, ids: torch.Tensor, conds_orig: torch.Tensor,
                   batch: int = 1) -> Draw:
    """x_t ~ original model's trajectories on prompt j; target ε_o(x_t, c_j). ids (P, L), conds_orig (P, L,
    W)."""

    def draw(gen: torch.Generator) -> AttackBatch:
        j = torch.randint(0, ids.shape[0], (batch,), generator=gen)
        x, t = bank.draw(j, gen)
        x, t = x.to(denoiser.device), t.to(denoiser.device)
        with torch.no_grad():
            target = denoiser.out(x, t, conds_orig[j].to(denoiser.device))
        return AttackBatch(x, t, ids[j], target)

    return draw


def denoise_concept(denoiser: Denoiser, x0: torch.Tensor, ids: torch.Tensor, batch: int = 1) -> Draw:
    """x0 (P, C, H, W) the concept images of prompts ids (P, L); x_t = q(x_t | x0) at t ~ U{0..T−1}; target ε
    (or v)."""
    n_train = int(denoiser.scheduler.config.num_train_timesteps)

    def draw(gen: torch.Generator) -> AttackBatch:
        j = torch.randint(0, ids.shape[0], (batch,), generator=gen)
        t = torch.randint(0, n_train, (batch,), generator=gen)
        noise = torch.randn((batch, *x0.shape[1:]), generator=gen)
        clean = x0[j].cpu()
        x = denoiser.add_noise(clean, noise, t)
        target = denoiser.target(clean, noise, t)
        dev = denoiser.device
        return AttackBatch(x.to(dev), t.to(dev), ids[j], target.to(dev))

    return draw


def fixed(draw: Draw, seed: int) -> AttackBatch:
    """One batch drawn with a seeded generator (to compare losses before and after an attack)."""
    return draw(torch.Generator().manual_seed(seed))
