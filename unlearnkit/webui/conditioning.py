"""The panel's text-encoder edits (an erased encoder, SLUG patches) around the webui's conditioning.

AUTOMATIC1111 and Forge compute a generation's conds in ``p.setup_conds`` (txt2img's calls
``calculate_hr_conds`` inside it) and cache them on the processing class (``cached_c`` / ``cached_uc``): the
edits are applied in place for the duration of that call only (:class:`EncoderEdits` restores the exact
bytes), and the cached conds are cleared whenever the edits they were computed with change. Host objects come
in as arguments (``p``, the processing class, the current model); nothing here imports the webui.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..textencoders.loading import load_text_encoder_state
from ..unlearn.patches import PatchMismatchError, load_patch
from .encoder_edits import EncoderEdits
from .model_files import FileCache, file_key, panel_file
from .settings import PanelSettings

logger = logging.getLogger(__name__)

CACHE_ATTRS = ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc")


def encoder_module(sd_model: Any) -> Any:
    """The module tree holding the text encoder(s): Forge's CLIP patcher model, A1111's cond stage."""
    forge = getattr(sd_model, "forge_objects", None)
    if forge is not None:
        return forge.clip.cond_stage_model
    return getattr(sd_model, "cond_stage_model", None) or sd_model.conditioner


def plan_edits(settings: PanelSettings, models_path: str | os.PathLike,
               files: FileCache) -> tuple[Any, list, tuple]:
    """(swap state dict or None, patches, signature) of the panel's encoder edits (files loaded once)."""
    swap, patches, signature = None, [], ()
    if settings.text_encoder:
        path = panel_file(models_path, "text_encoders", settings.text_encoder)
        if path.is_file():
            swap = files.get(path, lambda q: load_text_encoder_state(q)[0], "te")
        else:  # an HF folder: read each time (it has no single file identity to cache by)
            swap = load_text_encoder_state(path)[0]
        signature += (settings.text_encoder, file_key(path) if path.is_file() else str(path))
    for name in settings.slug_patches:
        patch = files.get(panel_file(models_path, "slug_patches", name), load_patch, "slug")
        if patch.target == "unet":
            raise PatchMismatchError(f"SLUG patch {name!r} edits a UNet layer; the panel applies "
                                     f"text-encoder patches only (write it into the checkpoint: `unlearn "
                                     f"apply`)")
        patches.append(patch)
        signature += (patch.id,)
    return swap, patches, signature


def used_files(settings: PanelSettings, models_path: str | os.PathLike) -> list[Path]:
    """The gate, encoder and patch files the settings use (what the files cache keeps)."""
    wanted = [("gates", settings.gate_file if settings.gate == "classifier" else ""),
              ("text_encoders", settings.text_encoder)]
    wanted += [("slug_patches", name) for name in settings.slug_patches]
    return [panel_file(models_path, kind, name) for kind, name in wanted if name]


def clear_cond_caches(p: Any, processing_class: Any) -> None:
    """Empty the webui's cached conds in place (instance and class-level lists share objects)."""
    for holder in (p, type(p), processing_class):
        for attr in CACHE_ATTRS:
            cache = getattr(holder, attr, None) if holder is not None else None
            if isinstance(cache, list):
                cache[:] = [None] * len(cache)


class CondCacheGuard:
    """Remembers which encoder edits the webui's cached conds were computed with; clears them on a change."""

    def __init__(self) -> None:
        self.signature: tuple | None = None  # None: unknown (nothing generated yet)

    def use(self, p: Any, processing_class: Any, signature: tuple) -> bool:
        """Clear the caches if ``signature`` differs from the last one; True when they were cleared."""
        changed = self.signature != signature and (self.signature is not None or bool(signature))
        if changed:
            clear_cond_caches(p, processing_class)
            logger.info("UnlearnKit: text encoder changed; cleared the webui's cached conditionings")
        self.signature = signature
        return changed


def wrap_method(obj: Any, name: str, around: Callable) -> None:
    """obj.name(*a, **k) becomes around(original, *a, **k) for this object only."""
    original = getattr(obj, name)
    setattr(obj, name, lambda *a, **k: around(original, *a, **k))


def edit_conds(p: Any, edits: tuple[Any, list, tuple], guard: CondCacheGuard, processing_class: Any,
               current_model: Callable[[], Any], warm: Callable[[Any], None], what: str) -> None:
    """Apply ``edits`` (from :func:`plan_edits`) around every conditioning computation of ``p``.

    ``warm(model)`` lets the host merge its LoRAs into the encoder first, so its own backups hold the unedited
    weights; ``current_model()`` is the webui's loaded model at the time the conds are computed.
    """
    swap, patches, signature = edits
    depth = [0]  # txt2img's setup_conds calls calculate_hr_conds: edit once, at the outer call

    def around(original: Callable, *a: Any, **k: Any) -> Any:
        if depth[0]:
            return original(*a, **k)
        guard.use(p, processing_class, signature)
        model = current_model()
        warm(model)
        depth[0] += 1
        try:
            with EncoderEdits(encoder_module(model), swap, patches, what=what):
                return original(*a, **k)
        except PatchMismatchError as exc:
            if swap is None:
                raise
            raise ValueError(f"slug patches: {exc}. A SLUG patch records the layer it was made on; these "
                             f"were not made on {what}: use them without it, or patches made on it") from exc
        finally:
            depth[0] -= 1

    for method in ("setup_conds", "calculate_hr_conds"):
        if callable(getattr(p, method, None)):
            wrap_method(p, method, around)
