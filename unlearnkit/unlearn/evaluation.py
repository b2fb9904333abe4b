"""Default SLUG evaluation: zero-shot top-1 recognition of forget and retain pairs.

Classes are the distinct texts of all pairs (the concept's caption(s) plus the retain captions).
forget metric = share of forget images whose best-matching text is their own (0 = forgotten);
retain metric = the same share on retain images (utility). Users with a benchmark (ImageNet
zero-shot, a judge classifier) pass their own ``metrics()`` callback instead.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import Encoders
from .gradients import Batch
from .layer_step import stepped_layer
from .step_search import Evaluate

logger = logging.getLogger(__name__)

Prepared = list[tuple[torch.Tensor, torch.Tensor]]  # [(images (B, C, H, W), tokens (B, L))]
Metrics = Callable[[], tuple[float, float]]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """model.eval() inside, the previous train/eval mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def prepare_pairs(encoders: Encoders, batches: Iterable[Batch], what: str) -> Prepared:
    """Check and convert every (images, texts) batch once, so evaluations do not redo it."""
    out = []
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"{what} batch {i}: expected (images, texts), got {type(batch).__name__}")
        images = encoders.prepare_images(batch[0], f"{what} batch {i} images")
        out.append(
            (images, encoders.prepare_texts(batch[1], f"{what} batch {i} texts", count=images.shape[0]))
        )
    if not out:
        raise ValueError(f"{what}: no batches given")
    return out


def recognition(image_features: torch.Tensor, class_features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 zero-shot accuracy: share of images (N, D) whose most similar class (K, D) is their label
    (N,)."""
    sims = F.normalize(image_features, dim=-1) @ F.normalize(class_features, dim=-1).T  # (N, K)
    return float((sims.argmax(dim=-1) == labels).float().mean())


@torch.no_grad()
def zero_shot_metrics(encoders: Encoders, forget: Prepared, retain: Prepared) -> tuple[float, float]:
    """(forget recognition, retain recognition) with the distinct texts of both sets as classes."""
    tokens = [t for _, t in forget + retain]
    width = max(t.shape[1] for t in tokens)
    rows = torch.cat([F.pad(t, (0, width - t.shape[1])) for t in tokens])  # (N, L)
    classes, labels = torch.unique(rows, dim=0, return_inverse=True)  # (K, L), (N,)
    class_features = encoders.encode_text(classes.to(rows.device))
    n_forget = sum(t.shape[0] for _, t in forget)
    scores = []
    for pairs, lab in ((forget, labels[:n_forget]), (retain, labels[n_forget:])):
        images = torch.cat([encoders.encode_image(x) for x, _ in pairs])  # (N, D)
        scores.append(recognition(images, class_features, lab))
    return scores[0], scores[1]


@torch.no_grad()
def forget_similarity(encoders: Encoders, forget: Prepared) -> float:
    """Mean cos(f_img, f_txt) over the forget pairs (the quantity the SLUG edit lowers)."""
    with eval_mode(encoders.model):
        sims = [
            F.cosine_similarity(encoders.encode_image(x), encoders.encode_text(t), dim=-1) for x, t in forget
        ]
    return float(torch.cat(sims).mean())


def make_evaluator(encoders: Encoders, layer: str, grad_forget: torch.Tensor, metrics: Metrics) -> Evaluate:
    """evaluate(step): temporarily apply the step to ``layer``, call ``metrics()``, restore the exact
    weights."""

    def evaluate(step: float) -> tuple[float, float]:
        with stepped_layer(encoders.model, layer, grad_forget, step), eval_mode(encoders.model):
            return metrics()

    return evaluate


def _features(encode, inputs: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([encode(inputs[i : i + batch]) for i in range(0, inputs.shape[0], batch)])  # (N, D)


def class_metrics(encoders: Encoders, images: torch.Tensor, labels: torch.Tensor, class_tokens: torch.Tensor,
                  forget_classes: Iterable[int], batch: int = 512) -> Metrics:
    """metrics() -> (zero-shot top-1 on images of ``forget_classes``, top-1 on the other images).

    Images (N, C, H, W) are classified against all K class prompts (K, L) (CLIP zero-shot, as SLUG
    measures forgetting). The tower the adapter may not edit is encoded once and cached.
    """
    images = encoders.prepare_images(images, "images")
    tokens = encoders.prepare_texts(class_tokens, "class_tokens")
    labels = torch.as_tensor(labels, device=images.device)
    if labels.shape != (images.shape[0],) or int(labels.min()) < 0 or int(labels.max()) >= tokens.shape[0]:
        raise ValueError(
            f"labels: expected {images.shape[0]} class indices in 0..{tokens.shape[0] - 1}, got "
            f"{tuple(labels.shape)}"
        )
    forget = torch.isin(labels, torch.tensor(sorted(set(forget_classes)), device=labels.device))
    if not forget.any() or forget.all():
        raise ValueError(f"forget_classes: need images both of and outside {sorted(set(forget_classes))}")
    tower = getattr(encoders, "tower", "both")
    cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def metrics() -> tuple[float, float]:
        with eval_mode(encoders.model):
            img = cache.get("image") if tower == "text" else None
            txt = cache.get("text") if tower == "image" else None
            img = _features(encoders.encode_image, images, batch) if img is None else img
            txt = _features(encoders.encode_text, tokens, batch) if txt is None else txt
        cache.update(image=img, text=txt)
        return recognition(img[forget], txt, labels[forget]), recognition(img[~forget], txt, labels[~forget])

    return metrics
