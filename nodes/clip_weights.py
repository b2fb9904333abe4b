"""ComfyUI CLIP objects <-> the core's canonical text-encoder weights (shared by the Erase and Unlearn nodes).

A ComfyUI ``CLIP`` holds ``cond_stage_model`` (e.g. ``SD1ClipModel``: keys
``clip_l.transformer.text_model.…``)
and a ``ModelPatcher`` over it. Clones share that module; weight patches live in each clone's patcher
and are written into the shared weights only while ComfyUI has that clone loaded. So the weights "as
the user has them" are the *unpatched* weights (``get_key_patches``, which reads the patcher's backup)
with the clone's own patches computed on top (ComfyUI's ``calculate_weight``). ComfyUI is imported
inside functions only.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from ..unlearnkit.textencoders.dims import TextEncoderDims, infer_dims
from ..unlearnkit.textencoders.layouts import Layout, find_text_encoders, to_hf

logger = logging.getLogger(__name__)

PatchFilter = Callable[[Any], bool]  # a patch value (the 2nd item of a patcher entry) -> keep it?


def text_encoders(clip: Any) -> list[Layout]:
    """Every CLIP text encoder inside a ComfyUI CLIP (one for SD1.x/SD2.x, two for SDXL)."""
    found = [
        layout
        for layout in find_text_encoders(clip.cond_stage_model.state_dict().keys())
        if layout.family == "hf"
    ]
    if not found:
        raise ValueError(f"clip: no CLIP text encoder found in this {type(clip.cond_stage_model).__name__} "
                         "(only CLIP-L/H/G text encoders are supported)")
    return found


def _activation_name(fn: Any) -> str | None:
    try:
        import comfy.clip_model

        return next((name for name, f in comfy.clip_model.ACTIVATIONS.items() if f is fn), None)
    except (ImportError, AttributeError):
        return None


def encoder_dims(clip: Any, layout: Layout) -> TextEncoderDims:
    """Width, depth, vocabulary, positions, MLP size (from the weights) and heads/activation (from the
    module)."""
    module = clip.cond_stage_model
    hf, _, _ = to_hf(module.state_dict(), layout.prefix, "clip")
    dims = infer_dims(hf, f"clip text encoder at {layout.prefix!r}")
    try:
        block = module.get_submodule(layout.prefix + "encoder.layers.0")
        heads = getattr(block.self_attn, "heads", None)
        return replace(
            dims, num_heads=int(heads) if heads else None, hidden_act=_activation_name(block.mlp.activation)
        )
    except AttributeError:
        return dims


def _calculate_weight(patcher: Any) -> Callable[[list, torch.Tensor, str], torch.Tensor]:
    """ComfyUI's weight-patch maths: ``comfy.lora.calculate_weight`` (0.3.x) or the patcher method (2024)."""
    import comfy.lora

    fn = getattr(comfy.lora, "calculate_weight", None)
    return fn if fn is not None else patcher.calculate_weight


def unpatched_weights(patcher: Any, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """The module's weights without any clone's patches (what ComfyUI's model-merge nodes read)."""
    out = {}
    for key, entry in patcher.get_key_patches(prefix).items():
        first = entry[0]  # 2024: the tensor; 0.3.x: (tensor, convert_func)
        out[key] = first if isinstance(first, torch.Tensor) else first[0]
    return out


def effective_weights(patcher: Any, prefix: str | None = None, keep: PatchFilter | None = None,
                      only: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """Weights as this clone computes them: unpatched + its patches (only those ``keep`` accepts), in the
    weight dtype.

    ``only``: compute patched values just for these keys (the others are returned unpatched, e.g. for shapes).
    """
    calculate = _calculate_weight(patcher)
    out = {}
    for key, weight in unpatched_weights(patcher, prefix).items():
        wanted = only is None or only(key)
        patches = [p for p in patcher.patches.get(key, []) if wanted and (keep is None or keep(p[1]))]
        if patches and weight.is_floating_point():
            patched = calculate(patches, weight.detach().to(torch.float32, copy=True), key)
            out[key] = patched.to(weight.dtype)
        else:
            out[key] = weight
    return out


def hf_encoder_state(weights: Mapping[str, torch.Tensor], layout: Layout) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a ComfyUI CLIP state dict under canonical HF keys (``encoder.layers.0…``)."""
    return to_hf(weights, layout.prefix, "clip")[0]



def prompt_token_ids(clip: Any, text: str, tower: str | None = None) -> list[list[int]]:
    """The ids of each 77-token chunk of ``text`` from the CLIP's own tokenizer (the ids SD sees; prompt
    weights are dropped), for ``tower`` ("l", "h", "g") or its first; a textual-inversion embedding in the
    first chunk (the one both loops read) has no ids and is refused."""
    chunks = clip.tokenize(text)
    chunks = chunks.get(tower) or next(iter(chunks.values()))
    rows = [[t[0] for t in chunk] for chunk in chunks]
    if not all(isinstance(i, int) for i in rows[0]):
        raise ValueError(f"prompt {text!r}: holds a textual-inversion embedding; use plain words")
    return rows
