"""The tiny contract SLUG needs from a CLIP-like model, and the one place that checks its inputs.

An adapter wraps a model with an image and a text encoder (SLUG, arXiv 2407.11867 §3):
``encode_image(images) -> (B, D)``, ``encode_text(tokens) -> (B, D)``, ``logit_scale()``,
``named_layers()`` (the editable candidates) and ``prepare_images`` / ``prepare_texts``
(raw inputs -> checked tensors). The gradient, scoring and search code only talks to this
protocol, so any encoder pair works; :mod:`.targets` has open_clip and transformers adapters.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Parameters never edited by SLUG: embeddings, norms, biases, temperature, tower projections.
SKIP_WORDS = ("embed", "norm", "ln_", "bias", "logit_scale", "text_projection", "visual_projection")
LAYER_OWNERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.MultiheadAttention)
TOWERS = ("both", "image", "text")

Images = Any  # (B, C, H, W) float tensor, or a sequence of PIL images
Texts = Any  # a string (used for every image), a sequence of strings, or (B, L) token ids


@runtime_checkable
class Encoders(Protocol):
    """What the SLUG core needs from a model with an image and a text tower."""

    model: nn.Module

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...  # (B, C, H, W) -> (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...  # (B, L) -> (B, D)

    def logit_scale(self) -> torch.Tensor: ...  # scalar, already exponentiated

    def named_layers(self) -> list[tuple[str, nn.Parameter]]: ...

    def prepare_images(self, images: Images, what: str) -> torch.Tensor: ...

    def prepare_texts(self, texts: Texts, what: str, count: int | None = None) -> torch.Tensor: ...


def candidate_layers(
    model: nn.Module, keep: Callable[[str], bool] | None = None
) -> list[tuple[str, nn.Parameter]]:
    """Editable SLUG layers: >=2-D weights of Linear / attention modules, in registration (depth) order."""
    modules = dict(model.named_modules())
    out = []
    for name, param in model.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        if (
            param.ndim < 2
            or not leaf.endswith("weight")
            or not isinstance(modules.get(owner_name), LAYER_OWNERS)
        ):
            continue
        if any(word in name for word in SKIP_WORDS) or (keep is not None and not keep(name)):
            continue
        out.append((name, param))
    return out


def check_image_tensor(images: torch.Tensor, size: tuple[int, int], channels: int, what: str) -> None:
    """Raise a ValueError naming ``what`` unless images is a finite float (B, C, H, W) batch of the model's
    size."""
    if images.ndim != 4:
        raise ValueError(
            f"{what}: expected a (B, {channels}, H, W) image tensor, got shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{what}: no images (empty batch)")
    if images.shape[1] != channels:
        hint = " (channels-last? permute to (B, C, H, W))" if images.shape[-1] == channels else ""
        raise ValueError(f"{what}: expected {channels} channels, got shape {tuple(images.shape)}{hint}")
    if tuple(images.shape[-2:]) != tuple(size):
        raise ValueError(
            f"{what}: expected {size[0]}x{size[1]} images, got {tuple(images.shape[-2:])}; resize first"
        )
    if not images.is_floating_point():
        raise ValueError(f"{what}: expected a float image tensor, got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: image tensor contains NaN or inf")


def check_token_rows(
    tokens: torch.Tensor, special: frozenset[int], texts: Sequence[str] | None, what: str
) -> None:
    """Raise unless every row holds at least one token that is not padding / start / end."""
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(f"{what}: expected (B, L) token ids with B >= 1, got shape {tuple(tokens.shape)}")
    if tokens.is_floating_point():
        raise ValueError(f"{what}: token ids must be integers, got dtype {tokens.dtype}")
    ids = torch.tensor(sorted(special), dtype=tokens.dtype)
    content = ~torch.isin(tokens.cpu(), ids)  # (B, L)
    for row in torch.nonzero(~content.any(dim=1)).flatten().tolist():
        shown = repr(texts[row]) if texts is not None else f"token row {row}"
        raise ValueError(f"{what}[{row}]: {shown} holds only padding/special tokens (empty concept text?)")


def center_crop_resize(image: Any, size: tuple[int, int]) -> Any:
    """CLIP's preprocessing: scale (bicubic) so the image covers ``size`` (H, W), then crop the centre."""
    from PIL import Image

    height, width = size
    scale = max(height / image.height, width / image.width)
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(resized, Image.BICUBIC)
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


