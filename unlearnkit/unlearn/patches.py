"""SLUG patches: one layer's delta in a tiny safetensors file, applied / stacked / removed exactly.

Identity. A patch records ``layer_sha256`` (SHA-256 of the edited layer's *unpatched* weights
rounded to float16, plus its shape: fp32 and fp16 copies of one model match, bf16 ones do not)
and ``stack_signature`` (SHA-256 of the names-relative-to-the-block-stack and shapes of every
parameter in the layer's block stack, e.g. all of ``text_model.encoder.layers``: depth and widths).
Applying to another model is refused: layer missing, shape mismatch, or either hash differing.
A UNet patch (``target="unet"``: a cross-attention K/V projection) records the UNet's K/V signature
instead and is found by content in any UNet layout (:mod:`.patch_match`).

Names. The patch's layer name is matched exactly, else by dotted suffix in either direction, so a
patch made on ``CLIPModel`` (``text_model.encoder...``) applies to a ``CLIPTextModel`` or a wrapper
(``clip_l.transformer.text_model.encoder...``); when several layers match, the hash decides.

Stacking. Applying keeps the layer's original tensor in a registry on the module
(``model._unlearnkit_slug_patches``); the layer is always rewritten as original + the sum of the
applied deltas (in application order), and restored byte-exactly when its last patch is removed.
The hash is checked against that kept original, so patches made independently on one base (one per
concept, modular as in SLUG) stack in any number and order, on one layer or many. ``make_patch``
also fingerprints the original, so a patch made on an already-patched model stays valid for the base;
it lists the patches then applied in ``made_on_top_of`` and applying it without them only warns.
If the layer was changed behind the registry's back (weights reloaded), the registry entry is dropped
with a warning and the current weights become the base. Functions here modify ``model`` in place:
hosts clone first.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import io
from .patch_match import (
    PatchMismatchError,
    candidate_keys,
    fitting_key,
    layer_sha256,
    layer_signature,
    missing_message,
    stack_signature_of,
)
from .sd_model import UNET, is_cross_attention_kv

logger = logging.getLogger(__name__)

FORMAT = "unlearnkit.slug-patch"
FORMAT_VERSION = 1
REGISTRY = "_unlearnkit_slug_patches"
TARGETS = ("", "unet")


def _version() -> str:
    from importlib import import_module

    return str(getattr(import_module(__package__.rpartition(".")[0]), "__version__", "unknown"))


def stack_signature(model: nn.Module, name: str) -> str:
    """SHA-256 of (name relative to the block stack, shape) of every parameter in ``name``'s block stack."""
    return stack_signature_of(((n, tuple(p.shape)) for n, p in model.named_parameters()), name)


