"""Load a (concept-erased) CLIP text encoder in any layout, validate it, and swap it into a model.

Accepted sources: an HF ``CLIPTextModel`` folder (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, the layout of the released OPTML-Group/AdvUnlearn subfolders; also a
diffusers pipeline folder's ``text_encoder/``), a single safetensors file with HF keys or
LDM/webui/ComfyUI prefixes (SD2 open_clip keys are converted), and raw ``.pt`` state dicts
such as AdvUnlearn's ``text_encoder.text_model.…``. Pickles load with ``weights_only=True``
only (through ``unlearnkit.io``).
"""
from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import io
from .dims import TextEncoderDims, check_complete, check_matches, infer_dims, merge_declared
from .layouts import detect_layout, from_hf, to_hf

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
META_CONFIG = "unlearnkit.config"
SD2_LAYOUTS = ("ldm_sd2_open_clip", "sgm_sd2_open_clip")  # OpenCLIP ViT-H: GELU, 64-wide heads

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TextEncoderInfo:
    """What was loaded: from where, in which layout, with which dims."""

    source: str  # the path given (file or folder), or a description of an in-memory dict
    weights_file: str | None  # the file actually read
    layout: str  # detected layout name, see layouts.py
    prefix: str  # key prefix the encoder had in the source
    dims: TextEncoderDims
    dtype: str
    dropped_keys: tuple[str, ...] = ()
    sha256: str | None = None  # of weights_file, when asked for

    def to_metadata(self) -> dict[str, str]:
        """String metadata for a converted safetensors file (provenance + config dims)."""
        meta = {
            "format": "pt",
            "unlearnkit.kind": "clip_text_encoder",
            "unlearnkit.source": Path(self.weights_file or self.source).name,
            "unlearnkit.source_layout": self.layout,
            "unlearnkit.dtype": self.dtype,
            META_CONFIG: json.dumps(self.dims.to_dict(), sort_keys=True),
        }
        if self.sha256:
            meta["unlearnkit.source_sha256"] = self.sha256
        return meta

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "weights_file": self.weights_file,
            "layout": self.layout,
            "prefix": self.prefix,
            "dims": self.dims.to_dict(),
            "dtype": self.dtype,
            "dropped_keys": list(self.dropped_keys),
            "sha256": self.sha256,
        }


