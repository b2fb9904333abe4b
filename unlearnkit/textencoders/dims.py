"""Dimensions of a CLIP text encoder: inferred from weights, read from configs, compared.

A state dict in canonical HF keys (see ``layouts``) fixes width, depth,
vocabulary, position count and MLP size; the head count and activation only come from a
config (``config.json`` or our own safetensors metadata).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

logger = logging.getLogger(__name__)

LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")
REQUIRED_FOR_DIMS = (
    "embeddings.token_embedding.weight",
    "embeddings.position_embedding.weight",
    "encoder.layers.0.mlp.fc1.weight",
)
HEAD_DIM = 64  # OpenAI CLIP and OpenCLIP text towers: heads = width / 64


@dataclass(frozen=True)
class TextEncoderDims:
    """What must agree between a text encoder and the model it is swapped into."""

    hidden_size: int
    num_layers: int
    vocab_size: int
    max_positions: int
    intermediate_size: int
    num_heads: int | None = None  # unknown when only weights are given
    hidden_act: str | None = None  # "quick_gelu" (SD1.x, OpenAI CLIP) or "gelu" (SD2, OpenCLIP)

    @classmethod
    def from_hf_config(cls, config: Any) -> TextEncoderDims:
        """From a ``CLIPTextConfig`` (or its dict; a full ``CLIPConfig`` uses its ``text_config``)."""
        cfg = config if isinstance(config, Mapping) else config.to_dict()
        cfg = cfg.get("text_config") or cfg
        return cls(
            hidden_size=int(cfg["hidden_size"]), num_layers=int(cfg["num_hidden_layers"]),
            vocab_size=int(cfg["vocab_size"]), max_positions=int(cfg["max_position_embeddings"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_heads=int(cfg["num_attention_heads"]) if cfg.get("num_attention_heads") else None,
            hidden_act=cfg.get("hidden_act"),
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TextEncoderDims:
        """From ``asdict`` output (e.g. our safetensors metadata); unknown fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_hf_config_kwargs(self) -> dict[str, Any]:
        """Arguments for ``CLIPTextConfig``; unknown heads/activation fall back to CLIP conventions."""
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_positions,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_heads or max(1, self.hidden_size // HEAD_DIM),
            "hidden_act": self.hidden_act or "quick_gelu",
        }

    def describe(self) -> str:
        text = (
            f"width {self.hidden_size}, {self.num_layers} layers, vocab {self.vocab_size}, "
            f"{self.max_positions} positions, mlp {self.intermediate_size}"
        )
        if self.num_heads:
            text += f", {self.num_heads} heads"
        return text + (f", {self.hidden_act}" if self.hidden_act else "")


def _count_layers(hf_state_dict: Mapping[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for k in hf_state_dict if (m := LAYER_KEY.match(k))}
    return max(indices) + 1 if indices else 0


def infer_dims(hf_state_dict: Mapping[str, torch.Tensor], what: str = "state dict") -> TextEncoderDims:
    """Width, depth, vocabulary, positions and MLP size from canonical HF keys."""
    missing = [k for k in REQUIRED_FOR_DIMS if k not in hf_state_dict]
    if missing:
        raise ValueError(f"{what}: text encoder is missing {missing}; cannot tell its size")
    vocab, width = hf_state_dict["embeddings.token_embedding.weight"].shape
    return TextEncoderDims(
        hidden_size=int(width),
        num_layers=_count_layers(hf_state_dict),
        vocab_size=int(vocab),
        max_positions=int(hf_state_dict["embeddings.position_embedding.weight"].shape[0]),
        intermediate_size=int(hf_state_dict["encoder.layers.0.mlp.fc1.weight"].shape[0]),
    )


def expected_shapes(dims: TextEncoderDims) -> dict[str, tuple[int, ...]]:
    """Every parameter of a ``CLIPTextModel`` with these dims, in canonical HF keys."""
    w, m = dims.hidden_size, dims.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.token_embedding.weight": (dims.vocab_size, w),
        "embeddings.position_embedding.weight": (dims.max_positions, w),
        "final_layer_norm.weight": (w,),
        "final_layer_norm.bias": (w,),
    }
    for i in range(dims.num_layers):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{p}self_attn.{proj}.weight"] = (w, w)
            shapes[f"{p}self_attn.{proj}.bias"] = (w,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{p}{norm}.weight"] = (w,)
            shapes[f"{p}{norm}.bias"] = (w,)
        shapes[f"{p}mlp.fc1.weight"] = (m, w)
        shapes[f"{p}mlp.fc1.bias"] = (m,)
        shapes[f"{p}mlp.fc2.weight"] = (w, m)
        shapes[f"{p}mlp.fc2.bias"] = (w,)
    return shapes


def check_complete(hf_state_dict: Mapping[str, torch.Tensor], dims: TextEncoderDims, what: str) -> None:
    """Raise naming missing keys and wrong shapes (a few of each) against ``dims``."""
    shapes = expected_shapes(dims)
    missing = [k for k in shapes if k not in hf_state_dict]
    wrong = [
        f"{k} {tuple(v.shape)} (expected {shapes[k]})"
        for k, v in hf_state_dict.items()
        if k in shapes and tuple(v.shape) != shapes[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:4]}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape, e.g. {wrong[:3]}")
    if problems:
        raise ValueError(
            f"{what}: not a complete CLIP text encoder ({dims.describe()}): " + "; ".join(problems)
        )


def mismatches(
    source: TextEncoderDims, target: TextEncoderDims, names: tuple[str, str] = ("source", "target")
) -> list[str]:
    """Human-readable differences; heads/activation are compared only when both are known."""
    out = []
    for field in fields(TextEncoderDims):
        a, b = getattr(source, field.name), getattr(target, field.name)
        if a is None or b is None or a == b:
            continue
        out.append(f"{field.name.replace('_', ' ')}: {names[0]} {a} vs {names[1]} {b}")
    return out


def merge_declared(inferred: TextEncoderDims, declared: TextEncoderDims | None, what: str) -> TextEncoderDims:
    """Fill heads/activation from a config, refusing a config that contradicts the weights."""
    if declared is None:
        return inferred
    diff = mismatches(inferred, declared, ("weights", "config"))
    if diff:
        raise ValueError(f"{what}: its config does not match its weights ({'; '.join(diff)})")
    return replace(
        inferred,
        num_heads=inferred.num_heads or declared.num_heads,
        hidden_act=inferred.hidden_act or declared.hidden_act,
    )


def check_matches(source: TextEncoderDims, target: TextEncoderDims, what: str) -> None:
    """Refuse to swap an encoder whose dims differ from the target model's, naming both."""
    diff = mismatches(source, target)
    if diff:
        raise ValueError(
            f"{what}: text encoder does not fit the target model ({'; '.join(diff)}). "
            f"Source: {source.describe()}. Target: {target.describe()}."
        )
