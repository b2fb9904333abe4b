"""Per-layer gradients of the SLUG forget and retain losses, in one pass (arXiv 2407.11867 §3.1).

Forget loss L_f = mean(1 - cos(f_img, f_txt)) on forget pairs; retain loss L_r = the CLIP
contrastive loss on retain pairs. Gradients are taken only for the candidate layers and
averaged over batches. A batch is ``(images, texts)``; see :class:`.adapter.Encoders`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .adapter import Encoders, Images, Texts

logger = logging.getLogger(__name__)

Batch = tuple[Images, Texts]


def forget_loss(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """SLUG forget loss: mean over pairs of 1 - cos(f_img, f_txt); (B, D), (B, D) -> scalar."""
    return (1.0 - F.cosine_similarity(image_features, text_features, dim=-1)).mean()


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss on matched pairs (Radford et al. 2021); (B, D), (B, D) -> scalar."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale * image_features @ text_features.T  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@dataclass
class LayerGradients:
    """Batch-averaged gradients of L_f and L_r for each candidate layer (float32, on the model's device)."""

    names: list[str]
    forget: dict[str, torch.Tensor]
    retain: dict[str, torch.Tensor]
    forget_loss: float
    retain_loss: float


@contextmanager
def grads_only_for(model: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Eval mode, requires_grad only on ``params``; both restored afterwards (the model is not changed)."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    wanted = {id(p) for p in params}
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _pair_features(
    encoders: Encoders, batch: Batch, what: str, min_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{what}: expected (images, texts) pairs, got {type(batch).__name__}")
    images = encoders.prepare_images(batch[0], f"{what} images")
    if images.shape[0] < min_size:
        raise ValueError(
            f"{what}: the contrastive retain loss needs >= {min_size} pairs per batch, got {images.shape[0]}"
        )
    tokens = encoders.prepare_texts(batch[1], f"{what} texts", count=images.shape[0])
    return encoders.encode_image(images), encoders.encode_text(tokens)  # (B, D), (B, D)


def _average_grads(
    encoders: Encoders, batches: Iterable[Batch], names: list[str], params: list[nn.Parameter], kind: str,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], float]:
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    total_loss, count = 0.0, 0
    for i, batch in enumerate(
        tqdm(batches, desc=f"SLUG {kind} gradients", disable=not progress, leave=False)
    ):
        what = f"{kind} batch {i}"
        img, txt = _pair_features(encoders, batch, what, min_size=2 if kind == "retain" else 1)
        loss = (
            forget_loss(img, txt) if kind == "forget" else contrastive_loss(img, txt, encoders.logit_scale())
        )
        if not torch.isfinite(loss):
            raise ValueError(
                f"{what}: the {kind} loss is {loss.item()} (NaN/inf); check the model weights and inputs"
            )
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, grad in zip(sums, grads):
            if grad is not None:
                acc += grad.float()
        total_loss += loss.item()
        count += 1
    if count == 0:
        raise ValueError(f"{kind}: no batches given (need at least one (images, texts) pair)")
    averaged = {name: acc / count for name, acc in zip(names, sums)}
    for name, grad in averaged.items():
        if not torch.isfinite(grad).all():
            raise ValueError(
                f"{kind} gradient of layer {name!r} contains NaN or inf; check the model weights and inputs"
            )
    return averaged, total_loss / count


def layer_gradients(
    encoders: Encoders,
    forget: Iterable[Batch],
    retain: Iterable[Batch],
    layers: list[str] | None = None,
    progress: bool = True,
) -> LayerGradients:
    """One pass over forget and retain batches: grad of L_f and L_r for each candidate layer, averaged over
    batches."""
    candidates = encoders.named_layers()
    if layers is not None:
        by_name = dict(candidates)
        unknown = [n for n in layers if n not in by_name]
        if unknown:
            raise ValueError(
                f"layers: unknown layer(s) {unknown[:3]}; valid names include {list(by_name)[:5]}"
            )
        candidates = [(n, by_name[n]) for n in layers]
    names = [n for n, _ in candidates]
    params = [p for _, p in candidates]
    with grads_only_for(encoders.model, params), torch.enable_grad():
        g_forget, l_forget = _average_grads(encoders, forget, names, params, "forget", progress)
        g_retain, l_retain = _average_grads(encoders, retain, names, params, "retain", progress)
    logger.info(
        "SLUG gradients for %d layers: forget loss %.4f, retain loss %.4f", len(names), l_forget, l_retain
    )
    return LayerGradients(names, g_forget, g_retain, l_forget, l_retain)
