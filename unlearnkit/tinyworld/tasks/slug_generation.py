"""SLUG for Stable Diffusion on the tiny world: a step-search metric measured on *generated* images.

CLIP zero-shot accuracy of the text tower is a proxy; SD reads every token state of the text
encoder, so a step that makes CLIP forget may still leave (or break) the concept in generation.
``generation_metrics`` instead copies the CLIP text tower (as SLUG's search has just stepped it)
into the pipeline's text encoder, generates images for every class prompt with fixed noise, and
classifies them with a frozen copy of the *unedited* CLIP (image tower vs class prompts) — only the
model being unlearned is used, no judge (the judges stay independent for measuring).
``sd_generation_metrics``: the same for SD SLUG (text encoder or UNet stepped in place), on a style's
search prompts (:func:`sd_search_prompts`).
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ...unlearn.evaluation import Metrics
from ...unlearn.generation_metric import Attribute, SearchPrompts
from ...unlearn.generation_metric import generation_metrics as core_generation_metrics
from ..data import TEMPLATES, caption
from ..judges import digit_prompts, style_prompts
from ..models import image_embeds, text_embeds
from ..pipeline import pipeline_images
from ..styles import STYLES
from ..tokenizer import tokenize
from .concept import Concept

logger = logging.getLogger(__name__)


def copy_text_tower(clip: nn.Module, text_encoder: nn.Module) -> None:
    """Load the CLIP text tower's current weights into an SD ``CLIPTextModel`` (either transformers
    layout)."""
    getattr(text_encoder, "text_model", text_encoder).load_state_dict(clip.text_model.state_dict())


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, class_features: torch.Tensor) -> torch.Tensor:
    """Zero-shot class indices (B,) of images (B, 3, 16, 16) in [-1, 1] against unit class features (K, D)."""
    return (F.normalize(image_embeds(classifier, images), dim=-1) @ class_features.T).argmax(dim=-1)


def generation_metrics(clip: nn.Module, pipe, concept: Concept, per_class: int = 4, steps: int = 10,
                       guidance: float = 4.0, seed: int = 1) -> Metrics:
    """metrics() -> (share of the concept's prompts whose images are still classified as it, accuracy on the
    others).

    ``clip`` is the model SLUG edits; ``pipe`` a tiny-world pipeline whose text encoder is overwritten
    while measuring and restored to ``clip``'s weights at construction time afterwards.
    """
    classifier = copy.deepcopy(clip).eval()  # frozen: the edits SLUG tries do not reach it
    with torch.no_grad():
        class_features = F.normalize(
            text_embeds(classifier, tokenize(concept.class_prompts())), dim=-1
        )  # (K, D)
    prompts, labels = concept.generation_prompts(per_class)
    own = labels == concept.index

    def metrics() -> tuple[float, float]:
        copy_text_tower(clip, pipe.text_encoder)
        try:
            images = pipeline_images(pipe, prompts, steps=steps, guidance=guidance, seed=seed)
        finally:
            copy_text_tower(classifier, pipe.text_encoder)
        pred = classify(classifier, images, class_features)
        return float((pred[own] == concept.index).float().mean()), float(
            (pred[~own] == labels[~own]).float().mean()
        )

    return metrics


def sd_search_prompts(concept: Concept, per_class: int = 24, forget_per_class: int = 32,
                      unnamed: int = 60) -> SearchPrompts:
    """SD SLUG's search prompts for a style: ``forget_per_class`` naming it (group 0), ``per_class`` naming
    each other style (group 1: style and digit checked), ``unnamed`` naming no style (group 2: digit
    checked); digits and caption templates cycle. The forget prompts' digits are left to the bench."""
    if concept.kind != "style":
        raise ValueError(f"concept: SD SLUG's search prompts are for a style, got {concept.spec}")
    rows = [(caption(i % 10, None, i % len(TEMPLATES)), 2, -1, i % 10) for i in range(unnamed)]
    for k, style in enumerate(STYLES):
        own = k == concept.index
        for i in range(forget_per_class if own else per_class):
            text = caption(i % 10, style, (i + k) % len(TEMPLATES))
            rows.append((text, 0 if own else 1, k, -1 if own else i % 10))
    prompts, groups, styles, digits = zip(*rows)
    return SearchPrompts(list(prompts), torch.tensor(groups),
                         Attribute("style", tuple(style_prompts()), torch.tensor(styles)),
                         (Attribute("digit", tuple(digit_prompts()), torch.tensor(digits)),))


def sd_generation_metrics(clip: nn.Module, pipe, concept: Concept, per_class: int = 24,
                          forget_per_class: int = 32, unnamed: int = 60, steps: int = 10,
                          guidance: float = 4.0, seed: int = 1) -> Metrics:
    """metrics() -> (forget, retain) on images ``pipe`` generates as it is now (SD SLUG steps its text
    encoder or UNet in place), read zero-shot by a frozen copy of the tiny CLIP (never by the judges)."""
    classifier = copy.deepcopy(clip).eval()

    def generate(prompts: list[str]) -> torch.Tensor:
        return pipeline_images(pipe, prompts, steps=steps, guidance=guidance, seed=seed)

    return core_generation_metrics(generate, sd_search_prompts(concept, per_class, forget_per_class, unnamed),
                                   lambda images: image_embeds(classifier, images),
                                   lambda texts: text_embeds(classifier, tokenize(texts)))
