"""The composed MODEL: a clone of the first shard whose every step runs the core Composer over all shards.

ComfyUI calls the model_function_wrapper with the CFG batch (cond/uncond chunks stacked) and
expects the mixed x0 back. Gate weights come from the first chunk and serve every chunk; the
density gate scores the cond chunk. One Composer (fresh gate, fresh history) per sampling run:
a run starts when the per-chunk batch shape changes or sigma rises. ComfyUI is imported only
inside functions; the maths is in ``unlearnkit.compose``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...unlearnkit.compose import ShardSet, check_same_family, normalise_priors
from ...unlearnkit.compose.composer import Composer
from ...unlearnkit.compose.density import DensityGate
from ...unlearnkit.compose.gate_model import ClassifierGate, GateNet
from ...unlearnkit.compose.gates import Gate, StaticGate
from .clone_deltas import CloneDeltas, effective_patcher, same_weight_patches

logger = logging.getLogger(__name__)

ADDITIONAL_MODELS_KEY = "unlearnkit_shards"
GATES = ("static", "classifier", "density", "density (ODE sampler)")
# UNet config entries that do not change what a checkpoint computes (storage / memory choices).
NON_ARCHITECTURE_KEYS = {"dtype", "device", "operations", "use_checkpoint", "image_size"}
# transformer_options a shard must not inherit from the base model it is mixed into.
BASE_ONLY_OPTIONS = {"wrappers", "callbacks", "patches", "patches_replace"}
FORWARD_WRAPPER_KINDS = ("apply_model", "diffusion_model")  # comfy.patcher_extension.WrappersMP
COND = 0  # ComfyUI's index of the positive prompt in cond_or_uncond


def architecture_signature(patcher: Any) -> dict:
    """What must match for x0 predictions to be mixable: model class, prediction type, latent and UNet
    shapes."""
    model = patcher.model
    config = getattr(model, "model_config", None)
    unet = getattr(config, "unet_config", {}) or {}
    signature = {
        "model class": type(model).__name__,
        "prediction": getattr(
            getattr(model, "model_type", None), "name", str(getattr(model, "model_type", None))
        ),
        "latent channels": getattr(getattr(model, "latent_format", None), "latent_channels", None),
    }
    signature.update({k: v for k, v in sorted(unet.items()) if k not in NON_ARCHITECTURE_KEYS})
    return signature


def forward_wrappers(patcher: Any) -> dict:
    """A patcher's own 0.3.x wrappers of the kinds that run inside apply_model (none in 2024-03)."""
    out: dict = {}
    sources = (
        patcher.model_options.get("transformer_options", {}).get("wrappers", {}),
        getattr(patcher, "wrappers", {}),
    )
    for source in sources:
        for kind in FORWARD_WRAPPER_KINDS:
            for key, fns in source.get(kind, {}).items():
                out.setdefault(kind, {}).setdefault(key, []).extend(fns)
    return out


def shard_conds(c: Mapping[str, Any], patcher: Any) -> dict:
    """The model inputs ``c`` for another shard: the sampler's runtime options plus that shard's own
    patches."""
    options = {k: v for k, v in c.get("transformer_options", {}).items() if k not in BASE_ONLY_OPTIONS}
    own = patcher.model_options.get("transformer_options", {})
    options.update({k: v for k, v in own.items() if k not in ("wrappers", "callbacks")})
    wrappers = forward_wrappers(patcher)
    if wrappers:
        options["wrappers"] = wrappers
    return {**c, "transformer_options": options}


def _loaded_patchers() -> list:
    import comfy.model_management as mm

    return [getattr(lm, "model", None) for lm in mm.current_loaded_models]


def split_chunks(x: torch.Tensor, cond_or_uncond: Sequence[int] | None) -> tuple[int, int | None]:
    """(number of stacked chunks, position of the cond chunk or None) of a ComfyUI model call."""
    marks = list(cond_or_uncond) if cond_or_uncond else [COND]
    chunks = len(marks) if x.shape[0] % max(len(marks), 1) == 0 else 1
    return chunks, (marks.index(COND) if COND in marks and chunks == len(marks) else None)


@dataclass(frozen=True)
class GateChoice:
    """What Compose Shards picked: a gate kind from GATES and, for "classifier", the trained net."""

    kind: str
    net: GateNet | None = None

    def build(self, names: Sequence[str], priors: Sequence[float]) -> Gate:
        """A fresh gate (density gates carry per-run state) for the composition's shards."""
        if self.kind == "static":
            return StaticGate(names, priors)
        if self.kind == "classifier":
            return ClassifierGate(self.net, names, priors)
        if self.kind in ("density", "density (ODE sampler)"):
            return DensityGate(names, priors, ode=self.kind != "density")
        raise ValueError(f"gate: expected one of {list(GATES)}, got {self.kind!r}")


