"""SLUG's retain loss for a diffusion model: the denoising loss on retain image-caption pairs.

L_r = E ||y - y_theta(x_t, t, c)||^2 with x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps and y = eps
(Ho et al. 2020, Eq. 14; SD's training objective) or y = sqrt(abar_t) eps - sqrt(1 - abar_t) z0 for
v-prediction (Salimans & Ho 2022). Its gradient reaches every text-encoder layer and every K/V projection,
through all token states, so it measures what an edit costs the prompts the model must keep. Draws of
(t, eps) are fixed up front, so the gradient is one deterministic pass.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sd_model import SDModel

LossBatch = Callable[[], tuple[torch.Tensor, int]]  # () -> (loss averaged over the batch, batch size)


def noised(z0: torch.Tensor, noise: torch.Tensor, alphas_bar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps: z0, noise (B, C, h, w), alphas_bar (B,)."""
    a = alphas_bar.view(-1, 1, 1, 1)
    return a.sqrt() * z0 + (1 - a).sqrt() * noise


def training_target(z0: torch.Tensor, noise: torch.Tensor, alphas_bar: torch.Tensor,
                    prediction_type: str) -> torch.Tensor:
    """What the UNet learned to predict: eps, or v = sqrt(abar) eps - sqrt(1 - abar) z0."""
    if prediction_type == "epsilon":
        return noise
    a = alphas_bar.view(-1, 1, 1, 1)
    return a.sqrt() * noise - (1 - a).sqrt() * z0


def eps_from_prediction(prediction: torch.Tensor, x_t: torch.Tensor, alphas_bar: torch.Tensor,
                        prediction_type: str) -> torch.Tensor:
    """eps from the UNet's output: itself, or sqrt(abar) v + sqrt(1 - abar) x_t for v-prediction."""
    if prediction_type == "epsilon":
        return prediction
    a = alphas_bar.view(-1, 1, 1, 1)
    return a.sqrt() * prediction + (1 - a).sqrt() * x_t


@dataclass(frozen=True)
class DiffusionPairs:
    """Fixed draws for image-caption pairs: latents z0 (N, C, h, w) scaled like the model's training latents,
    integer steps t (N,), noise like z0 and caption token ids (N, L)."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor
    token_ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def batches(self, size: int) -> Iterator[DiffusionPairs]:
        for i in range(0, len(self), size):
            yield DiffusionPairs(self.latents[i:i + size], self.timesteps[i:i + size], self.noise[i:i + size],
                                 self.token_ids[i:i + size])


def draw_pairs(latents: torch.Tensor, token_ids: torch.Tensor, draws: int, num_timesteps: int,
               seed: int = 0) -> DiffusionPairs:
    """``draws`` (t, eps) per pair, t uniform in [0, T): latents (N, C, h, w), ids (N, L) -> N * draws
    rows."""
    if latents.shape[0] != token_ids.shape[0] or latents.shape[0] == 0:
        raise ValueError(f"retain pairs: expected one caption per image, got {latents.shape[0]} images and "
                         f"{token_ids.shape[0]} captions")
    if draws < 1 or num_timesteps < 2:
        raise ValueError(f"draws/num_timesteps: expected >= 1 / >= 2, got {draws}/{num_timesteps}")
    gen = torch.Generator().manual_seed(seed)
    z0 = latents.detach().float().cpu().repeat_interleave(draws, 0)
    t = torch.randint(0, num_timesteps, (z0.shape[0],), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    return DiffusionPairs(z0, t, noise, token_ids.cpu().repeat_interleave(draws, 0))


def denoising_loss(sd: SDModel, pairs: DiffusionPairs) -> torch.Tensor:
    """Mean ||y - y_theta(x_t, t, c)||^2 over the pairs, the text states computed by the text encoder."""
    device = sd.device
    z0, noise, t = pairs.latents.to(device), pairs.noise.to(device), pairs.timesteps.to(device)
    abar = sd.alphas_cumprod.to(device)[t]
    prediction = sd.predict(noised(z0, noise, abar), t, sd.text_states(pairs.token_ids))
    return F.mse_loss(prediction.float(), training_target(z0, noise, abar, sd.prediction_type))


def denoising_batches(sd: SDModel, pairs: DiffusionPairs, size: int = 128) -> list[LossBatch]:
    """The pairs' denoising loss as gradient batches (see :mod:`.sd_gradients`)."""
    if size < 1:
        raise ValueError(f"size: expected >= 1, got {size}")
    return [lambda chunk=chunk: (denoising_loss(sd, chunk), len(chunk)) for chunk in pairs.batches(size)]
