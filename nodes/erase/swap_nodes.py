"""ComfyUI node for Erase: swap a CLIP's text encoder for a concept-erased one (AdvUnlearn, Zhang et al.
NeurIPS 2024).

Loading and validation live in ``unlearnkit.textencoders`` (HF folders, single safetensors with HF/LDM/ComfyUI
keys, AdvUnlearn ``.pt`` files, weights-only). The node puts the new weights on a *clone* as ComfyUI
weight patches that replace each encoder tensor (``strength_model=0``: w <- 0·w + new), so the input
CLIP and every other clone of its module keep their weights, and ComfyUI's load/offload/backup apply.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...unlearnkit.textencoders import Layout, load_text_encoder_state
from ...unlearnkit.textencoders.dims import check_matches, mismatches
from ...unlearnkit.textencoders.loading import WEIGHT_FILES
from ..clip_weights import encoder_dims, text_encoders

logger = logging.getLogger(__name__)

CATEGORY = "UnlearnKit/Erase"
ENCODER_FOLDERS = ("text_encoders", "clip")  # 0.3.x name (includes models/clip) and the 2024 name


def encoder_folders() -> list[str]:
    try:
        import folder_paths
    except ImportError:  # imported outside ComfyUI (tools, the registry scanner)
        return []

    return [name for name in ENCODER_FOLDERS if name in folder_paths.folder_names_and_paths]


def encoder_files() -> list[str]:
    """Text-encoder files ComfyUI lists in its text_encoders / clip model folders."""
    names: set[str] = set()
    folders = encoder_folders()
    if not folders:
        return []
    import folder_paths

    for folder in folders:
        names.update(folder_paths.get_filename_list(folder))
    return sorted(names)


def encoder_source(name: str) -> Path:
    """The path to load for a listed name: the file, or its HF folder when it is a folder's weights file."""
    import folder_paths

    for folder in encoder_folders():
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            path = Path(path)
            if path.name in WEIGHT_FILES and (path.parent / "config.json").is_file():
                return path.parent  # HF CLIPTextModel folder: its config.json declares heads/activation too
            return path
    raise FileNotFoundError(
        f"encoder_name: {name!r} not found in the {'/'.join(encoder_folders())} model folders"
    )


def choose_encoder(clip: Any, source_dims: Any, what: str) -> Layout:
    """The CLIP's text encoder the source replaces: the only one, or the only one of matching size (SDXL)."""
    layouts = text_encoders(clip)
    if len(layouts) == 1:
        check_matches(source_dims, encoder_dims(clip, layouts[0]), what)
        return layouts[0]
    fits = [layout for layout in layouts if not mismatches(source_dims, encoder_dims(clip, layout))]
    if len(fits) != 1:
        sizes = {layout.prefix: encoder_dims(clip, layout).describe() for layout in layouts}
        raise ValueError(
            f"{what}: {source_dims.describe()} fits {len(fits)} of this CLIP's text encoders {sizes}; "
            "need exactly one"
        )
    return fits[0]


def swap_encoder(clip: Any, source: str | Path) -> Any:
    """A clone of ``clip`` whose text encoder is the one at ``source`` (dims checked first; input
    untouched)."""
    hf_sd, info = load_text_encoder_state(source)
    what = f"text encoder {str(source)!r}"
    layout = choose_encoder(clip, info.dims, what)
    current = clip.cond_stage_model.state_dict()
    replaced = [k for k in hf_sd if clip.patcher.patches.get(layout.prefix + k)]
    if replaced:
        logger.warning(
            "Swap Text Encoder: the input CLIP has weight patches (e.g. a LoRA) on %d encoder tensor(s); "
            "the swapped encoder replaces them",
            len(replaced),
        )
    patches = {}
    for key, value in hf_sd.items():
        target = layout.prefix + key
        patches[target] = (
            value.to(dtype=current[target].dtype),
        )  # a 'diff' that, with strength_model=0, sets w
    out = clip.clone()
    added = set(out.add_patches(patches, 1.0, 0.0))
    missing = sorted(set(patches) - added)
    if missing:
        raise ValueError(f"{what}: ComfyUI refused {len(missing)} key(s) of the CLIP, e.g. {missing[:3]}")
    logger.info("Swap Text Encoder: %s (%s layout, %s) -> %s", info.source, info.layout, info.dims.describe(),
                layout.prefix)
    return out


class SwapTextEncoderNode:
    """CLIP -> a clone with its text encoder replaced by a (concept-erased) encoder file."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The CLIP (text encoder) to swap; it is not changed."}),
                "encoder_name": (
                    encoder_files(),
                    {
                        "tooltip": "A text encoder from models/text_encoders or models/clip: "
                        "an HF folder's model.safetensors, a single safetensors (HF/LDM/"
                        "ComfyUI keys) or an AdvUnlearn .pt."
                    },
                ),
            }
        }

    RETURN_TYPES = ("CLIP",)
    OUTPUT_TOOLTIPS = ("A clone of the CLIP with the erased text encoder's weights (the input is "
                       "unchanged).",)
    FUNCTION = "swap"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Replace the CLIP's text encoder with a concept-erased one (e.g. AdvUnlearn's). "
                   "The size must match the CLIP's own encoder.")

    def swap(self, clip: Any, encoder_name: str) -> tuple[Any]:
        return (swap_encoder(clip, encoder_source(encoder_name)),)
