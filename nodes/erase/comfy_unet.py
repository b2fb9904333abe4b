"""A ComfyUI MODEL as the diffusers-style UNet the erase loop calls, with gradients allowed through it.

ComfyUI's ``BaseModel.apply_model(x, sigma, c_crossattn=…)`` works in the variance-exploding form and
returns x0: x_ve = x_t / √ᾱ, σ = √((1 − ᾱ) / ᾱ), ε = (x_ve − x0) / σ, v = √ᾱ ε − √(1 − ᾱ) x0, with
ᾱ = 1 / (1 + σ²) from the model's own discrete sigmas. The erase loop calls ``unet(x_t, t,
encoder_hidden_states=c).sample`` (ε or v) on integer t; SDXL's pooled vector arrives as the extra row of
the conditioning (``unlearnkit.erase.sd_text``) and becomes ``y`` through ComfyUI's own ``encode_adm``.
ComfyUI runs nodes under ``torch.inference_mode()``: weights made there cannot take part in autograd,
so they are replaced by normal tensors of equal value (as ComfyUI's ``set_attr_param`` replaces
Parameter objects); ComfyUI 2024-03's transformer blocks add residuals in place after a norm saved x,
so those norms get a copy of x while training runs.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import torch

from ...unlearnkit.erase.sd_text import split_pooled


def make_normal_(module: torch.nn.Module) -> int:
    """Replace inference tensors by normal tensors of equal value (Parameter objects, not ``.data``);
    returns how many were replaced."""
    n = 0
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and p.is_inference():
                m._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
                n += 1
        for name, b in list(m._buffers.items()):
            if b is not None and b.is_inference():
                m._buffers[name] = b.clone()
                n += 1
    return n


def _blocks_add_in_place() -> bool:
    """ComfyUI 2024-03's BasicTransformerBlock writes ``x += n``; 0.3.x ``x = n + x`` (read from the
    source, not the version)."""
    import comfy.ldm.modules.attention as attention

    return "x += n" in inspect.getsource(attention.BasicTransformerBlock)


@contextmanager
def autograd_safe(diffusion_model: torch.nn.Module):
    """While open, each transformer block's norms read a copy of x (only where blocks add in place)."""
    handles = []
    if _blocks_add_in_place():
        import comfy.ldm.modules.attention as attention

        for m in diffusion_model.modules():
            if isinstance(m, attention.BasicTransformerBlock):
                for name in ("norm1", "norm2", "norm3"):
                    norm = getattr(m, name, None)
                    if norm is not None:
                        handles.append(norm.register_forward_pre_hook(lambda _m, a: (a[0].clone(), *a[1:])))
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


def cross_attention_width(base: Any) -> int:
    context = base.model_config.unet_config.get("context_dim")
    return int(context if isinstance(context, int) else context[0])


def alpha_bar_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = 1 / (1 + σ_t²): ComfyUI keeps only the discrete sigmas."""
    return 1.0 / (1.0 + sigmas.double() ** 2)


def ddim_scheduler(alphas_cumprod: torch.Tensor, prediction: str):
    """A diffusers DDIM scheduler with exactly this ᾱ schedule (betas recovered from the ratios)."""
    from diffusers import DDIMScheduler

    prev = torch.cat([torch.ones(1, dtype=alphas_cumprod.dtype), alphas_cumprod[:-1]])
    betas = (1 - alphas_cumprod / prev).clamp(1e-8, 0.999)
    return DDIMScheduler(num_train_timesteps=len(alphas_cumprod), trained_betas=betas.tolist(),
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         prediction_type=prediction)


class ComfyUNet(torch.nn.Module):
    """``unet(x_t, t, encoder_hidden_states=c).sample`` over ComfyUI's ``apply_model``."""

    def __init__(self, patcher: Any, latent_size: int, device: torch.device, pooled_size: int = 0) -> None:
        super().__init__()
        base = patcher.model
        self._base = (base,)  # not registered: ComfyUI manages where the model lives
        self.register_buffer("acp", alpha_bar_from_sigmas(base.model_sampling.sigmas.detach().cpu()).float())
        self.anchor = torch.nn.Parameter(torch.zeros(0, device=device), requires_grad=False)  # .device
        self.prediction = "v_prediction" if "V_PREDICTION" in str(base.model_type) else "epsilon"
        in_channels = int(base.model_config.unet_config["in_channels"])
        self.config = SimpleNamespace(sample_size=latent_size, in_channels=in_channels,
                                      cross_attention_dim=cross_attention_width(base))
        self.pooled_size, self.latent_size = int(pooled_size), int(latent_size)

    @property
    def base(self) -> Any:
        return self._base[0]

    def scheduler(self):
        return ddim_scheduler(self.acp.double(), self.prediction)

    def size_conditioning(self, pooled: torch.Tensor) -> torch.Tensor:
        """SDXL's ``y``: pooled vector + original/crop/target size embeddings, by ComfyUI's encode_adm."""
        side = self.latent_size * 8
        rows = [self.base.encode_adm(pooled_output=p[None], width=side, height=side, crop_w=0, crop_h=0,
                                     target_width=side, target_height=side) for p in pooled]
        return torch.cat(rows).to(pooled.device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor, **_: Any):
        t = torch.as_tensor(t, device=self.acp.device).long().flatten().expand(x.shape[0])
        acp = self.acp[t].to(x.device, torch.float32).view(-1, 1, 1, 1)
        sigma = ((1 - acp) / acp).sqrt()
        x_ve = x / acp.sqrt()
        extra = {}
        context = encoder_hidden_states
        if self.pooled_size:
            context, pooled = split_pooled(context, self.pooled_size)
            extra["y"] = self.size_conditioning(pooled)
        x0 = self.base.apply_model(x_ve, sigma.view(-1), c_crossattn=context, **extra)
        eps = (x_ve - x0) / sigma
        out = eps if self.prediction == "epsilon" else acp.sqrt() * eps - (1 - acp).sqrt() * x0
        return SimpleNamespace(sample=out)
