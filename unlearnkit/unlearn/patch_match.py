"""Which weight a SLUG patch belongs to: architecture signatures and the layer lookup (models and files).

Text-encoder (and CLIP) patches record ``stack_signature``: the names-relative-to-the-block-stack and shapes
of every parameter in the layer's block stack. UNet patches (``target="unet"``, a cross-attention K/V
projection) record ``kv_signature``, the multiset of (k|v, shape) over every ``attn2.to_k`` / ``attn2.to_v``
weight: diffusers, LDM checkpoints and ComfyUI name the UNet's blocks differently but have the same K/V
shapes. Since block names differ between layouts, a UNet patch's weight is found by content — among the K/V
weights of its kind and shape, the one whose fp16 hash is the patch's ``layer_sha256`` — after its own name
(or a dotted suffix of it) is tried.
"""
from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import torch

from .pareto import _BLOCK
from .sd_model import UNET, is_cross_attention_kv, kv_kind

Shapes = Iterable[tuple[str, tuple[int, ...]]]


class PatchMismatchError(ValueError):
    """The patch was made for another model (layer missing, other shape, other weights)."""


class PatchLike(Protocol):
    layer: str
    concept: str
    delta: torch.Tensor
    layer_sha256: str
    stack_signature: str
    target: str


def layer_sha256(weight: torch.Tensor) -> str:
    """SHA-256 of a layer's values rounded to float16 (-0.0 counted as 0.0: hosts' weight maths may flip it),
    and its shape."""
    digest = hashlib.sha256(repr(tuple(weight.shape)).encode())
    digest.update((weight.detach().to("cpu", torch.float16) + 0.0).contiguous().numpy().tobytes())
    return digest.hexdigest()


def stack_signature_of(shapes: Shapes, name: str) -> str:
    """SHA-256 of (name relative to the block stack, shape) of every tensor in ``name``'s block stack."""
    m = _BLOCK.match(name)
    prefix = m.group(1) + "." if m else name
    rows = sorted(f"{n[len(prefix):]}:{tuple(shape)}" for n, shape in shapes if n.startswith(prefix))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def kv_signature(shapes: Shapes) -> str:
    """SHA-256 of the sorted (k|v, shape) of every cross-attention K/V weight: equal in every UNet layout."""
    rows = sorted(f"{kv_kind(n)}:{tuple(s)}" for n, s in shapes if is_cross_attention_kv(n))
    if not rows:
        raise PatchMismatchError("no cross-attention K/V projections (attn2.to_k / attn2.to_v) in the model")
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def layer_signature(shapes: Shapes, name: str, target: str = "") -> str:
    """The architecture fingerprint a patch of ``name`` records: K/V signature for the UNet, block stack
    else."""
    return kv_signature(shapes) if target == UNET else stack_signature_of(shapes, name)


def named_keys(keys: Sequence[str], layer: str) -> list[str]:
    """``layer`` itself, else every key it is a dotted suffix of (or that is one of it)."""
    if layer in keys:
        return [layer]
    return [k for k in keys if k.endswith("." + layer) or layer.endswith("." + k)]


def candidate_keys(shapes: Mapping[str, tuple[int, ...]], patch: PatchLike) -> list[str]:
    """Keys the patch may be for: by name; for a UNet patch also every K/V key of its kind and shape."""
    names = named_keys(list(shapes), patch.layer)
    if patch.target == UNET:
        kind, shape = kv_kind(patch.layer), tuple(patch.delta.shape)
        names += [k for k, s in shapes.items() if k not in names and is_cross_attention_kv(k)
                  and kv_kind(k) == kind and tuple(s) == shape]
    return names


def missing_message(keys: Sequence[str], patch: PatchLike, where: str) -> str:
    close = difflib.get_close_matches(patch.layer, list(keys), n=3, cutoff=0.5)
    return f"patch {patch.concept!r}: layer {patch.layer!r} missing from {where}; close: {close}"


def fitting_key(shapes: Mapping[str, tuple[int, ...]], names: Sequence[str], patch: PatchLike,
                base: Callable[[str], torch.Tensor]) -> str:
    """The one key among ``names`` whose shape, architecture and unpatched weights (``base(key)``) fit."""
    signature = layer_signature(shapes.items(), names[0], patch.target) if patch.target == UNET else None

    def problem(key: str) -> str | None:
        if tuple(shapes[key]) != tuple(patch.delta.shape):
            return f"layer {key!r} has shape {tuple(shapes[key])}, the patch {tuple(patch.delta.shape)}"
        if (signature or stack_signature_of(shapes.items(), key)) != patch.stack_signature:
            where = ("the UNet's cross-attention K/V layers" if signature
                     else f"the block stack around {key!r}")
            return f"{where} have other layers/shapes (another architecture)"
        if layer_sha256(base(key)) != patch.layer_sha256:
            return f"layer {key!r} holds other weights (hash {patch.layer_sha256[:12]} expected)"
        return None

    problems = {k: problem(k) for k in names}
    fits = [k for k, p in problems.items() if p is None]
    if len(fits) > 1:
        raise PatchMismatchError(f"patch {patch.concept!r}: layer {patch.layer!r} matches several identical "
                                 f"layers {fits}")
    if not fits:
        shown = list(dict.fromkeys(problems.values()))
        if len(shown) > 3:
            shown = shown[:2] + [f"… ({len(problems)} K/V weights of its kind and shape: none holds its "
                                 f"weights)"]
        raise PatchMismatchError(f"patch {patch.concept!r} was made for another model: " + "; ".join(shown))
    return fits[0]
