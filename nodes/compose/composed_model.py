"""The composed MODEL: a clone of the first shard whose every step runs the core's composed step over all
shards (``unlearnkit.compose.host_calls.compose_wrapper_call``).

ComfyUI calls the model_function_wrapper with the CFG batch (cond/uncond chunks stacked, or each apart
when memory is short) and expects the mixed x0 back. Gates, routing (evaluate modes), chunk layout, row
selection and new-run detection are the core's; this adapter loads the shards the way ComfyUI loads
additional models, evaluates each with its own patches, and tells the core the sampler's state (flow
for CONST model sampling). ComfyUI is imported only inside functions.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...unlearnkit.compose import ShardSet, check_same_family, normalise_priors
from ...unlearnkit.compose.composer import Composer, ComposerRuns
from ...unlearnkit.compose.gate_registry import GateSpec
from ...unlearnkit.compose.host_calls import compose_wrapper_call
from ...unlearnkit.compose.routing import Evaluation
from .clone_deltas import CloneDeltas, effective_patcher, same_weight_patches
from .comfy_models import (
    architecture_signature,
    composed_base,
    loaded_patchers,
    model_sampling_of,
    sampler_state,
    shard_conds,
)

logger = logging.getLogger(__name__)

ADDITIONAL_MODELS_KEY = "unlearnkit_shards"


class ShardMixture:
    """model_function_wrapper returning Σ_i w_i(x_t, σ) x0_i(x_t, σ) (CDM eq. 3) through the core."""

    def __init__(self, names: Sequence[str], patchers: Sequence[Any], priors: Sequence[float], gate: GateSpec,
                 evaluation: Evaluation, base: Any, report_models: bool) -> None:
        self.names = tuple(names)
        self.patchers = tuple(patchers)
        self.gate = gate
        self.evaluation = evaluation
        self.inner: tuple[Callable | None, ...] = tuple(
            p.model_options.get("model_function_wrapper") for p in patchers
        )
        self.clones = CloneDeltas(self.names, self.patchers, base)
        self.state = sampler_state(model_sampling_of(base))
        priors = [float(p) for p in priors]
        # a gate is built now: fail at compose time, naming the input, not mid-sampling
        self.runs = ComposerRuns(list(names), lambda: gate.build(self.names, priors), evaluation=evaluation,
                                 keep=1)
        self._report_models = report_models

    @property
    def composer(self) -> Composer | None:
        """The current (or last) sampling run's Composer: its history is the attribution."""
        return self.runs.current

    def load_list(self) -> list:
        """One patcher per module other than the base's: the shards that must load with the base."""
        base = self.clones.base
        return [h for h in self.clones.holders() if base is None or h.model is not base.model]

    def to(self, device_or_dtype: Any) -> ShardMixture:
        """ComfyUI calls this when it moves the base model; shards' own wrappers, deltas and the gate move
        along."""
        self.inner = tuple(w.to(device_or_dtype) if hasattr(w, "to") else w for w in self.inner)
        self.clones.to(device_or_dtype)
        if self.gate.net is not None and isinstance(device_or_dtype, (torch.device, str)):
            self.gate.net.to(device_or_dtype)
        return self

    def models(self) -> list:
        """Models ComfyUI (mid-2024 on) loads with the base: shards, and what shards' own wrappers need."""
        own = self.load_list() if self._report_models else []
        return own + [m for w in self.inner if hasattr(w, "models") for m in w.models()]

    def __deepcopy__(self, memo: dict) -> ShardMixture:  # ModelPatcher.clone() deep-copies model_options
        return self

    def _ensure_loaded(self, apply_model: Callable) -> None:
        """Load shards ComfyUI has not loaded (2024-03 has no hook for extra models); keep the base loaded."""
        loaded = loaded_patchers()
        missing = [p for p in self.load_list() if not any(
            m is p or (getattr(m, "model", None) is p.model and same_weight_patches(m, p)) for m in loaded)]
        if missing:
            import comfy.model_management as mm

            base = [m for m in loaded if getattr(m, "model", None) is getattr(apply_model, "__self__", None)]
            logger.info("Compose: loading %d shard model(s)", len(missing))
            mm.load_models_gpu(base + missing)

    def _check_holders(self) -> None:
        """A module must hold its holder's weights (deltas are relative to them), never another clone's."""
        loaded = loaded_patchers()
        for holder in self.clones.holders():
            module = holder.model
            current = effective_patcher(
                module, next((m for m in loaded if getattr(m, "model", None) is module), None)
            )
            if current is not None and not same_weight_patches(current, holder):
                raise RuntimeError(
                    f"Compose: a shard model ({type(module).__name__}) is loaded with another clone's weight "
                    "patches; sample the composed model on its own (a LoRA applied after Compose Shards is "
                    "not supported: apply it to each shard)"
                )

    def __call__(self, apply_model: Callable, args: dict) -> torch.Tensor:
        self._ensure_loaded(apply_model)
        self._check_holders()

        def call(i: int, x: torch.Tensor, sigma: torch.Tensor, c: dict) -> torch.Tensor:
            fn = apply_model if i == 0 else self.patchers[i].model.apply_model
            c_i = c if i == 0 else shard_conds(c, self.patchers[i])
            with self.clones.applied(i, x.device):
                if self.inner[i] is not None:
                    return self.inner[i](fn, {**args, "input": x, "timestep": sigma, "c": c_i})
                return fn(x, sigma, **c_i)

        return compose_wrapper_call(self.runs, args, call, self.state)