def _read_config(config_path: Path) -> TextEncoderDims:
    try:
        return TextEncoderDims.from_hf_config(json.loads(config_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"text encoder config {str(config_path)!r}: not a CLIP text config: {exc!r}"
        ) from exc


def _weights_in_folder(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if any((folder / name).is_file() for name in SHARD_INDEX_FILES):
        raise ValueError(
            f"text encoder folder {str(folder)!r}: sharded weights are not supported; merge them first"
        )
    raise ValueError(
        f"text encoder folder {str(folder)!r}: has config.json but none of {WEIGHT_FILES}; "
        f"it holds {sorted(p.name for p in folder.iterdir())[:10]}"
    )


def resolve_source(path: PathLike) -> tuple[Path, TextEncoderDims | None]:
    """(weights file, dims declared by a config.json) for a file, an HF folder or a pipeline folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text encoder {str(path)!r}: does not exist")
    if path.is_file():
        return path, None
    for folder in (path, path / "text_encoder"):
        if (folder / "config.json").is_file():
            return _weights_in_folder(folder), _read_config(folder / "config.json")
    candidates = sorted(p.name for p in path.iterdir() if (p / "config.json").is_file())
    hint = f"; it holds several, pick one: {candidates}" if candidates else ""
    raise ValueError(
        f"text encoder folder {str(path)!r}: no config.json (not an HF CLIPTextModel folder){hint}"
    )


def _declared_by_metadata(metadata: Mapping[str, str], what: str) -> TextEncoderDims | None:
    if META_CONFIG not in metadata:
        return None
    try:
        return TextEncoderDims.from_dict(json.loads(metadata[META_CONFIG]))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: unreadable {META_CONFIG!r} metadata: {exc}") from exc


def prepare_state(
    state_dict: Mapping[str, torch.Tensor],
    what: str = "state dict",
    prefix: str | None = None,
    declared: TextEncoderDims | None = None,
) -> tuple[dict[str, torch.Tensor], TextEncoderInfo]:
    """Any layout -> validated canonical HF state dict + info (the one place input is checked)."""
    hf_sd, layout, dropped = to_hf(state_dict, prefix, what)
    dims = infer_dims(hf_sd, what)
    if declared is None and layout.name in SD2_LAYOUTS:
        declared = replace(dims, num_heads=dims.hidden_size // 64, hidden_act="gelu")
    dims = merge_declared(dims, declared, what)
    check_complete(hf_sd, dims, what)
    io.check_finite(hf_sd, what)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in hf_sd.values()})
    info = TextEncoderInfo(what, None, layout.name, layout.prefix, dims, "/".join(dtypes), dropped)
    logger.debug("%s: %s layout, %s", what, layout.name, dims.describe())
    return hf_sd, info


def load_text_encoder_state(
    path: PathLike, prefix: str | None = None, with_hash: bool = False
) -> tuple[dict[str, torch.Tensor], TextEncoderInfo]:
    """Read and validate a text encoder from any supported file/folder: (HF-keyed state dict, info)."""
    weights, declared = resolve_source(path)
    what = f"text encoder {str(path)!r}" + (f" ({weights.name})" if weights != Path(path) else "")
    tensors, metadata = io.load_state_dict(weights)
    declared = declared or _declared_by_metadata(metadata, what)
    hf_sd, info = prepare_state(tensors, what, prefix, declared)
    digest = io.file_sha256(weights) if with_hash else None
    return hf_sd, replace(info, source=str(path), weights_file=str(weights), sha256=digest)


def target_dims(target: torch.nn.Module | Mapping[str, torch.Tensor]) -> TextEncoderDims:
    """Dims of a target: a module with an HF ``config``, or a state dict in any supported layout."""
    if isinstance(target, Mapping):
        return infer_dims(to_hf(target, what="target state dict")[0], "target state dict")
    config = getattr(target, "config", None)
    if config is None:
        raise ValueError(
            f"target: {type(target).__name__} has no HF config; pass its state dict to target_dims"
        )
    return TextEncoderDims.from_hf_config(config)


def _new_state(target: torch.nn.Module, hf_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The target's state dict with every encoder tensor taken (copied, cast) from ``hf_sd``."""
    target_sd = target.state_dict()
    prefix = detect_layout(target_sd.keys(), what="target model").prefix
    state = {}
    for key, current in target_sd.items():
        source = hf_sd.get(key[len(prefix) :]) if key.startswith(prefix) else None
        if source is None:  # buffers and heads (e.g. text_projection) stay the target's own
            state[key] = current.detach().clone()
        else:
            state[key] = source.detach().to(dtype=current.dtype, device=current.device, copy=True)
    return state


def _fresh_like(target: torch.nn.Module) -> torch.nn.Module:
    """An empty (meta-device) model of the target's class and config; deep copy if that fails."""
    try:
        with torch.device("meta"):
            return type(target)(copy.deepcopy(target.config))
    except Exception as exc:  # a class that cannot be built from its config alone
        logger.debug("building %s on meta failed (%s); deep-copying", type(target).__name__, exc)
        return copy.deepcopy(target)


def _materialise_buffers(new: torch.nn.Module, target: torch.nn.Module) -> None:
    """Non-persistent buffers (position_ids) are not in state dicts: copy them from the target."""
    target_buffers = dict(target.named_buffers())
    for name, buf in list(new.named_buffers()):
        if buf.is_meta:
            module_name, _, leaf = name.rpartition(".")
            new.get_submodule(module_name)._buffers[leaf] = target_buffers[name].clone()


def swap_text_encoder(
    target: torch.nn.Module,
    source: PathLike | Mapping[str, torch.Tensor],
    prefix: str | None = None,
) -> torch.nn.Module:
    """A NEW model like ``target`` with the text encoder from ``source``; ``target`` is untouched.

    ``source`` is a path (see module docstring) or a state dict in any supported layout.
    Raises ValueError when the source's width, depth, vocabulary, positions or MLP size
    (and heads/activation when known) differ from the target's.
    """
    if isinstance(source, Mapping):
        hf_sd, info = prepare_state(source, prefix=prefix)
    else:
        hf_sd, info = load_text_encoder_state(source, prefix=prefix)
    check_matches(info.dims, target_dims(target), f"text encoder {info.source!r}")
    state = _new_state(target, hf_sd)
    new = _fresh_like(target)
    new.load_state_dict(state, strict=True, assign=True)
    _materialise_buffers(new, target)
    for p_new, p_old in zip(new.parameters(), target.parameters()):
        p_new.requires_grad_(p_old.requires_grad)
    logger.info("swapped in text encoder %s (%s layout, %s)", info.source, info.layout, info.dims.describe())
    return new.train(target.training)


def build_text_encoder(
    source: PathLike | Mapping[str, torch.Tensor],
    prefix: str | None = None,
    declared: TextEncoderDims | None = None,
) -> torch.nn.Module:
    """A fresh ``transformers.CLIPTextModel`` holding the encoder at ``source`` (a path, or a state dict in
    any
    supported layout with optional ``declared`` heads/activation; CLIP defaults for unknown heads)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    if isinstance(source, Mapping):
        hf_sd, info = prepare_state(source, prefix=prefix, declared=declared)
    else:
        hf_sd, info = load_text_encoder_state(source, prefix=prefix)
    with torch.device("meta"):
        model = CLIPTextModel(CLIPTextConfig(**info.dims.to_hf_config_kwargs()))
    model.load_state_dict({k: v.detach().clone() for k, v in hf_sd.items()}, strict=True, assign=True)
    positions = info.dims.max_positions
    model.embeddings.register_buffer(
        "position_ids", torch.arange(positions).expand((1, -1)), persistent=False
    )
    return model.eval()


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def convert_text_encoder(
    source: PathLike, out: PathLike, overwrite: bool = False, prefix: str | None = None,
    dtype: str | None = None, layout: str = "hf",
) -> tuple[Path, TextEncoderInfo]:
    """Write ``source`` as one safetensors file (``layout`` keys, default HF) with provenance metadata."""
    out = Path(out)
    if out.suffix.lower() not in io.SAFETENSORS_SUFFIXES:
        raise ValueError(f"out: {str(out)!r} must end in .safetensors")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {sorted(DTYPES)}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"output {str(out)!r}: already exists; choose another name or pass --overwrite")
    hf_sd, info = load_text_encoder_state(source, prefix=prefix, with_hash=True)
    if dtype is not None:
        hf_sd = {k: v.to(DTYPES[dtype]) for k, v in hf_sd.items()}
    meta = {**info.to_metadata(), "unlearnkit.layout": layout, "unlearnkit.dtype": dtype or info.dtype}
    path = io.save_safetensors(out, from_hf(hf_sd, layout), meta, overwrite=overwrite)
    logger.info("wrote %s (%s keys, from %s layout)", path, layout, info.layout)
    return path, info