@dataclass(frozen=True)
class Patch:
    """One layer's SLUG delta (in the layer's dtype: fp16 for an fp16 model) and what it was made for."""

    layer: str
    delta: torch.Tensor
    concept: str
    step: float
    layer_sha256: str
    stack_signature: str
    metrics: dict[str, float] = field(default_factory=dict)
    made_on_top_of: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION
    target: str = ""  # "unet": a UNet cross-attention K/V layer; "": a text encoder / CLIP layer

    @property
    def id(self) -> str:
        """Content id: layer, delta bytes, concept, step and base hash."""
        digest = hashlib.sha256(
            f"{self.layer}\n{self.concept}\n{self.step!r}\n{self.layer_sha256}\n".encode()
        )
        digest.update(self.delta.detach().cpu().float().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass
class _LayerState:
    original: torch.Tensor  # kept on the CPU, so the host may move the model between devices
    patches: list[Patch]


def _registry(model: nn.Module) -> dict[str, _LayerState]:
    if REGISTRY not in model.__dict__:
        model.__dict__[REGISTRY] = {}
    return model.__dict__[REGISTRY]


def _effective(state: _LayerState, device: torch.device) -> torch.Tensor:
    """original + the sum of the applied deltas (summed in float32, application order), in the layer's
    dtype."""
    total = state.original.float()
    for patch in state.patches:
        total = total + patch.delta.float()
    return total.to(device=device, dtype=state.original.dtype)


def _base_weight(model: nn.Module, name: str, param: torch.Tensor) -> torch.Tensor:
    """The layer's unpatched weight: the registry's original if the registry is in sync, else the current
    one."""
    state = _registry(model).get(name)
    if state is None:
        return param
    if state.original.shape == param.shape and torch.equal(_effective(state, param.device), param.detach()):
        return state.original
    logger.warning(
        "layer %r changed outside UnlearnKit since patches were applied; forgetting %d patch(es) on it",
        name,
        len(state.patches),
    )
    del _registry(model)[name]
    return param


def make_patch(model: nn.Module, layer: str, delta: torch.Tensor, concept: str, step: float,
               metrics: dict[str, float] | None = None, dtype: torch.dtype | None = None,
               target: str = "") -> Patch:
    """A patch holding ``delta`` for ``layer`` of ``model`` (fingerprinted against the unpatched layer).

    The delta is stored in ``dtype`` (default: the layer's own dtype, so an fp16 model gets an fp16
    patch of half the size; the model cannot hold finer changes than its dtype anyway). ``target="unet"``:
    ``model`` is a UNet and ``layer`` a cross-attention K/V weight (see :mod:`.patch_match`).
    """
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
    if target == UNET and not is_cross_attention_kv(layer):
        raise ValueError(f"layer: {layer!r} is not a UNet cross-attention K/V projection (attn2.to_k / to_v)")
    if not concept or not concept.strip():
        raise ValueError(f"concept: expected a non-empty name, got {concept!r}")
    params = dict(model.named_parameters())
    if layer not in params:
        raise PatchMismatchError(f"layer: {layer!r} not in the model (e.g. {list(params)[:3]})")
    if tuple(delta.shape) != tuple(params[layer].shape):
        raise ValueError(
            f"delta: shape {tuple(delta.shape)} != layer {layer!r} shape {tuple(params[layer].shape)}"
        )
    dtype = dtype or params[layer].dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating dtype for the delta, got {dtype}")
    stored = delta.detach().to("cpu", dtype, copy=True)
    io.check_finite({layer: stored}, f"delta (as {dtype}; too large for it?)")
    applied = tuple(p.id for state in _registry(model).values() for p in state.patches)
    shapes = [(n, tuple(p.shape)) for n, p in params.items()]
    return Patch(layer, stored, concept.strip(), float(step),
                 layer_sha256(_base_weight(model, layer, params[layer])),
                 layer_signature(shapes, layer, target),
                 {k: float(v) for k, v in (metrics or {}).items()}, applied, target=target)


def save_patch(patch: Patch, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the patch atomically; an existing file is only replaced with ``overwrite=True``."""
    metadata = {
        "format": FORMAT,
        "format_version": str(patch.format_version),
        "layer": patch.layer,
        "concept": patch.concept,
        "step": repr(patch.step),
        "layer_sha256": patch.layer_sha256,
        "stack_signature": patch.stack_signature,
        "metrics": json.dumps(patch.metrics),
        "made_on_top_of": json.dumps(list(patch.made_on_top_of)),
        "id": patch.id,
        "created_by": f"unlearnkit {_version()}",
        **({"target": patch.target} if patch.target else {}),
    }
    return io.save_safetensors(path, {patch.layer: patch.delta}, metadata, overwrite=overwrite)


def load_patch(path: str | os.PathLike) -> Patch:
    """Read a patch file, checking its format, version, single tensor and content id."""
    tensors, meta = io.load_state_dict(path)
    where = f"patch file {str(path)!r}"
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where}: not an UnlearnKit SLUG patch (metadata format={meta.get('format')!r})")
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where}: format version {version} is newer than this UnlearnKit ({FORMAT_VERSION}); update it"
        )
    if list(tensors) != [meta.get("layer")]:
        raise ValueError(f"{where}: expected one tensor named {meta.get('layer')!r}, got {list(tensors)[:3]}")
    io.check_finite(tensors, where)
    try:
        patch = Patch(meta["layer"], tensors[meta["layer"]], meta["concept"], float(meta["step"]),
                      meta["layer_sha256"], meta["stack_signature"], json.loads(meta.get("metrics", "{}")),
                      tuple(json.loads(meta.get("made_on_top_of", "[]"))), version, meta.get("target", ""))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{where}: incomplete or malformed metadata: {exc}") from exc
    if meta.get("id") and meta["id"] != patch.id:
        raise ValueError(f"{where}: content id {patch.id} != recorded {meta['id']} (file altered or corrupt)")
    return patch


def check_patch(model: nn.Module, patch: Patch) -> str:
    """The model's name for the patch's layer; PatchMismatchError if the patch was not made for this model."""
    params = dict(model.named_parameters())
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    names = candidate_keys(shapes, patch)
    if not names:
        raise PatchMismatchError(missing_message(list(params), patch, "the model"))
    return fitting_key(shapes, names, patch, lambda n: _base_weight(model, n, params[n]))


def apply_patch(model: nn.Module, patch: Patch) -> str:
    """Add the patch's delta to its layer (in place); returns the model's name for that layer."""
    name = check_patch(model, patch)
    param = dict(model.named_parameters())[name]
    registry = _registry(model)
    state = registry.get(name)
    if state is not None and any(p.id == patch.id for p in state.patches):
        raise ValueError(f"patch {patch.concept!r} ({patch.id}) is already applied to {name!r}")
    applied = {p.id for s in registry.values() for p in s.patches}
    missing = [i for i in patch.made_on_top_of if i not in applied]
    if missing:
        logger.warning(
            "patch %r was made with patch(es) %s applied; they are not applied now", patch.concept, missing
        )
    if state is None:
        state = registry[name] = _LayerState(param.detach().to("cpu", copy=True), [])
    state.patches.append(patch)
    with torch.no_grad():
        param.copy_(_effective(state, param.device))
    logger.info(
        "applied SLUG patch %r (%s) to %s; %d patch(es) on that layer",
        patch.concept,
        patch.id,
        name,
        len(state.patches),
    )
    return name


def remove_patch(model: nn.Module, patch: Patch | str) -> str:
    """Take a patch (or its id) off again; the last removal restores the layer's original bytes."""
    patch_id = patch if isinstance(patch, str) else patch.id
    registry = _registry(model)
    for name, state in registry.items():
        kept = [p for p in state.patches if p.id != patch_id]
        if len(kept) == len(state.patches):
            continue
        param = dict(model.named_parameters())[name]
        if not torch.equal(_effective(state, param.device), param.detach()):
            raise ValueError(
                f"layer {name!r} changed outside UnlearnKit since the patch was applied; cannot remove "
                "exactly"
            )
        state.patches = kept
        with torch.no_grad():
            param.copy_(_effective(state, param.device) if kept else state.original)
        if not kept:
            del registry[name]
        return name
    applied = [(p.concept, p.id) for s in registry.values() for p in s.patches]
    raise ValueError(f"patch: {patch_id!r} is not applied to this model (applied: {applied or 'none'})")


def applied_patches(model: nn.Module) -> list[tuple[str, Patch]]:
    """(layer name, patch) for every patch applied to ``model``, in application order per layer."""
    return [(name, p) for name, state in _registry(model).items() for p in state.patches]
