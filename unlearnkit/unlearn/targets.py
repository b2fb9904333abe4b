"""Adapters for real targets: open_clip CLIP models and transformers ``CLIPModel``.

For Stable Diffusion, build the adapter on the CLIP model whose text tower *is* the SD text
encoder (SD1.x: OpenAI ViT-L/14) with ``tower="text"``: only text-tower layers are candidates,
so the patch applies to SD's ``CLIPTextModel`` (names are matched by suffix, see ``.patches``).
"""
from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import io
from .adapter import ClipAdapter

logger = logging.getLogger(__name__)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class _TokenizingAdapter(ClipAdapter):
    """A library's CLIP model with a tokenizer of the caller's (strings -> (B, L) ids) or open_clip's CLIP BPE
    tokenizer at the model's context length."""

    def __init__(self, model: nn.Module, tower: str = "both",
                 tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None) -> None:
        super().__init__(model, tower)
        self._tokenizer = tokenizer

    @abstractmethod
    def context_length(self) -> int: ...

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if self._tokenizer is not None:
            return self._tokenizer(list(texts))
        import open_clip

        return open_clip.tokenize(list(texts), context_length=self.context_length())


class OpenClipAdapter(_TokenizingAdapter):
    """open_clip ``CLIP`` / ``CustomTextCLIP``: ``model.encode_image`` / ``model.encode_text``."""

    def __init__(self, model: nn.Module, tower: str = "both",
                 tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None) -> None:
        super().__init__(model, tower, tokenizer)
        mean = getattr(model.visual, "image_mean", None)
        std = getattr(model.visual, "image_std", None)
        if mean is not None and std is not None:
            self.image_mean, self.image_std = tuple(mean), tuple(std)

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self.model.visual.image_size)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)  # (B, D), unnormalised

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)  # (B, D), unnormalised

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def context_length(self) -> int:
        return int(self.model.context_length)

    def in_image_tower(self, name: str) -> bool:
        return name.startswith("visual.")


class HFClipAdapter(_TokenizingAdapter):
    """transformers ``CLIPModel``: ``get_image_features`` / ``get_text_features``.

    ``tokenizer`` maps strings to (B, L) ids; the default is open_clip's CLIP BPE tokenizer
    (offline; same ids as ``CLIPTokenizer`` on ordinary prompts) at the model's context length.
    """

    def __init__(self, model: nn.Module, tower: str = "both",
                 tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None) -> None:
        super().__init__(model, tower, tokenizer)
        text_cfg = model.config.text_config
        specials = {getattr(text_cfg, k, None) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
        # pad id 1 in the HF config is a placeholder; real CLIP prompts are padded with 0 or <end>
        self.special_token_ids = frozenset({0, 49406, 49407} | {s for s in specials if s not in (None, 1)})

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(self.model.config.vision_config.image_size)

    @property
    def image_channels(self) -> int:  # type: ignore[override]
        return int(getattr(self.model.config.vision_config, "num_channels", 3))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=images))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        eos = getattr(self.model.config.text_config, "eos_token_id", 2)
        return _features(self.model.get_text_features(input_ids=tokens[:, : pooled_length(tokens, eos)]))

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def context_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def in_image_tower(self, name: str) -> bool:
        return name.startswith(("vision_model.", "visual_projection."))


def pooled_length(tokens: torch.Tensor, eos_token_id: int | None) -> int:
    """Columns a causal CLIP text tower needs for its pooled output: up to the last row's pooling position.

    transformers pools at the first ``eos_token_id`` (at the highest id when the legacy config says 2);
    with causal attention nothing after that position changes it, so the padding after it can be cut
    (SD prompts are padded to 77 tokens; captions hold ~10: the text pass gets several times cheaper).
    """
    if tokens.shape[1] == 0:
        return 0
    if eos_token_id is None or eos_token_id == 2:
        positions = tokens.to(torch.int).argmax(dim=-1)
    else:
        positions = (tokens == eos_token_id).to(torch.int).argmax(dim=-1)
    return int(positions.max()) + 1


def _features(out: torch.Tensor | object) -> torch.Tensor:
    """transformers < 5 returns the projected features; 5.x returns an output whose pooler_output holds
    them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # (B, D)


def load_hf_clip(folder: str):
    """A transformers CLIPModel from a local folder, weights read through unlearnkit.io (no pickle code)."""
    from transformers import CLIPConfig, CLIPModel

    root = Path(folder)
    weights = next(
        (root / n for n in ("model.safetensors", "pytorch_model.bin") if (root / n).is_file()), None
    )
    if not (root / "config.json").is_file() or weights is None:
        raise FileNotFoundError(
            f"clip_dir: {folder!r} needs config.json and model.safetensors (or pytorch_model.bin)"
        )
    model = CLIPModel(CLIPConfig.from_pretrained(str(root)))
    state, _ = io.load_state_dict(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"clip_dir: {str(weights)!r} does not fit its config: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}"
        )
    return model.eval()
