"""The models erasure works on: the UNet, text encoder, tokenizer, scheduler and VAE of an SD1.x/2.x
pipeline."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..textencoders.loading import swap_text_encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    vae: torch.nn.Module | None
    source: str  # "tinyworld:<unet>" or the folder


def check_components(c: Components) -> None:
    """The encoder must produce what the UNet cross-attends to; ValueError naming both widths."""
    width = int(c.text_encoder.config.hidden_size)
    cross = c.unet.config.cross_attention_dim
    cross = cross if isinstance(cross, int) else cross[0]
    if width != int(cross):
        raise ValueError(
            f"text encoder: width {width} does not match the UNet's cross-attention width {cross} "
            f"of {c.source!r}"
        )


def from_pipeline(pipe, source: str) -> Components:
    """Components of a diffusers ``StableDiffusionPipeline`` object."""
    return Components(
        pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, getattr(pipe, "vae", None), source
    )


def prepare_components(comps: Components, text_encoder: str | os.PathLike | None = None) -> Components:
    """``text_encoder`` (any supported file/folder) replaces the encoder (dims checked); UNet frozen, eval
    mode."""
    if text_encoder is not None:
        comps = replace(comps, text_encoder=swap_text_encoder(comps.text_encoder, text_encoder))
    check_components(comps)
    comps.unet.eval().requires_grad_(False)
    comps.text_encoder.eval()
    return comps


def load_components(pipeline: str | os.PathLike, text_encoder: str | os.PathLike | None = None) -> Components:
    """The components of a diffusers pipeline folder (SD1.x/2.x layout), read offline."""
    folder = Path(pipeline)
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"pipeline: {str(folder)!r} is not a diffusers pipeline folder (no model_index.json)"
        )
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        local_files_only=True,
    )
    return prepare_components(from_pipeline(pipe, str(folder)), text_encoder)
