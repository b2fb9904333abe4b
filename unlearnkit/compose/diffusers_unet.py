"""A composed UNet for diffusers pipelines: N shard UNets mixed per step by a gate (CDM).

The pipeline calls ``unet(x_t, t, encoder_hidden_states=...)`` with the VP latent x_t and a timestep t
(every scheduler's ``scale_model_input`` maps to that; fractional t as Euler-type schedulers pass it).
``host_calls.VPComposition`` maps (x_t, t) to the VE pair, takes each shard's x0 from its output, mixes
in x0 space and returns the mix in the model's own prediction type.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from types import SimpleNamespace

import torch
from torch import nn

from .. import io
from .composer import Composer, ComposerRuns
from .gates import Gate
from .host_calls import VPComposition
from .mixture import check_same_family
from .routing import Evaluation

logger = logging.getLogger(__name__)


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
    """Drop-in for ``pipe.unet``: returns Σ_i w_i(x_t, t) · prediction_i in the pipeline's prediction type.

    ``evaluation`` (routing.Evaluation: fast / per-sample / every-shard) sets the routing; without it
    the plain knobs ``prune_eps``, ``route`` and ``mc_sigma`` apply. ``composer`` is the last run's.
    """

    def __init__(
        self,
        shards: Sequence[nn.Module],
        names: Sequence[str],
        gate: Gate,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        prune_eps: float = 0.0,
        route: str = "batch",
        mc_sigma: float = math.inf,
        generator: torch.Generator | None = None,
        evaluation: Evaluation | None = None,
    ) -> None:
        super().__init__()
        if len(shards) != len(names) or not shards:
            raise ValueError(
                f"shards: expected one UNet per name, got {len(shards)} UNets for names {list(names)}"
            )
        check_same_family([(n, unet_signature(u)) for n, u in zip(names, shards)])
        self.shards = nn.ModuleList(shards)
        self.names = list(names)
        self.prediction_type = prediction_type
        self.runs = ComposerRuns(self.names, lambda: gate, prune_eps, evaluation, keep=1, route=route,
                                 mc_sigma=mc_sigma, generator=generator)
        self.call = VPComposition(self.runs, [self._forward_of(u) for u in shards], alphas_cumprod,
                                  prediction_type, prompt_chunk="last", prompt_key="encoder_hidden_states")
        self.config = shards[0].config

    @staticmethod
    def _forward_of(unet: nn.Module):
        return lambda x, t, *args, **kwargs: unet(x, t, *args, return_dict=False, **kwargs)[0]

    @property
    def composer(self) -> Composer | None:
        return self.runs.current

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    @property
    def device(self) -> torch.device:
        return self.shards[0].device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True, **kwargs):
        out = self.call(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)
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
