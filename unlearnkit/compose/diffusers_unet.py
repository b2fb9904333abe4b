"""A composed UNet for diffusers pipelines: N shard UNets mixed per step by a gate (CDM).

The pipeline calls ``unet(x_t, t, encoder_hidden_states=...)`` with the VP latent x_t and a
timestep t (every scheduler's ``scale_model_input`` maps to that). We map (x_t, t) to the VE
pair (x = x_t / sqrt(ᾱ_t), σ_t), take each shard's x0 from its eps/v output, mix in x0 space
with the gate, and return the mix in the model's own prediction type.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from .. import io
from .composer import Composer
from .gates import Gate
from .mixture import check_same_family

logger = logging.getLogger(__name__)


def alpha_bar_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ᾱ at (possibly fractional) timesteps t by linear interpolation: (B,)."""
    t = t.float().clamp(0, alphas_cumprod.shape[0] - 1)
    lo = t.floor().long()
    hi = (lo + 1).clamp(max=alphas_cumprod.shape[0] - 1)
    frac = t - lo.float()
    return alphas_cumprod[lo] * (1 - frac) + alphas_cumprod[hi] * frac


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1))).to(like)


def prediction_to_x0(
    out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """x0 from eps (x0 = (x_t − √(1−ᾱ) ε)/√ᾱ), v (x0 = √ᾱ x_t − √(1−ᾱ) v) or sample."""
    a, s = _bcast(abar.sqrt(), x_t), _bcast((1 - abar).sqrt(), x_t)
    if prediction_type == "epsilon":
        return (x_t - s * out) / a
    if prediction_type == "v_prediction":
        return a * x_t - s * out
    if prediction_type == "sample":
        return out
    raise ValueError(
        f"prediction_type: expected 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}"
    )


def x0_to_prediction(
    x0: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Inverse of prediction_to_x0 for the same x_t and ᾱ."""
    a, s = _bcast(abar.sqrt(), x_t), _bcast((1 - abar).sqrt(), x_t)
    if prediction_type == "epsilon":
        return (x_t - a * x0) / s
    if prediction_type == "v_prediction":
        return (a * x_t - x0) / s
    if prediction_type == "sample":
        return x0
    raise ValueError(
        f"prediction_type: expected 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}"
    )


def take_rows(value, rows: torch.Tensor, batch: int):
    """value[rows] for batch-sized tensors (also inside dicts, e.g. added_cond_kwargs); anything else as
    is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return {k: take_rows(v, rows, batch) for k, v in value.items()}
    return value


def unet_signature(unet: nn.Module) -> tuple:
    """What must agree between shards: channels, cross-attention width, sample size, block layout."""
    c = unet.config
    return (
        c.in_channels,
        c.out_channels,
        c.cross_attention_dim,
        tuple(c.block_out_channels),
        tuple(c.down_block_types),
    )


class ComposedUNet(nn.Module):
    """Drop-in for ``pipe.unet``: returns Σ_i w_i(x_t, t) · prediction_i in the pipeline's prediction type."""

    def __init__(
        self,
        shards: Sequence[nn.Module],
        names: Sequence[str],
        gate: Gate,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        prune_eps: float = 0.0,
        route: str = "batch",
        mc_sigma: float = float("inf"),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if len(shards) != len(names) or not shards:
            raise ValueError(
                f"shards: expected one UNet per name, got {len(shards)} UNets for names {list(names)}"
            )
        check_same_family([(n, unet_signature(u)) for n, u in zip(names, shards)])
        self.shards = nn.ModuleList(shards)
        self.names = list(names)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.prediction_type = prediction_type
        self.composer = Composer(
            self.names, gate, prune_eps=prune_eps, route=route, mc_sigma=mc_sigma, generator=generator
        )
        self.config = shards[0].config

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    @property
    def device(self) -> torch.device:
        return self.shards[0].device

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
        **kwargs,
    ):
        t = torch.as_tensor(timestep, device=sample.device).flatten().expand(sample.shape[0])
        abar = alpha_bar_at(self.alphas_cumprod.to(sample.device), t)  # (B,)
        sigma = ((1 - abar) / abar).sqrt()
        x_ve = sample / _bcast(abar.sqrt(), sample)
        # diffusers pipelines stack [uncond, cond] for CFG: 2 chunks, score the cond one
        chunks = (
            2 if sample.shape[0] % 2 == 0 and sample.shape[0] > 1 and torch.equal(*sample.chunk(2)) else 1
        )

        def evaluate(
            i: int, x: torch.Tensor, s: torch.Tensor, rows: torch.Tensor | None = None
        ) -> torch.Tensor:
            pick = (lambda v: v) if rows is None else (lambda v: take_rows(v, rows, sample.shape[0]))
            out = self.shards[i](
                pick(sample), pick(t), encoder_hidden_states=pick(encoder_hidden_states), return_dict=False,
                **{k: pick(v) for k, v in kwargs.items()},
            )[0]
            return prediction_to_x0(out.float(), pick(sample).float(), pick(abar), self.prediction_type)

        x0 = self.composer(
            x_ve, sigma, evaluate, chunks=chunks, score_chunk=chunks - 1, context=encoder_hidden_states
        )
        out = x0_to_prediction(x0, sample.float(), abar, self.prediction_type).to(sample.dtype)
        return SimpleNamespace(sample=out) if return_dict else (out,)


def load_shard_unet(path: str, base: nn.Module) -> nn.Module:
    """A shard from a diffusers UNet folder, or a safetensors/pt file of diffusers keys for base's
    architecture."""
    from diffusers import UNet2DConditionModel

    if os.path.isdir(path):
        unet = UNet2DConditionModel.from_pretrained(path, local_files_only=True)
        if unet_signature(unet) != unet_signature(base):
            raise ValueError(
                f"shard {path!r}: architecture {unet_signature(unet)} differs from the base "
                f"{unet_signature(base)}"
            )
        return unet
    tensors, _ = io.load_state_dict(path)
    io.check_finite(tensors, f"shard {path!r}")
    unet = UNet2DConditionModel.from_config(base.config)
    expected = unet.state_dict()
    missing = [k for k in expected if k not in tensors]
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"shape of {wrong[0]!r} is {tuple(tensors[wrong[0]].shape)}, "
            f"expected {tuple(expected[wrong[0]].shape)}"
        )
        raise ValueError(f"shard {path!r}: not a UNet of the base's architecture ({detail})")
    unet.load_state_dict({k: tensors[k] for k in expected})
    return unet.to(base.dtype)
