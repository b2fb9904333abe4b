"""SLUG patches applied to weight *files*: a CLIP / SD text encoder / full checkpoint -> a new safetensors
file.

The same identity rules as :mod:`.patches` hold on the file's tensors (layer matched by name or dotted
suffix, so a patch made on ``CLIPModel`` fits ``cond_stage_model.transformer.text_model…`` in an LDM
checkpoint; shape, block-stack signature and fp16 hash must agree; a UNet patch is found by content among
the cross-attention K/V weights, in diffusers or LDM keys). Several patches (one per concept,
made on one base) are summed in float32 and added once; the file keeps its dtype and other tensors.
The output records the patches it holds, so applying one twice is refused with a clear message.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .. import io
from .patch_match import PatchMismatchError, candidate_keys, fitting_key
from .patches import Patch, load_patch

logger = logging.getLogger(__name__)

META_APPLIED = "unlearnkit.slug_patches"


def state_key(state: Mapping[str, torch.Tensor], patch: Patch) -> str:
    """The key of ``state`` the patch was made for; PatchMismatchError (naming why) otherwise."""
    shapes = {k: tuple(v.shape) for k, v in state.items() if v.is_floating_point()}
    names = candidate_keys(shapes, patch)
    if not names:
        raise PatchMismatchError(f"patch {patch.concept!r}: no tensor named like {patch.layer!r} in the file "
                                 f"(an SD2/open_clip layout? convert it with `erase convert` first)")
    return fitting_key(shapes, names, patch, state.__getitem__)


def applied_in(metadata: Mapping[str, str]) -> list[dict[str, str]]:
    """The patches a file written by :func:`apply_patches_to_file` records (empty for other files)."""
    try:
        return list(json.loads(metadata.get(META_APPLIED, "[]")))
    except ValueError:
        return []


def apply_patches_to_state(
    state: Mapping[str, torch.Tensor], patches: Sequence[Patch]
) -> dict[str, torch.Tensor]:
    """A new dict with every patch's delta added to its tensor (sum in float32, cast back to the tensor's
    dtype)."""
    if not patches:
        raise ValueError("patches: give at least one patch")
    ids = [p.id for p in patches]
    if len(set(ids)) != len(ids):
        raise ValueError(f"patches: the same patch is given twice ({ids})")
    totals: dict[str, torch.Tensor] = {}
    for patch in patches:
        key = state_key(state, patch)
        totals[key] = totals.get(key, torch.zeros(patch.delta.shape)) + patch.delta.float()
        logger.info("patch %r (%s) -> %s", patch.concept, patch.id, key)
    out = dict(state)
    for key, total in totals.items():
        out[key] = (state[key].float() + total).to(state[key].dtype)
    io.check_finite({k: out[k] for k in totals}, "patched weights")
    return out


def apply_patches_to_file(
    src: str | os.PathLike,
    out: str | os.PathLike,
    patch_paths: Sequence[str | os.PathLike],
    overwrite: bool = False,
) -> tuple[Path, list[dict[str, str]]]:
    """Read ``src`` (safetensors or a weights-only pickle), add the patches, write ``out`` (safetensors,
    atomic)."""
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"output {str(out)!r}: already exists; choose another name or pass overwrite")
    if Path(out).resolve() == Path(src).resolve():
        raise ValueError(f"out: {str(out)!r} is the source file; write the patched weights to a new file")
    patches = [load_patch(p) for p in patch_paths]
    state, metadata = io.load_state_dict(src)
    already = {entry.get("id") for entry in applied_in(metadata)}
    for patch in patches:
        if patch.id in already:
            raise ValueError(f"patch {patch.concept!r} ({patch.id}) is already applied in {str(src)!r}")
    try:
        patched = apply_patches_to_state(state, patches)
    except PatchMismatchError as exc:
        if already:
            raise PatchMismatchError(
                f"{exc}; {str(src)!r} already holds patches {sorted(already)}: apply all patches "
                f"to the original file in one call instead"
            ) from exc
        raise
    records = applied_in(metadata) + [{"id": p.id, "concept": p.concept, "layer": p.layer} for p in patches]
    meta = {**metadata, META_APPLIED: json.dumps(records)}
    meta.setdefault("format", "pt")
    return io.save_safetensors(out, patched, meta, overwrite=overwrite), records
