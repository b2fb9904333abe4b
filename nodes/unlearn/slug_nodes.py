"""ComfyUI nodes for SLUG, Single Layer Unlearning Gradient (Cai et al. 2024, arXiv 2407.11867).

"SLUG Unlearn": a few images of a concept + its name -> one gradient pass over the CLIP text encoder picks
one layer and a step -> a patch file (written into the output folder, never replacing one), the patched
CLIP and the importance-vs-alignment plot. "Apply SLUG Patch": patch files -> a patched CLIP. Patches go
on a clone (comfy_patches.py), so the input CLIP is untouched. The run itself is slug_job.py, the towers
towers.py; the maths lives in ``unlearnkit.unlearn``; ComfyUI is imported inside functions.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ...unlearnkit.unlearn import load_patch
from ...unlearnkit.unlearn.sd_model import UNET
from .comfy_patches import (
    NONE,
    applied_slug_patches,
    apply_slug_patches,
    patch_file_path,
    patch_files,
    write_patch,
)
from .sd_job import run_sd
from .slug_job import SlugRequest, run_on_clip, slug_report
from .towers import load_tower, tower_names

logger = logging.getLogger(__name__)

CATEGORY = "UnlearnKit/Unlearn"


class SlugUnlearnNode:
    """CLIP + forget images + concept name -> patched CLIP, patch file, importance-vs-alignment plot."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "clip": (
                    "CLIP",
                    {"tooltip": "The SD text encoder to edit (not changed; a patched clone is returned)."},
                ),
                "forget_images": ("IMAGE", {"tooltip": "A handful of images of the concept to forget."}),
                "concept": (
                    "STRING",
                    {"default": "", "tooltip": "What the images show, e.g. 'bold style' or a name."},
                ),
                "image_tower": (
                    tower_names(),
                    {
                        "tooltip": "A full CLIP whose text tower is this text encoder: the tiny "
                        "world's, or an HF CLIPModel folder in models/clip_vision."
                    },
                ),
                "filename_prefix": ("STRING", {"default": "slug/patch", "tooltip": "Where the patch file "
                                               "goes, under output/slug_patches/ (never replacing one)."}),
            },
            "optional": {
                "forget_captions": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "Text paired with the forget "
                        "images, written like your prompts (one line for all, or one per image); "
                        "empty: the concept.",
                    },
                ),
                "retain_images": (
                    "IMAGE",
                    {"tooltip": "Images to keep working (tiny world: its own images if empty)."},
                ),
                "retain_captions": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "One caption per retain image."},
                ),
                "layer": (
                    "STRING",
                    {"default": "", "tooltip": "Edit this layer (empty: SLUG picks from the Pareto front)."},
                ),
                "retain_drop": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 1.0, "step": 0.01,
                                          "tooltip": "How much retain accuracy the step search may "
                                                     "give up for forgetting."}),
                "max_evals": ("INT", {"default": 10, "min": 2, "max": 50,
                                      "tooltip": "Step sizes the search may try per layer."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                                 "tooltip": "Seed of the retain set drawn when none is given."}),
                "model": ("MODEL", {"tooltip": "The SD model: with a VAE, SLUG reads the text as its UNet "
                                    "does (cross-attention keys/values of every token) and may edit a UNet "
                                    "layer."}),
                "vae": ("VAE", {"tooltip": "The model's VAE (needed with model)."}),
                "anchor": ("STRING", {"default": "plain", "tooltip": "With model: what the captions say "
                                      "instead of the concept (e.g. 'plain' for a style, 'a painting' for an "
                                      "artist)."}),
            },
        }

    RETURN_TYPES = ("CLIP", "STRING", "IMAGE", "STRING", "MODEL")
    RETURN_NAMES = ("clip", "patch_path", "layer_plot", "report", "model")
    OUTPUT_TOOLTIPS = ("A patched clone of the CLIP (the input is unchanged; the CLIP itself when SLUG chose "
                       "a UNet layer).",
                       "The patch file written (give it to Apply SLUG Patch later).",
                       "Every layer's importance vs gradient alignment; red: the layer edited.",
                       "What SLUG did, with a warning when its step search missed a target (show it with "
                       "Show Text).",
                       "With a model input: the model, patched when SLUG chose a UNet layer.")
    FUNCTION = "unlearn"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Forget a concept by editing one layer of the text encoder (SLUG); writes a small patch file."
    )

    def unlearn(
        self, clip: Any, forget_images: torch.Tensor, concept: str, image_tower: str, filename_prefix: str,
        forget_captions: str = "", retain_images: torch.Tensor | None = None, retain_captions: str = "",
        layer: str = "", retain_drop: float = 0.05, max_evals: int = 10, seed: int = 0, model: Any = None,
        vae: Any = None, anchor: str = "plain",
    ) -> tuple[Any, str, torch.Tensor, str, Any]:
        request = SlugRequest(
            concept=concept, forget_captions=forget_captions, retain_captions=retain_captions, layer=layer,
            retain_drop=retain_drop, max_evals=max_evals, seed=seed, anchor=anchor,
        )
        tower = load_tower(image_tower)
        if model is None:
            patch, plot = run_on_clip(clip, tower, forget_images, retain_images, request)
        else:
            patch, plot = run_sd(clip, model, vae, tower, forget_images, retain_images, request)
        applied = applied_slug_patches(clip.patcher)
        applied += applied_slug_patches(model) if model is not None else []
        patch = replace(patch, made_on_top_of=tuple(p.id for _, p, _ in applied))
        path = write_patch(patch, filename_prefix)
        logger.info(
            "SLUG Unlearn: wrote %s (%s, layer %s, step %.4g)", path, patch.concept, patch.layer, patch.step
        )
        report = slug_report(patch, str(path))
        if not patch.metrics.get("search_success", 1.0):
            logger.warning("SLUG Unlearn: %s", report.splitlines()[-1])
        if patch.target == UNET:
            return clip, str(path), plot, report, apply_slug_patches(model, [(str(path), patch)])
        return apply_slug_patches(clip, [(str(path), patch)]), str(path), plot, report, model


