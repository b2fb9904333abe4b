"""Per-step shard mixing for the webui hosts: thin adapters of the core's host calls (CDM eq. 3, x0 space).

- Forge calls a ``model_function_wrapper(apply_model, {"input", "timestep", "c", "cond_or_uncond"})``
  with the VE pair (x, σ) and wants x0 back: :class:`VEMixture` over ``compose_wrapper_call``.
- AUTOMATIC1111 runs the UNet module itself on the VP latent x_t and a discrete (possibly fractional)
  timestep t, and wants eps (or v) back: :class:`VPMixture` replaces the UNet's forward; the core's
  ``VPComposition`` maps (x_t, t) to (x, σ), mixes in x0 space and maps back.

Gates, routing, CFG chunks, row selection and new-run detection are the core's (``unlearnkit.compose``);
:func:`runs_for` builds the run tracker from the panel's settings.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..compose.composer import ComposerRuns
from ..compose.gate_model import GateNet
from ..compose.gate_registry import build_gate
from ..compose.host_calls import VPComposition, compose_wrapper_call
from .settings import PanelSettings

__all__ = ["ComposerRuns", "VEMixture", "VPMixture", "build_gate", "runs_for"]


def runs_for(settings: PanelSettings, names: Sequence[str], weights: Sequence[float],
             net: GateNet | None = None) -> ComposerRuns:
    """The run tracker of a generation: the panel's gate over the active shards and its evaluate mode."""
    return ComposerRuns(list(names), lambda: build_gate(settings.gate, names, weights, net, "gate file"),
                        evaluation=settings.evaluation)


class VEMixture:
    """Forge ``model_function_wrapper``: x0 = Σ_i w_i(x, σ) x0_i(x, σ) over the shards' ``apply_model``.

    ``shard_models[i]`` is ``fn(x, sigma, **c) -> x0`` of shard i, or None for the model the host
    passes in (the loaded checkpoint, when it is one of the shards). ``inner`` is a wrapper that was
    set before this one (e.g. tiled diffusion): every shard evaluation then goes through it.
    """

    def __init__(
        self, runs: ComposerRuns, shard_models: Sequence[Callable | None], inner: Callable | None = None
    ) -> None:
        if len(shard_models) != len(runs.names):
            raise ValueError(
                f"shard_models: expected {len(runs.names)} (one per shard {runs.names}), got "
                f"{len(shard_models)}"
            )
        self.runs = runs
        self.shard_models = list(shard_models)
        self.inner = inner

    def __deepcopy__(self, memo: dict) -> VEMixture:  # UnetPatcher.clone() deep-copies model_options
        return self

    def to(self, device: Any) -> VEMixture:  # Forge's model_patches_to moves wrappers with the model
        return self

    def __call__(self, apply_model: Callable, args: dict) -> torch.Tensor:
        def call(i: int, x: torch.Tensor, sigma: torch.Tensor, c: dict) -> torch.Tensor:
            fn = self.shard_models[i] or apply_model
            if self.inner is not None:
                return self.inner(fn, {**args, "input": x, "timestep": sigma, "c": c})
            return fn(x, sigma, **c)

        return compose_wrapper_call(self.runs, args, call)


class VPMixture(VPComposition):
    """A1111 UNet forward: eps/v of Σ_i w_i(x, σ) x0_i for ``forward(x_t, t, *args, context=..., ...)``.

    ``shard_forwards[i]`` runs shard i's UNet (the webui's own call convention); ``latent_channels`` are
    the leading input channels that are the latent (inpainting models append their image conditioning).
    """

    def __init__(self, runs: ComposerRuns, shard_forwards: Sequence[Callable], alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", latent_channels: int = 4) -> None:
        super().__init__(runs, shard_forwards, alphas_cumprod, prediction_type, latent_channels,
                         prompt_chunk="first", prompt_key="context")
