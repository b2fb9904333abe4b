"""The tiny world as the models erasure works on (the default of ``erase train`` / ``erase attack``)."""
from __future__ import annotations

import os

from ...erase.components import Components, from_pipeline, prepare_components
from ..pipeline import load_pipeline


def tiny_components(unet: str = "paragon", text_encoder: str | os.PathLike | None = None) -> Components:
    """The tiny world's pipeline with UNet ``unet`` ("paragon", "base", "style/bold", …) as erase
    Components."""
    return prepare_components(from_pipeline(load_pipeline(unet=unet), f"tinyworld:{unet}"), text_encoder)
