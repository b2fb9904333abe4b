"""The frozen UNet and its DDIM sampler, as the erasure losses and attacks use them.

ESD/AdvUnlearn draw x_t by sampling the model on the concept prompt and stopping at a random
DDIM step k; the model output there is evaluated at the *same* timestep t_k (the public ESD code
evaluates it at a timestep from the opposite end of the schedule; we do not copy that).
Outputs are whatever the UNet predicts (ε or v): both are affine in ε at fixed (x_t, t), so the
ESD target ε_0 − η(ε_c − ε_0) means the same for either.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerConfig:
    """DDIM sampling used to draw x_t and to generate images."""

    steps: int = 20  # DDIM steps (ESD/AdvUnlearn: 50 on SD1.4)
    guidance: float = 3.0  # classifier-free guidance of the sampling ("start_guidance" in ESD)

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"sampler steps: expected 1..1000, got {self.steps!r}")
        if not self.guidance >= 1.0:
            raise ValueError(f"guidance: expected >= 1 (1 = no CFG), got {self.guidance!r}")


class Denoiser:
    """A frozen UNet with a DDIM schedule: ``out(x, t, cond)`` and sampling to a chosen step."""

    def __init__(self, unet: torch.nn.Module, scheduler, config: SamplerConfig = SamplerConfig()) -> None:
        from diffusers import DDIMScheduler

        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = DDIMScheduler.from_config(copy.deepcopy(dict(scheduler.config)))
        self.scheduler.set_timesteps(config.steps)
        self.config = config

    @property
    def timesteps(self) -> torch.Tensor:
        """DDIM timesteps, noisiest first: (S,)."""
        return self.scheduler.timesteps

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return (cfg.in_channels, size, size)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def out(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """UNet prediction (ε or v) (B, C, H, W) for x (B, C, H, W), t scalar or (B,), cond (B, L, W).

        The UNet computes in its own dtype (a half-precision UNet stays half); the prediction comes back in
        x's dtype, so the sampler's and the losses' arithmetic keeps x's precision."""
        t = t.to(x.device).expand(x.shape[0]) if t.dim() == 0 else t.to(x.device)
        dtype = self.dtype
        return self.unet(x.to(dtype), t, encoder_hidden_states=cond.to(dtype)).sample.to(x.dtype)

    def guided(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor
    ) -> torch.Tensor:
        """CFG: out_∅ + g (out_c − out_∅), one batched call for both halves."""
        if self.config.guidance == 1.0:
            return self.out(x, t, cond)
        both = self.out(torch.cat([x, x]), t, torch.cat([uncond.expand_as(cond), cond]))
        out_u, out_c = both.chunk(2)
        return out_u + self.config.guidance * (out_c - out_u)

    def noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Initial latents x_T (n, C, H, W), drawn on the CPU from gen (identical on every device)."""
        return (
            torch.randn((n, *self.latent_shape), generator=gen).to(self.device)
            * self.scheduler.init_noise_sigma
        )

    @torch.no_grad()
    def sample_until(
        self, x: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, stop: int
    ) -> torch.Tensor:
        """x after ``stop`` DDIM steps from x_T (stop = S gives the final latent); x (B, C, H, W)."""
        if not 0 <= stop <= len(self.timesteps):
            raise ValueError(f"stop: expected 0..{len(self.timesteps)}, got {stop}")
        for t in self.timesteps[:stop]:
            x = self.scheduler.step(self.guided(x, t, cond, uncond), t, x).prev_sample
        return x

    @torch.no_grad()
    def trajectory(self, x: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        """Every DDIM state x_{t_k}, k = 0..S-1 (x_{t_0} = x_T): (B, S, C, H, W)."""
        states = []
        for t in self.timesteps:
            states.append(x)
            x = self.scheduler.step(self.guided(x, t, cond, uncond), t, x).prev_sample
        return torch.stack(states, dim=1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε (DDPM forward process), t (B,)."""
        return self.scheduler.add_noise(x0, noise, t.to(x0.device))

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet should predict at x_t: ε, or v = √ᾱ ε − √(1−ᾱ) x0 for v-prediction models."""
        if self.scheduler.config.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, t.to(x0.device))
        return noise


class TrajectoryBank:
    """DDIM trajectories of the ORIGINAL model (frozen, so drawn once): x_t at a random prompt, seed and step.

    Holds (P, N, S, C, H, W) latents on the CPU: P prompts × N starting noises × S steps.
    """

    def __init__(self, denoiser: Denoiser, conds: torch.Tensor, uncond: torch.Tensor, per_prompt: int,
                 gen: torch.Generator, batch: int = 64) -> None:
        if per_prompt < 1:
            raise ValueError(f"per_prompt: expected >= 1 trajectories per prompt, got {per_prompt}")
        n_prompts = conds.shape[0]
        cond = conds.repeat_interleave(per_prompt, dim=0)  # (P*N, L, W)
        x = denoiser.noise(len(cond), gen)
        runs = [
            denoiser.trajectory(x[i : i + batch], cond[i : i + batch], uncond)
            for i in range(0, len(cond), batch)
        ]
        self.states = torch.cat(runs).cpu().view(n_prompts, per_prompt, *runs[0].shape[1:])
        self.timesteps = denoiser.timesteps.cpu()
        logger.debug("trajectory bank: %s", tuple(self.states.shape))

    def draw(self, prompt: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, C, H, W) and t (B,) for prompt indices (B,), each at a random seed and DDIM step."""
        b = prompt.shape[0]
        seed = torch.randint(0, self.states.shape[1], (b,), generator=gen)
        step = torch.randint(0, self.states.shape[2], (b,), generator=gen)
        return self.states[prompt, seed, step], self.timesteps[step]
