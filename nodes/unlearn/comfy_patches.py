"""SLUG patches as ComfyUI weight patches: patch folders, new patch files, patches on a CLIP / MODEL clone.

A SLUG patch goes on a *clone* (of the CLIP, or of the MODEL for a UNet K/V patch) as a ComfyUI "diff"
weight patch (ComfyUI patches, backs up and offloads the weights), so the input is untouched; ``SlugDiff``
remembers which SLUG patch an entry is, so later nodes can tell SLUG patches from LoRAs or swapped encoders.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...unlearnkit.unlearn import Patch, PatchMismatchError, save_patch
from ...unlearnkit.unlearn.patch_files import state_key
from ...unlearnkit.unlearn.sd_model import UNET, is_cross_attention_kv
from ..clip_weights import effective_weights

logger = logging.getLogger(__name__)

PATCH_FOLDER = "slug_patches"
NONE = "none"


class SlugDiff(tuple):
    """A ComfyUI 'diff' weight patch (a 1-tuple holding the delta) that remembers which SLUG patch it is."""

    patch: Patch

    def __new__(cls, patch: Patch) -> SlugDiff:
        obj = super().__new__(cls, (patch.delta,))
        obj.patch = patch
        return obj

    def __getnewargs__(self) -> tuple[Patch]:  # type: ignore[override]
        return (self.patch,)


def is_slug(value: Any) -> bool:
    return isinstance(value, SlugDiff)


def not_slug(value: Any) -> bool:
    return not isinstance(value, SlugDiff)


def ensure_patch_folder() -> None:
    """Register models/slug_patches and <output>/slug_patches (where SLUG Unlearn writes) with
    folder_paths."""
    import folder_paths

    wanted = [os.path.join(folder_paths.models_dir, PATCH_FOLDER),
              os.path.join(folder_paths.get_output_directory(), PATCH_FOLDER)]
    entry = folder_paths.folder_names_and_paths.get(PATCH_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[PATCH_FOLDER] = (wanted, {".safetensors"})
        return
    entry[0].extend(path for path in wanted if path not in entry[0])


def patch_files() -> list[str]:
    try:
        import folder_paths
    except ImportError:  # imported outside ComfyUI
        return [NONE]

    ensure_patch_folder()
    return [NONE] + folder_paths.get_filename_list(PATCH_FOLDER)


def patch_file_path(name: str) -> str:
    import folder_paths

    ensure_patch_folder()
    path = folder_paths.get_full_path(PATCH_FOLDER, name)
    if path is None:
        raise FileNotFoundError(
            f"patch_name: {name!r} not found in the {PATCH_FOLDER} folders "
            f"{folder_paths.get_folder_paths(PATCH_FOLDER)}"
        )
    return path


def applied_slug_patches(patcher: Any) -> list[tuple[str, Patch, float]]:
    """(ComfyUI key, patch, strength) of every SLUG patch on this clone, in application order per key."""
    return [(key, entry[1].patch, float(entry[0])) for key, entries in patcher.patches.items()
            for entry in entries if is_slug(entry[1])]


def patcher_of(target: Any) -> Any:
    """The ModelPatcher of a CLIP (its ``patcher``) or of a MODEL (itself)."""
    return getattr(target, "patcher", target)


def apply_slug_patches(target: Any, patches: Sequence[tuple[str, Patch]], strength: float = 1.0) -> Any:
    """A clone of ``target`` (a CLIP, or a MODEL for UNet patches) with the patches added, each checked
    against the weights before any SLUG patch (a UNet patch is found by content among the K/V weights)."""
    out = target.clone()
    patcher = patcher_of(out)
    applied = {patch.id for _, patch, _ in applied_slug_patches(patcher)}
    layers = tuple(p.layer for _, p in patches)
    unet = any(p.target == UNET for _, p in patches)

    def named(key: str) -> bool:
        return (unet and is_cross_attention_kv(key)) or any(
            key == n or key.endswith("." + n) or n.endswith("." + key) for n in layers)

    base = effective_weights(patcher, keep=not_slug, only=named)  # LoRAs / swapped encoders count, SLUG not
    for source, patch in patches:
        what = f"patch file {Path(source).name!r}"
        if patch.id in applied:
            raise ValueError(f"{what}: patch {patch.concept!r} ({patch.id}) is already applied to this CLIP")
        try:
            key = state_key(base, patch)
        except PatchMismatchError as exc:
            raise PatchMismatchError(f"{what}: {exc}") from exc
        missing = [i for i in patch.made_on_top_of if i not in applied]
        if missing:
            logger.warning(
                "%s was made with SLUG patch(es) %s applied; they are not applied here", what, missing
            )
        if not out.add_patches({key: SlugDiff(patch)}, float(strength)):
            raise ValueError(f"{what}: ComfyUI did not accept a patch for {key!r}")
        applied.add(patch.id)
        logger.info("SLUG patch %r (%s) -> %s, strength %g", patch.concept, patch.id, key, strength)
    return out


def new_patch_path(prefix: str) -> Path:
    """<output>/slug_patches/<prefix>_NNNNN.safetensors: the first number not taken."""
    import folder_paths

    rel = Path(prefix.strip().replace("\\", "/") or "slug")
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"filename_prefix: {prefix!r} must be a relative name inside the output folder")
    folder = Path(folder_paths.get_output_directory()) / PATCH_FOLDER / rel.parent
    number = 1
    while (folder / f"{rel.name}_{number:05d}.safetensors").exists():
        number += 1
    return folder / f"{rel.name}_{number:05d}.safetensors"


def write_patch(patch: Patch, prefix: str) -> Path:
    """Save under a new name, atomically; a name is reserved by exclusive creation, so no file is ever
    replaced."""
    for _ in range(1000):
        path = new_patch_path(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(
                path, "x"
            ):  # fails if any process (another run, another ComfyUI) took the name meanwhile
                pass
        except FileExistsError:
            continue
        try:
            return save_patch(patch, path, overwrite=True)  # atomically replaces our own empty placeholder
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    raise FileExistsError(f"filename_prefix: could not find a free name for {prefix!r}")
