"""SLUG for Stable Diffusion on the tiny world: a step-search metric measured on *generated* images.

CLIP zero-shot accuracy of the text tower is a proxy; SD reads every token state of the text
encoder, so a step that makes CLIP forget may still leave (or break) the concept in generation.
``generation_metrics`` instead copies the CLIP text tower (as SLUG's search has just stepped it)
into the pipeline's text encoder, generates images for every class prompt with fixed noise, and
classifies them with a frozen copy of the *unedited* CLIP (image tower vs class prompts) — only the
model being unlearned is used, no judge (the judges stay independent for measuring).
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ...unlearn.evaluation import Metrics
from ..models import image_embeds, text_embeds
from ..pipeline import pipeline_images
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
