"""A ComfyUI CLIP as the erase loop's text encoder and tokenizer (SD1.x CLIP-L, SD2.x OpenCLIP-H, SDXL L + G).

Each tower is rebuilt as a float32 ``transformers.CLIPTextModel`` from the weights as this CLIP clone
computes them (its patches, e.g. a CLIP LoRA, included), reading the hidden state ComfyUI reads: the
tower's own ``layer`` / ``layer_idx`` / ``layer_norm_hidden_state``, or the CLIP's CLIP Set Last Layer
value. Token ids come from the CLIP's own tokenizer, exactly as CLIPTextEncode makes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from ...unlearnkit.erase.sd_text import SDTextEncoder, TowerOutput
from ...unlearnkit.textencoders import Layout, build_text_encoder
from ..clip_weights import effective_weights, encoder_dims, hf_encoder_state, prompt_token_ids, text_encoders

TOWER_CHOICES = ("all", "clip_l", "clip_g")  # which SDXL towers train ("all": both)
END_ID = 49407


@dataclass(frozen=True)
class Tower:
    name: str  # "clip_l", "clip_h", "clip_g"
    layout: Layout  # where its weights sit in the CLIP's state dict
    module: Any  # ComfyUI's SDClipModel


def clip_towers(clip: Any) -> list[Tower]:
    """The CLIP text towers of a ComfyUI CLIP in conditioning order; ValueError for other encoders."""
    layouts = {layout.prefix.split(".")[0]: layout for layout in text_encoders(clip)}
    found = [Tower(n, layouts[n], getattr(clip.cond_stage_model, n)) for n in ("clip_l", "clip_h", "clip_g")
             if n in layouts and hasattr(clip.cond_stage_model, n)]
    if not found or len(found) != len(layouts):
        raise ValueError(f"clip: {type(clip.cond_stage_model).__name__} is not an SD1.x/SD2.x/SDXL CLIP "
                         f"(found text encoders {sorted(layouts)}; Erase Concept trains CLIP-L/H/G towers)")
    return found


def tower_output(tower: Tower, layer_idx: int | None, pad_id: int | None) -> TowerOutput:
    """What ComfyUI reads of this tower (CLIP Set Last Layer's ``layer_idx`` overrides its default)."""
    module = tower.module
    layer, idx = module.layer, module.layer_idx
    if layer_idx is not None and abs(int(layer_idx)) <= int(module.num_layers):
        layer, idx = "hidden", int(layer_idx)
    norm = bool(getattr(module, "layer_norm_hidden_state", True))
    return TowerOutput(None if layer == "last" else int(idx), norm, pad_id)


def hf_tower(clip: Any, tower: Tower) -> torch.nn.Module:
    """A float32 CLIPTextModel holding this tower's weights as the clone computes them."""
    weights = effective_weights(clip.patcher, tower.layout.prefix)
    dims = encoder_dims(clip, tower.layout)
    return build_text_encoder(hf_encoder_state(weights, tower.layout), declared=dims).float()


def projection_of(clip: Any, tower: Tower) -> torch.nn.Linear:
    """OpenCLIP-G's text projection (SDXL's pooled vector), frozen."""
    key = tower.layout.prefix.removesuffix("text_model.") + "text_projection.weight"
    weight = effective_weights(clip.patcher, key)[key].float()
    proj = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    proj.weight = torch.nn.Parameter(weight.detach().clone(), requires_grad=False)
    return proj


def sd_text_encoder(clip: Any, trained: str = "all") -> tuple[SDTextEncoder, list[Tower]]:
    """(the CLIP's conditioning as one trainable encoder, every tower; ``encoder.trained`` indexes the
    trained ones)."""
    towers = clip_towers(clip)
    layer_idx = getattr(clip, "layer_idx", None)
    names = [t.name for t in towers]
    if trained not in ("all", *names):
        raise ValueError(f"towers: {trained!r} is not a text encoder of this CLIP (it has {names})")
    pads = [0 if t.name == "clip_g" and len(towers) > 1 else None for t in towers]
    outputs = [tower_output(t, layer_idx, p) for t, p in zip(towers, pads)]
    models = [hf_tower(clip, t) for t in towers]
    chosen = [t for t in towers if trained in ("all", t.name)]
    projection = projection_of(clip, towers[-1]) if names == ["clip_l", "clip_g"] else None
    trained = [i for i, t in enumerate(towers) if t in chosen]
    for i, model in enumerate(models):
        model.requires_grad_(i in trained)  # the layer spec then picks among the chosen towers' tensors
    return SDTextEncoder(models, outputs, END_ID, trained, projection), towers


class ComfyTokenizer:
    """The HF-tokenizer calls the erase loop makes, answered by the CLIP's own tokenizer (first tower)."""

    def __init__(self, clip: Any) -> None:
        self.clip = clip
        self.model_max_length = 77
        self.bos_token_id, self.eos_token_id = 49406, END_ID
        first = self.ids("")[0]
        self.pad_token_id = int(first[-1])  # CLIP-L pads with the end token, OpenCLIP-H with 0

    def ids(self, text: str) -> list[list[int]]:
        return prompt_token_ids(self.clip, text, "l")

    def __call__(self, prompts, padding="max_length", max_length=None, truncation=True, return_tensors="pt"):
        rows = [self.ids(p)[0][: self.model_max_length] for p in prompts]
        return SimpleNamespace(input_ids=torch.tensor(rows, dtype=torch.long))

    def decode(self, ids, skip_special_tokens=True) -> str:
        tok = self.clip.tokenizer
        inner = getattr(tok, "clip_l", None) or getattr(tok, "clip_h", None) or tok.clip_g
        return inner.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
