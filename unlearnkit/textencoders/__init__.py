"""Text-encoder files: every key layout people ship, their dims, loading, converting and swapping.

Shared by Erase (AdvUnlearn encoders), Unlearn (SLUG on the SD text encoder), the ComfyUI nodes and
the webui extension::

    state, info = load_text_encoder_state("vangogh_unlearned/")      # HF folder, safetensors, .pt, .bin
    encoder = swap_text_encoder(pipe.text_encoder, "erased.safetensors")  # a new model, target untouched
"""
from .dims import TextEncoderDims, infer_dims
from .layouts import OUTPUT_LAYOUTS, Layout, detect_layout, from_hf, to_hf
from .loading import (
    TextEncoderInfo,
    build_text_encoder,
    convert_text_encoder,
    load_text_encoder_state,
    prepare_state,
    swap_text_encoder,
    target_dims,
)

__all__ = [
    "OUTPUT_LAYOUTS", "Layout", "TextEncoderDims", "TextEncoderInfo", "build_text_encoder",
    "convert_text_encoder", "detect_layout", "from_hf", "infer_dims", "load_text_encoder_state",
    "prepare_state", "swap_text_encoder", "target_dims", "to_hf",
]
