"""What the Compose adapter reads from ComfyUI's model patchers: architecture, sampler state, per-shard
conditioning, the shared base of clone shards. ComfyUI is imported only inside functions."""
from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .clone_deltas import same_weight_patches

# UNet config entries that do not change what a checkpoint computes (storage / memory choices).
NON_ARCHITECTURE_KEYS = {"dtype", "device", "operations", "use_checkpoint", "image_size"}
# transformer_options a shard must not inherit from the base model it is mixed into.
BASE_ONLY_OPTIONS = {"wrappers", "callbacks", "patches", "patches_replace"}
FORWARD_WRAPPER_KINDS = ("apply_model", "diffusion_model")  # comfy.patcher_extension.WrappersMP


def model_sampling_of(patcher: Any) -> Any:
    """The model sampling a patcher computes with (ModelSamplingSD3 & co. set it as an object patch)."""
    return getattr(patcher, "object_patches", {}).get("model_sampling", patcher.model.model_sampling)


def sampling_signature(sampling: Any) -> str:
    """ComfyUI's model-sampling classes of a shard and its noise range, e.g. 'CONST+ModelSamplingDiscreteFlow
    σ 0.0029..1'."""
    kinds = sorted({c.__name__ for c in type(sampling).__mro__ if c.__module__ == "comfy.model_sampling"})
    lo, hi = (float(getattr(sampling, k, float("nan"))) for k in ("sigma_min", "sigma_max"))
    return f"{'+'.join(kinds)} σ {lo:.6g}..{hi:.6g}"


def sampler_state(sampling: Any) -> str:
    """'flow' for CONST model sampling (x = (1-σ) x0 + σ ε; ComfyUI 0.3.x), else 've' (x = x0 + σ ε)."""
    import comfy.model_sampling

    const = getattr(comfy.model_sampling, "CONST", None)  # ComfyUI 2024-03 has no flow models
    return "flow" if const is not None and isinstance(sampling, const) else "ve"


def architecture_signature(patcher: Any) -> dict:
    """What must match for x0 predictions to be mixable: model class, prediction, model sampling, latent and
    UNet shapes."""
    model = patcher.model
    config = getattr(model, "model_config", None)
    unet = getattr(config, "unet_config", {}) or {}
    model_type = getattr(model, "model_type", None)
    signature = {
        "model class": type(model).__name__,
        "prediction": getattr(model_type, "name", str(model_type)),
        "model sampling": sampling_signature(model_sampling_of(patcher)),
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


def loaded_patchers() -> list:
    """The patchers ComfyUI's model management holds loaded."""
    import comfy.model_management as mm

    return [getattr(lm, "model", None) for lm in mm.current_loaded_models]


def composed_base(patchers: Sequence[Any]) -> Any:
    """A clone of the first shard's patcher to carry the mixture. When other shards are clones of the same
    module with other weight patches (LoRAs on one checkpoint), the clone holds no weight patches: every
    such shard then adds its own patches at forward time, and N LoRA shards cost one base in memory."""
    base = patchers[0].clone()
    if any(p.model is base.model and not same_weight_patches(p, base) for p in patchers[1:]):
        base.patches = {}
        base.patches_uuid = uuid.uuid4()
    return base