def find_mixture(model: Any) -> ShardMixture:
    """The ShardMixture of a MODEL made by Compose Shards (ValueError naming the input otherwise)."""
    wrapper = getattr(model, "model_options", {}).get("model_function_wrapper")
    if not isinstance(wrapper, ShardMixture):
        raise ValueError(
            "model: not made by Compose Shards (UnlearnKit); connect the Compose Shards output that the "
            "sampler used"
        )
    return wrapper


def check_gate_fits(gate: GateSpec, shards: ShardSet) -> None:
    """Refuse a gate trained for other shards or another latent channel count, naming the shard_gate input."""
    if gate.kind == "classifier" and gate.net is None:
        raise ValueError(
            "shard_gate: the 'classifier' gate needs a SHARD_GATE input (Load Shard Gate or Train Shard Gate)"
        )
    if gate.net is None:
        return
    trained = tuple(gate.net.config.names)
    unknown = [n for n in shards.names if n not in trained]
    if unknown:
        raise ValueError(
            f"shard_gate: trained for shards {list(trained)}, but this composition has {unknown}; "
            "train the gate for these shards (Train Shard Gate, with init_gate to extend it)"
        )
    channels = architecture_signature(shards.shards[0].model)["latent channels"]
    gate_channels = gate.net.config.latent_shape[0]
    if channels is not None and channels != gate_channels:
        raise ValueError(
            f"shard_gate: trained on latents with {gate_channels} channels "
            f"{tuple(gate.net.config.latent_shape)}, but the shards' model has {channels}; train a gate for "
            "this model"
        )


def compose_model(
    shards: ShardSet, gate: GateSpec | None = None, evaluation: Evaluation | None = None
) -> Any:
    """A clone of the first weighted shard's model whose every step mixes all weighted shards' x0 (the static
    gate and the default evaluate mode unless given)."""
    gate = gate or GateSpec("static", net_input="shard_gate")
    evaluation = evaluation or Evaluation()
    if len(shards) == 0:
        raise ValueError("shards: expected at least one shard, got none")
    check_same_family([(s.name, architecture_signature(s.model)) for s in shards])
    check_gate_fits(gate, shards)
    evaluation.check(("evaluate", "prune_eps", "fast_sigma"))
    weights = normalise_priors(shards.priors, shards.names)
    active = [s for s, w in zip(shards, weights.tolist()) if w > 0]  # a zero prior never gets weight
    composed = composed_base([s.model for s in active])
    can_add_models = hasattr(composed, "set_additional_models")
    mixture = ShardMixture([s.name for s in active], [s.model for s in active], [s.prior for s in active],
                           gate, evaluation, composed, report_models=not can_add_models)
    composed.set_model_unet_function_wrapper(mixture)
    if can_add_models:  # keep what a composed shard brought along (nested Compose), add ours
        inherited = list(composed.get_additional_models_with_key(ADDITIONAL_MODELS_KEY))
        extra = [p for p in mixture.load_list() if all(p.model is not q.model for q in inherited)]
        composed.set_additional_models(ADDITIONAL_MODELS_KEY, inherited + extra)
    logger.info("Compose (%s gate, evaluate %s, ε %.3g): %s", gate.kind, evaluation.mode, evaluation.eps,
                ", ".join(f"{n}={w:.3f}" for n, w in zip(shards.names, weights.tolist())))
    return composed
