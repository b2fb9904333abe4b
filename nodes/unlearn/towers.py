"""SLUG on a ComfyUI CLIP: the text tower as the user has it, an image tower, forget/retain pairs.

The edited tower is the CLIP's text encoder (SD edits only the text encoder; SLUG, arXiv 2407.11867 §4),
rebuilt as a float32 ``transformers.CLIPTextModel`` from the clone's weights without its SLUG patches
(those are added on top, so a new patch stacks with them). Image features come from a full CLIP model
(the tiny world's, or an HF ``CLIPModel`` folder) and are computed once: with only text layers editable
they are constants, so the core sees (B, D, 1, 1) "images" whose encoder is a reshape.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...unlearnkit.textencoders import Layout, build_text_encoder
from ...unlearnkit.unlearn import EncoderPair
from ...unlearnkit.unlearn.adapter import ClipAdapter
from ...unlearnkit.unlearn.evaluation import class_metrics, zero_shot_metrics
from ...unlearnkit.unlearn.targets import HFClipAdapter, load_hf_clip
from ..clip_weights import effective_weights, encoder_dims, hf_encoder_state, prompt_token_ids, text_encoders

logger = logging.getLogger(__name__)

TINY_WORLD = "tiny world (built in)"
TINY_RETAIN = 128  # tiny-world retain pairs when no retain images are given
TINY_METRIC_IMAGES = 1000
FEATURE_BATCH = 256
MAX_TOKENS = 77


class TextTower(nn.Module):
    """Token ids (B, L) -> CLIP-space text features (B, D): encoder, pooled <end> state, text projection.

    Parameters are named like ``CLIPModel``'s (``text_model.encoder.layers.N…``), a suffix of every
    layout's names, so the patch applies to ComfyUI, diffusers, LDM and CLIPModel weights alike.
    """

    def __init__(self, text_model: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.text_model = getattr(text_model, "text_model", text_model)  # transformers 4 nests it once more
        self.text_projection = projection

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_model(input_ids=tokens).pooler_output)


@dataclass
class ImageTower:
    """A full CLIP's image side: its adapter (encoder, pixel size, mean/std), text projection and
    temperature."""

    name: str
    adapter: ClipAdapter

    @property
    def projection(self) -> nn.Module:
        return self.adapter.model.text_projection

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) pixels already in the tower's normalisation -> (N, D, 1, 1) image features."""
        enc = self.adapter
        out = [
            enc.encode_image(pixels[i : i + FEATURE_BATCH].to(enc.device, enc.dtype))
            for i in range(0, len(pixels), FEATURE_BATCH)
        ]
        return torch.cat(out).float()[:, :, None, None]

    def pixels(self, images: torch.Tensor, what: str) -> torch.Tensor:
        """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> (B, 3, h, w) centre-cropped, resized, normalised like
        CLIP."""
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"{what}: no images (got an IMAGE of shape {tuple(images.shape)})")
        x = images[..., :3].permute(0, 3, 1, 2).float()  # (B, C, H, W)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        h, w = x.shape[-2:]
        side = min(h, w)
        x = x[..., (h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
        x = F.interpolate(
            x, size=self.adapter.image_size, mode="bilinear", antialias=True, align_corners=False
        )
        mean = torch.tensor(self.adapter.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.adapter.image_std).view(1, 3, 1, 1)
        return (x - mean) / std

    def default_retain(self, concept_text: str, seed: int) -> tuple[torch.Tensor, list[str]]:
        """Retain pairs when the user gives none: only towers that come with their own data have them."""
        raise ValueError("retain_images: give retain images and captions (only the tiny world has its own)")

    def metrics(self, pair: Any, forget_p: list, retain_p: list, concept_text: str,
                seed: int) -> Callable[[], tuple[float, float]]:
        """Step-search metric: recognition of the forget / retain pairs' own texts (SLUG's zero-shot
        proxy)."""
        return lambda: zero_shot_metrics(pair, forget_p, retain_p)


class TinyWorldTower(ImageTower):
    """The tiny world's CLIP image side; it also knows the tiny world's retain images and concept metrics."""

    def __init__(self) -> None:
        from ...unlearnkit.tinyworld import store
        from ...unlearnkit.tinyworld.tasks.slug_pairs import tiny_adapter

        super().__init__(TINY_WORLD, tiny_adapter(store.load_clip(), tower="image"))

    @staticmethod
    def concept(text: str) -> Any | None:
        """The tiny world's Concept the text names ('bold style', 'bold', 'digit 7', '7'), or None."""
        from ...unlearnkit.tinyworld.tasks import Concept

        try:
            return Concept.parse(text)
        except ValueError:
            return None

    def default_retain(self, concept_text: str, seed: int) -> tuple[torch.Tensor, list[str]]:
        """Features and captions of TINY_RETAIN public tiny-world images of other classes than the concept."""
        from ...unlearnkit.tinyworld.data import load_world
        from ...unlearnkit.tinyworld.tasks.slug_pairs import captioned_pairs

        concept = self.concept(concept_text)
        public = load_world().public_set()
        others = public.where(~concept.mask(public)) if concept is not None else public
        kind = concept.kind if concept is not None else "digit"
        [(pixels, captions)] = captioned_pairs(
            others, TINY_RETAIN, seed, kind, offset=1 if concept is not None else 0
        )
        return self.features(pixels), captions

    def metrics(self, pair: Any, forget_p: list, retain_p: list, concept_text: str,
                seed: int) -> Callable[[], tuple[float, float]]:
        """A tiny-world concept: zero-shot over its class prompts (as the CLI does); else the generic
        metric."""
        from ...unlearnkit.tinyworld.data import load_world

        concept = self.concept(concept_text)
        if concept is None:
            return super().metrics(pair, forget_p, retain_p, concept_text, seed)
        public = load_world().public_set()
        pick = torch.randperm(len(public), generator=torch.Generator().manual_seed(seed))[:TINY_METRIC_IMAGES]
        subset = public.where(pick)
        return class_metrics(pair, self.features(subset.images), concept.labels(subset),
                             pair.tokenize(concept.class_prompts()), [concept.index])


def hf_clip_tower(folder: str) -> ImageTower:
    """The image side of a transformers CLIPModel folder (config.json + weights)."""
    return ImageTower(folder, HFClipAdapter(load_hf_clip(folder), tower="image"))


def tower_names() -> list[str]:
    """Tiny world + HF CLIPModel folders (config.json beside model.safetensors) in models/clip_vision."""
    out = [TINY_WORLD]
    try:
        import folder_paths
    except ImportError:  # imported outside ComfyUI
        return out
    for name in folder_paths.get_filename_list("clip_vision"):
        path = folder_paths.get_full_path("clip_vision", name)
        if path and Path(path).name in ("model.safetensors", "pytorch_model.bin") and \
                (Path(path).parent / "config.json").is_file():
            out.append(name)
    return out


def load_tower(name: str) -> ImageTower:
    """The image tower the node's ``image_tower`` choice names."""
    if name == TINY_WORLD:
        return TinyWorldTower()
    import folder_paths

    path = folder_paths.get_full_path("clip_vision", name)
    if path is None:
        raise FileNotFoundError(f"image_tower: {name!r} not found in models/clip_vision")
    return hf_clip_tower(str(Path(path).parent))


def comfy_tokenizer(clip: Any, layout: Layout) -> Callable[[Sequence[str]], torch.Tensor]:
    """strings -> (B, 77) ids from the CLIP's own tokenizer (the ids SD sees; prompt weights are ignored)."""
    name = layout.prefix.split(".")[0].removeprefix("clip_")

    def tokenize(texts: Sequence[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            chunks = prompt_token_ids(clip, text, name)
            if len(chunks) > 1:
                logger.warning(
                    "SLUG: %r is longer than %d tokens; only its first chunk is used", text, MAX_TOKENS
                )
            rows.append(chunks[0])
        return torch.tensor(rows, dtype=torch.long)

    return tokenize


def text_tower(clip: Any, source_projection: nn.Linear, keep: Callable[[Any], bool],
               device: torch.device) -> tuple[TextTower, Layout]:
    """The CLIP's text encoder (weights as this clone computes them, minus patches ``keep`` rejects),
    float32."""
    layouts = text_encoders(clip)
    width = source_projection.in_features
    fits = [layout for layout in layouts if encoder_dims(clip, layout).hidden_size == width]
    if len(fits) != 1:
        widths = [encoder_dims(clip, layout).hidden_size for layout in layouts]
        raise ValueError(
            f"image_tower: its text projection takes width {width}; the CLIP's text encoder(s) have "
            f"width {widths} (pick the CLIP model this SD text encoder comes from)"
        )
    layout = fits[0]
    dims = encoder_dims(clip, layout)
    weights = effective_weights(clip.patcher, layout.prefix, keep)
    model = build_text_encoder(hf_encoder_state(weights, layout), declared=dims)
    projection = nn.Linear(source_projection.in_features, source_projection.out_features, bias=False)
    projection.weight.data.copy_(source_projection.weight.detach().float())
    return TextTower(model, projection).to(device=device, dtype=torch.float32).eval(), layout


def feature_pair(tower: TextTower, tokenize: Callable[[Sequence[str]], torch.Tensor], feature_dim: int,
                 logit_scale: float, on_gradient_batch: Callable[[], None]) -> EncoderPair:
    """The core's encoder protocol over precomputed image features (B, D, 1, 1) and the trainable text
    tower."""

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        out = tower(tokens)
        if torch.is_grad_enabled():  # the gradient pass encodes each batch once, with grad
            on_gradient_batch()
        return out

    pair = EncoderPair(tower, encode_image=lambda feats: feats.flatten(1), encode_text=encode_text,
                       tokenize=tokenize, image_size=(1, 1), logit_scale=logit_scale)
    pair.image_channels = feature_dim  # "images" are feature vectors
    return pair
