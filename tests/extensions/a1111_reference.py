"""What AUTOMATIC1111 v1.10.1 computes for txt2img with the "Euler" sampler (Schedule type: Automatic, CPU),
re-done outside the webui with the core: the tiny world's diffusers models, the core's Composer for mixtures.

Test side only (runs in the suite's environment, not the webui's). Mirrors, for one prompt and batch 1:
- noise: ``torch.manual_seed(seed); torch.randn(4, H/8, W/8)`` (modules/rng.py, CPU), times σ_max;
- σ schedule: k-diffusion ``CompVisDenoiser.get_sigmas(steps)``: t = linspace(999, 0, steps), log-σ
  interpolation, then 0;
- denoiser: x0 = x − σ·eps(x / √(σ²+1), t(σ)) (``CompVisDenoiser``), CFG ``uncond + (cond − uncond)·scale``
  with cond and uncond stacked [cond, uncond] (modules/sd_samplers_cfg_denoiser.py);
- Euler: x += (x − x0)/σ · (σ_next − σ) (``sample_euler`` with s_churn 0);
- decode: VAE(x / scaling_factor), clamp((x+1)/2), ×255, truncated to uint8 (modules/processing.py).
A1111's prompt tokens equal the tiny world's tokenizer (BOS, tokens, EOS padding to 77); CLIP skip 1 is the
last hidden state.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def sd1_alphas_cumprod() -> torch.Tensor:
    """LDM's "linear" schedule (0.00085 .. 0.012, 1000 steps) as the webui stores it (float32)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class CompVisSchedule:
    """k-diffusion's DiscreteSchedule over alphas_cumprod (sigma_to_t / t_to_sigma / get_sigmas)."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.log_sigmas = self.sigmas.log()

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def get_sigmas(self, n: int) -> torch.Tensor:
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return torch.cat([self.t_to_sigma(t), torch.zeros(1)])


def eps_denoiser(unet, schedule: CompVisSchedule) -> Callable:
    """x0_fn(x, sigma, context) of one diffusers UNet in the webui's VE form."""

    def x0(x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        c_in = (1 / (sigma**2 + 1) ** 0.5).view(-1, 1, 1, 1)
        eps = unet(x * c_in, schedule.sigma_to_t(sigma), encoder_hidden_states=context, return_dict=False)[0]
        return x - sigma.view(-1, 1, 1, 1) * eps

    return x0


@torch.no_grad()
def txt2img(unets: Sequence, names: Sequence[str], gate, text_encoder, vae, prompt: str, seed: int,
            steps: int = 20, cfg_scale: float = 6.0, size: int = 64, evaluation=None) -> np.ndarray:
    """uint8 image (h, w, 3) of one A1111 Euler txt2img; one UNet and gate=None: no mixing. ``evaluation``:
    the core's routing (default: the panel's default, ``fast``)."""
    from unlearnkit.compose.composer import Composer
    from unlearnkit.compose.routing import Evaluation
    from unlearnkit.tinyworld.models import encode_prompts

    schedule = CompVisSchedule(sd1_alphas_cumprod())
    context = torch.cat([encode_prompts(text_encoder, [prompt]), encode_prompts(text_encoder, [""])])
    fns = [eps_denoiser(u, schedule) for u in unets]
    evaluation = (evaluation or Evaluation()).for_gate(bool(getattr(gate, "needs_every_score", False)))
    composer = Composer(list(names), gate, **evaluation.routing()) if gate is not None else None

    def shard(i: int, xi: torch.Tensor, si: torch.Tensor, rows) -> torch.Tensor:
        return fns[i](xi, si, context if rows is None else context[rows])

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # CFGDenoiser: rows [cond, uncond]
        x_in, s_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        if composer is None:
            out = fns[0](x_in, s_in, context)
        else:
            out = composer(x_in, s_in, shard, chunks=2, score_chunk=0)
        cond, uncond = out.chunk(2)
        return uncond + (cond - uncond) * cfg_scale

    torch.manual_seed(seed)
    x = torch.randn(1, 4, size // 8, size // 8)
    sigmas = schedule.get_sigmas(steps)
    x = x * sigmas[0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - model(x, s.view(1))) / s
        x = x + d * (s_next - s)
    image = vae.decode(x / vae.config.scaling_factor).sample
    image = torch.clamp((image + 1.0) / 2.0, 0.0, 1.0)[0]
    return (255.0 * np.moveaxis(image.cpu().numpy(), 0, 2)).astype(np.uint8)