class ClipAdapter(ABC):
    """Shared input checks and layer filtering; subclasses give the encoders and the tokenizer."""

    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    image_channels = 3
    special_token_ids: frozenset[int] = frozenset({0, 49406, 49407})  # pad, <start>, <end> of CLIP BPE

    def __init__(self, model: nn.Module, tower: str = "both") -> None:
        if tower not in TOWERS:
            raise ValueError(f"tower: expected one of {TOWERS}, got {tower!r}")
        self.model = model
        self.tower = tower

    # --- what subclasses provide -------------------------------------------------------
    @property
    @abstractmethod
    def image_size(self) -> tuple[int, int]: ...

    @abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def logit_scale(self) -> torch.Tensor: ...

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor: ...

    @abstractmethod
    def in_image_tower(self, name: str) -> bool: ...

    # --- shared --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    def in_tower(self, name: str) -> bool:
        """Whether a parameter belongs to the tower(s) this adapter may edit."""
        if self.tower == "both":
            return True
        return self.in_image_tower(name) == (self.tower == "image")

    def named_layers(self) -> list[tuple[str, nn.Parameter]]:
        layers = candidate_layers(self.model, self.in_tower)
        if not layers:
            raise ValueError(f"tower={self.tower!r}: the model has no editable linear/attention weight there")
        return layers

    def prepare_images(self, images: Images, what: str) -> torch.Tensor:
        """Checked, normalised (B, C, H, W) batch on the model's device; PIL images are resized and
        centre-cropped like CLIP."""
        if images is None or (not isinstance(images, torch.Tensor) and len(images) == 0):
            raise ValueError(f"{what}: no images (empty batch)")
        if not isinstance(images, torch.Tensor):
            images = self._pil_to_tensor(images, what)
        check_image_tensor(images, self.image_size, self.image_channels, what)
        return images.to(self.device, self.dtype)

    def _pil_to_tensor(self, images: Sequence[Any], what: str) -> torch.Tensor:
        from PIL import Image

        rows = []
        for i, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise ValueError(
                    f"{what}[{i}]: expected a PIL image or a tensor batch, got {type(image).__name__}"
                )
            if image.mode not in ("RGB", "L"):
                raise ValueError(
                    f"{what}[{i}]: image mode {image.mode!r} not supported; convert to 'RGB' first"
                )
            image = center_crop_resize(image.convert("RGB"), self.image_size)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
            rows.append(pixels.view(image.size[1], image.size[0], 3).permute(2, 0, 1).float() / 255.0)
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (torch.stack(rows) - mean) / std  # (B, 3, H, W)

    def prepare_texts(self, texts: Texts, what: str, count: int | None = None) -> torch.Tensor:
        """(B, L) token ids; a single string is repeated ``count`` times (one concept for all images)."""
        strings: list[str] | None = None
        if isinstance(texts, str):
            strings = [texts] * (count or 1)
        elif isinstance(texts, torch.Tensor):
            tokens = texts
        elif isinstance(texts, Sequence) and all(isinstance(t, str) for t in texts):
            strings = list(texts)
        else:
            raise ValueError(
                f"{what}: expected a string, a list of strings or token ids, got {type(texts).__name__}"
            )
        if strings is not None:
            if not strings:
                raise ValueError(f"{what}: no texts (empty batch)")
            for i, text in enumerate(strings):
                if not text.strip():
                    raise ValueError(
                        f"{what}[{i}]: empty text {text!r}; give the concept's name or a caption"
                    )
            tokens = self.tokenize(strings)
        check_token_rows(tokens, self.special_token_ids, strings, what)
        if count is not None and tokens.shape[0] != count:
            raise ValueError(
                f"{what}: got {tokens.shape[0]} texts for {count} images; give one per image or one string"
            )
        return tokens.to(self.device)


class EncoderPair(ClipAdapter):
    """Any model with two encoders given as functions (no subclassing needed).

    ``image_prefixes``: parameter-name prefixes of the image tower (for ``tower="image"/"text"``);
    ``logit_scale``: the contrastive temperature (a function returning a tensor, or a number).
    """

    def __init__(
        self, model: nn.Module, encode_image: Callable[[torch.Tensor], torch.Tensor],
        encode_text: Callable[[torch.Tensor], torch.Tensor],
        tokenize: Callable[[Sequence[str]], torch.Tensor], image_size: tuple[int, int],
        image_prefixes: tuple[str, ...] = (), logit_scale: Callable[[], torch.Tensor] | float = 100.0,
        tower: str = "both",
    ) -> None:
        super().__init__(model, tower)
        if tower != "both" and not image_prefixes:
            raise ValueError(f"image_prefixes: needed to restrict to tower={tower!r}")
        self._encode_image, self._encode_text, self._tokenize = encode_image, encode_text, tokenize
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._image_prefixes, self._logit_scale = tuple(image_prefixes), logit_scale

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode_image(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._encode_text(tokens)

    def logit_scale(self) -> torch.Tensor:
        scale = self._logit_scale
        return scale() if callable(scale) else torch.tensor(float(scale), device=self.device)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenize(list(texts))

    def in_image_tower(self, name: str) -> bool:
        return name.startswith(self._image_prefixes) if self._image_prefixes else False
