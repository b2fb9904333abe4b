"""The output of ``erase train``: one safetensors text encoder (canonical HF keys) with provenance
metadata."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import io
from ..textencoders.dims import TextEncoderDims
from ..textencoders.layouts import to_hf
from ..textencoders.loading import META_CONFIG

logger = logging.getLogger(__name__)


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over sorted keys, dtypes, shapes and bytes: the identity of an in-memory state dict."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}\n".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def encoder_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's weights in canonical HF keys (``text_model.`` dropped on transformers 4)."""
    if hasattr(encoder, "canonical_state"):  # SDTextEncoder (one or two towers)
        return encoder.canonical_state()
    hf, _, _ = to_hf(encoder.state_dict(), what="text encoder")
    return hf


def check_output(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse early (before hours of training) an output that is not .safetensors or already exists."""
    out = Path(out)
    if out.suffix.lower() not in io.SAFETENSORS_SUFFIXES:
        raise ValueError(f"out: {str(out)!r} must end in .safetensors")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {str(out)!r}: already exists; choose another name")
    return out


def save_erased_encoder(out: str | os.PathLike, encoder: torch.nn.Module, info: Mapping[str, Any],
                        overwrite: bool = False) -> Path:
    """Write the encoder atomically; ``info`` (concept, mode, steps, base_sha256, …) goes into metadata."""
    out = check_output(out, overwrite)
    state = encoder_state(encoder)
    dims = TextEncoderDims.from_hf_config(encoder.config)
    meta = {
        "format": "pt",
        "unlearnkit.kind": "clip_text_encoder",
        "unlearnkit.layout": "hf",
        META_CONFIG: json.dumps(dims.to_dict(), sort_keys=True),
    }
    for key, value in info.items():
        meta[f"unlearnkit.erase.{key}"] = value if isinstance(value, str) else json.dumps(value)
    path = io.save_safetensors(out, state, meta, overwrite=overwrite)
    logger.info("wrote erased text encoder %s", path)
    return path


def tower_file(hf_state: Mapping[str, torch.Tensor], dtype: torch.dtype,
               projection: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One erased tower as a file's tensors: HF ``CLIPTextModel`` keys (``text_model.…``, what ComfyUI's CLIP
    loaders, Swap Text Encoder and the webui read) in ``dtype``; OpenCLIP-G keeps its text projection."""
    out = {"text_model." + k: v.detach().to("cpu", dtype).contiguous() for k, v in hf_state.items()}
    if projection is not None:
        out["text_projection.weight"] = projection.detach().to("cpu", dtype).contiguous()
    return out


def tower_metadata(dims: TextEncoderDims, info: Mapping[str, str]) -> dict[str, str]:
    """The metadata of an erased tower's file: kind, layout, dims (heads / activation are not in the
    weights) and ``unlearnkit.erase.*`` provenance."""
    meta = {"unlearnkit.kind": "clip_text_encoder", "unlearnkit.layout": "hf",
            META_CONFIG: json.dumps(dims.to_dict(), sort_keys=True)}
    meta.update({f"unlearnkit.erase.{k}": v for k, v in info.items()})
    return meta
