"""Which text-encoder parameters train: all layers, the last N, or named ones (the UNet never trains).

Spec (comma-separated, combinable): ``all`` (every transformer layer + the final layer norm, as
AdvUnlearn's nudity runs), ``last:N`` (the last N layers + the final norm), a layer index ``7``,
``final_layer_norm``, ``embeddings`` (token + position tables). Indices are matched as whole path
components: ``1`` selects ``encoder.layers.1.`` and never 10 or 11 (a bug of the public code).
"""
from __future__ import annotations

import copy
import logging
import re

import torch

logger = logging.getLogger(__name__)

LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")
FINAL_NORM = "final_layer_norm."
EMBEDDINGS = "embeddings."


def num_layers(encoder: torch.nn.Module) -> int:
    return int(encoder.config.num_hidden_layers)


def parse_layer_spec(spec: str, n_layers: int) -> tuple[set[int], bool, bool]:
    """(layer indices, final norm?, embeddings?) for a spec string; ValueError naming a bad part."""
    layers: set[int] = set()
    norm = embeddings = False
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"layers: empty spec {spec!r}; use 'all', 'last:N', indices or 'final_layer_norm'")
    for part in parts:
        if part == "all":
            layers |= set(range(n_layers))
            norm = True
        elif part.startswith("last:") and part[5:].isdigit() and 1 <= int(part[5:]) <= n_layers:
            layers |= set(range(n_layers - int(part[5:]), n_layers))
            norm = True
        elif part.isdigit() and int(part) < n_layers:
            layers.add(int(part))
        elif part == "final_layer_norm":
            norm = True
        elif part == "embeddings":
            embeddings = True
        else:
            raise ValueError(
                f"layers: bad part {part!r} in {spec!r}; expected 'all', 'last:N' (1..{n_layers}), "
                f"a layer index 0..{n_layers - 1}, 'final_layer_norm' or 'embeddings'"
            )
    return layers, norm, embeddings


def _selected(name: str, layers: set[int], norm: bool, embeddings: bool) -> bool:
    match = LAYER.search(name)
    if match:
        return int(match.group(1)) in layers
    if FINAL_NORM in name:
        return norm
    return embeddings and EMBEDDINGS in name


def select_trainable(encoder: torch.nn.Module, spec: str = "all") -> list[tuple[str, torch.nn.Parameter]]:
    """Mark the chosen parameters trainable (all others frozen) and return them as (name, parameter)."""
    layers, norm, embeddings = parse_layer_spec(spec, num_layers(encoder))
    chosen = []
    for name, param in encoder.named_parameters():
        keep = _selected(name, layers, norm, embeddings)
        param.requires_grad_(keep)
        if keep:
            chosen.append((name, param))
    if not chosen:
        raise ValueError(f"layers: spec {spec!r} selects no parameter of this text encoder")
    logger.info("training %d tensors (%d parameters) of the text encoder: %s", len(chosen),
                sum(p.numel() for _, p in chosen), spec)
    return chosen


def trainable_copy(encoder: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The copy that trains: float32 master weights when the given encoder is half precision (fp16 / bf16
    cannot hold Adam's steps of lr ~1e-5 on weights of ~1e-2: they would round away without a word)."""
    copied = copy.deepcopy(encoder).to(device)
    half = [p.dtype for p in copied.parameters() if p.dtype in (torch.float16, torch.bfloat16)]
    if half:
        logger.info("erase: the text encoder is %s; it trains in float32 (the result is float32)", half[0])
        copied = copied.float()
    return copied