class ApplySlugPatchNode:
    """CLIP + SLUG patch file(s) -> a patched clone."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        files = patch_files()
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The SD text encoder to patch (a patched clone is returned)."}),
                "patch_name": (
                    files,
                    {"tooltip": "A patch from models/slug_patches or output/slug_patches."},
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 4.0,
                        "step": 0.05,
                        "display": "slider",
                        "tooltip": "Scales the edit (1 = the step SLUG found).",
                    },
                ),
            },
            "optional": {
                "patch_name_2": (files, {"tooltip": "Another patch to stack (none: skip)."}),
                "patch_name_3": (files, {"tooltip": "A third patch to stack (none: skip)."}),
                "patch_path": (
                    "STRING",
                    {"forceInput": True, "tooltip": "A patch file path, e.g. from SLUG Unlearn."},
                ),
                "model": ("MODEL", {"tooltip": "The SD model, for patches of a UNet layer."}),
            },
        }

    RETURN_TYPES = ("CLIP", "MODEL")
    OUTPUT_TOOLTIPS = ("A clone of the CLIP with the text-encoder patches applied (the input is unchanged).",
                       "With a model input: a clone of the MODEL with the UNet patches applied.")
    FUNCTION = "apply"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Apply SLUG patch files (stackable, one per concept) to the CLIP, or to the MODEL for a "
                   "UNet layer; patches for another model are refused.")

    def apply(
        self, clip: Any, patch_name: str, strength: float, patch_name_2: str = NONE, patch_name_3: str = NONE,
        patch_path: str | None = None, model: Any = None,
    ) -> tuple[Any, Any]:
        paths = [patch_file_path(n) for n in (patch_name, patch_name_2, patch_name_3) if n and n != NONE]
        paths += [patch_path] if patch_path else []
        if not paths:
            raise ValueError("patch_name: choose at least one patch file (or connect patch_path)")
        patches = [(p, load_patch(p)) for p in paths]
        text = [(p, patch) for p, patch in patches if patch.target != UNET]
        unet = [(p, patch) for p, patch in patches if patch.target == UNET]
        if unet and model is None:
            raise ValueError(f"model: {Path(unet[0][0]).name!r} patches a UNet layer; connect the MODEL")
        return (apply_slug_patches(clip, text, strength) if text else clip,
                apply_slug_patches(model, unet, strength) if unet else model)