class ShardMixture:
    """model_function_wrapper returning Σ_i w_i(x_t, σ) x0_i(x_t, σ) (CDM eq. 3) through the core Composer."""

    def __init__(
        self,
        names: Sequence[str],
        patchers: Sequence[Any],
        priors: Sequence[float],
        gate: GateChoice,
        prune_eps: float,
        report_models: bool,
    ) -> None:
        self.names = tuple(names)
        self.patchers = tuple(patchers)
        self.priors = tuple(float(p) for p in priors)
        self.gate = gate
        self.prune_eps = float(prune_eps)
        self.inner: tuple[Callable | None, ...] = tuple(
            p.model_options.get("model_function_wrapper") for p in patchers
        )
        self.clones = CloneDeltas(self.names, self.patchers)
        self.composer: Composer | None = None  # the current (or last) sampling run
        self.runs = 0
        self._last: tuple[tuple, float] | None = None  # (per-chunk shape, sigma) of the last call
        self._report_models = report_models
        gate.build(self.names, self.priors)  # fail at compose time, naming the input, not mid-sampling

    def load_list(self) -> list:
        """One patcher per distinct module other than the base's (its first shard): what must load with the
        base."""
        out: list = []
        for p in self.patchers[1:]:
            if p.model is not self.patchers[0].model and all(p.model is not q.model for q in out):
                out.append(p)
        return out

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
        loaded = _loaded_patchers()
        missing = [p for p in self.load_list() if not any(
            m is p or (getattr(m, "model", None) is p.model and same_weight_patches(m, p)) for m in loaded)]
        if missing:
            import comfy.model_management as mm

            base = [m for m in loaded if getattr(m, "model", None) is getattr(apply_model, "__self__", None)]
            logger.info("Compose: loading %d shard model(s)", len(missing))
            mm.load_models_gpu(base + missing)

    def _check_carriers(self) -> None:
        """A module must hold its carrier's weights (deltas are relative to them), never another clone's."""
        loaded = _loaded_patchers()
        for i, c in enumerate(self.clones.carrier):
            if c != i:
                continue
            module = self.patchers[i].model
            holder = effective_patcher(
                module, next((m for m in loaded if getattr(m, "model", None) is module), None)
            )
            if holder is not None and not same_weight_patches(holder, self.patchers[i]):
                raise RuntimeError(
                    f"Compose: shard {self.names[i]!r}'s model is loaded with another clone's weight "
                    "patches; sample the composed model on its own (internal loading error)"
                )

    def _composer_for(self, x: torch.Tensor, sigma: torch.Tensor, chunks: int) -> Composer:
        """The run's Composer; a new one (fresh gate and history) when a new sampling run starts."""
        shape = (x.shape[0] // chunks, *x.shape[1:])
        s = float(sigma.max())
        if self.composer is None or self._last is None or self._last[0] != shape or s > self._last[1] + 1e-6:
            self.composer = Composer(
                list(self.names), self.gate.build(self.names, self.priors), self.prune_eps
            )
            self.runs += 1
        self._last = (shape, s)
        return self.composer

    def __call__(self, apply_model: Callable, args: dict) -> torch.Tensor:
        x, sigma, c = args["input"], args["timestep"], args["c"]  # x (R, C, H, W), sigma (R,)
        self._ensure_loaded(apply_model)
        if self.clones.has_clones:
            self._check_carriers()
        chunks, score_chunk = split_chunks(x, args.get("cond_or_uncond"))
        composer = self._composer_for(x, sigma, chunks)
        conds = [c if i == 0 else shard_conds(c, p) for i, p in enumerate(self.patchers)]

        def evaluate(i: int, x_i: torch.Tensor, sigma_i: torch.Tensor) -> torch.Tensor:
            fn = apply_model if i == 0 else self.patchers[i].model.apply_model
            inner = self.inner[i]
            with self.clones.applied(i, x_i.device):
                if inner is not None:
                    return inner(fn, {**args, "input": x_i, "timestep": sigma_i, "c": conds[i]})
                return fn(x_i, sigma_i, **conds[i])

        context = c.get("c_crossattn")  # (R, T, D): the rows' prompts, for prompt-reading gates
        if not isinstance(context, torch.Tensor) or context.dim() != 3 or context.shape[0] != x.shape[0]:
            context = None
        return composer(x, sigma, evaluate, chunks=chunks, score_chunk=score_chunk, context=context)


def find_mixture(model: Any) -> ShardMixture:
    """The ShardMixture of a MODEL made by Compose Shards (ValueError naming the input otherwise)."""
    wrapper = getattr(model, "model_options", {}).get("model_function_wrapper")
    if not isinstance(wrapper, ShardMixture):
        raise ValueError(
            "model: not made by Compose Shards (UnlearnKit); connect the Compose Shards output that the "
            "sampler used"
        )
    return wrapper


def check_gate_fits(gate: GateChoice, shards: ShardSet) -> None:
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
            f"{tuple(gate.net.config.latent_shape)}, "
            f"but the shards' model has {channels}; train a gate for this model"
        )


def compose_model(shards: ShardSet, gate: GateChoice = GateChoice("static"), prune_eps: float = 0.0) -> Any:
    """A clone of the first weighted shard's model whose every step mixes all weighted shards' x0."""
    if len(shards) == 0:
        raise ValueError("shards: expected at least one shard, got none")
    check_same_family([(s.name, architecture_signature(s.model)) for s in shards])
    check_gate_fits(gate, shards)
    weights = normalise_priors(shards.priors, shards.names)
    active = [s for s, w in zip(shards, weights.tolist()) if w > 0]  # a zero prior never gets weight
    composed = active[0].model.clone()
    can_add_models = hasattr(composed, "set_additional_models")
    mixture = ShardMixture(
        [s.name for s in active],
        [s.model for s in active],
        [s.prior for s in active],
        gate,
        prune_eps,
        report_models=not can_add_models,
    )
    composed.set_model_unet_function_wrapper(mixture)
    if can_add_models:  # keep what a composed shard brought along (nested Compose), add ours
        inherited = list(composed.get_additional_models_with_key(ADDITIONAL_MODELS_KEY))
        extra = [p for p in mixture.load_list() if all(p.model is not q.model for q in inherited)]
        composed.set_additional_models(ADDITIONAL_MODELS_KEY, inherited + extra)
    logger.info("Compose (%s gate, prune %.3g): %s", gate.kind, prune_eps,
                ", ".join(f"{n}={w:.3f}" for n, w in zip(shards.names, weights.tolist())))
    return composed
