"""SLUG on the tiny world: its CLIP as an adapter and a concept's forget/retain image-text pairs; for SD
SLUG (a style), the K/V forget loss and the denoising retain loss of its pairs.

Concepts are :class:`~unlearnkit.tinyworld.tasks.concept.Concept` ("digit:7", "bold style"). Forget pairs
are images of the concept with captions naming it (every caption template, so prompts in any
wording are hit); retain pairs are the other classes' images with their captions. Zero-shot
classification uses the tiny world's class prompts (``tinyworld.judges.digit_prompts`` / ``style_prompts``).
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ...unlearn.denoising import LossBatch, denoising_batches, draw_pairs
from ...unlearn.evaluation import Metrics, class_metrics
from ...unlearn.gradients import Batch
from ...unlearn.kv_loss import anchor_captions, kv_batches
from ...unlearn.sd_model import SDModel
from ...unlearn.targets import HFClipAdapter
from ..data import TEMPLATES, Subset, caption
from ..styles import STYLES
from ..tokenizer import tokenize
from .concept import Concept

logger = logging.getLogger(__name__)


def tiny_adapter(clip: nn.Module, tower: str = "text") -> HFClipAdapter:
    """Adapter on the tiny CLIP: its tokenizer (SD1.x padding) and its pixel range [-1, 1] (mean = std =
    0.5)."""
    adapter = HFClipAdapter(clip, tower=tower, tokenizer=tokenize)
    adapter.image_mean, adapter.image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return adapter


def pair_captions(subset: Subset, concept_kind: str, offset: int = 0) -> list[str]:
    """A caption per image, cycling through every template; style-kind captions always name the style."""
    out = []
    for i, (d, s) in enumerate(zip(subset.digits.tolist(), subset.styles.tolist())):
        named = concept_kind == "style" or (i + offset) % 2 == 1
        out.append(caption(d, STYLES[s] if named else None, (i + offset) % len(TEMPLATES)))
    return out


def _pick(n: int, count: int | None, gen: torch.Generator) -> torch.Tensor:
    perm = torch.randperm(n, generator=gen)
    return perm if count is None else perm[: min(count, n)]


def captioned_pairs(
    subset: Subset, count: int, seed: int = 0, kind: str = "digit", offset: int = 0
) -> list[Batch]:
    """One batch of ``count`` random images of ``subset`` with their captions (e.g. retain pairs for any
    concept)."""
    if len(subset) == 0:
        raise ValueError("subset: no images")
    picked = subset.where(_pick(len(subset), count, torch.Generator().manual_seed(seed)))
    return [(picked.images, pair_captions(picked, kind, offset))]


def concept_pairs(subset: Subset, concept: Concept, n_forget: int = 64, n_retain: int = 128,
                  seed: int = 0) -> tuple[list[Batch], list[Batch]]:
    """(forget, retain) batches: n_forget images of the concept, n_retain of the other classes, with
    captions."""
    if n_forget < 1 or n_retain < 2:
        raise ValueError(f"n_forget/n_retain: need >= 1 / >= 2, got {n_forget}/{n_retain}")
    mask = concept.mask(subset)
    if not mask.any() or int((~mask).sum()) < 2:
        raise ValueError(f"concept {concept.spec}: no images of it (or too few others) in the subset")
    return (captioned_pairs(subset.where(mask), n_forget, seed, concept.kind),
            captioned_pairs(subset.where(~mask), n_retain, seed + 1, concept.kind, offset=1))


def concept_metrics(encoders: HFClipAdapter, subset: Subset, concept: Concept, limit: int | None = None,
                    seed: int = 0) -> Metrics:
    """metrics() -> (zero-shot accuracy on the concept's images, on the other images) over ``subset``."""
    if limit is not None:
        subset = subset.where(_pick(len(subset), limit, torch.Generator().manual_seed(seed)))
    return class_metrics(encoders, subset.images, concept.labels(subset), tokenize(concept.class_prompts()),
                         [concept.index])


def tiny_sd_model(pipe) -> SDModel:
    """The tiny world's SD pipeline as SLUG edits it: its text encoder and UNet (both stepped in place)."""
    return SDModel(pipe.text_encoder, pipe.unet, pipe.scheduler.alphas_cumprod.float())


@torch.no_grad()
def latents_of(vae, images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, 16, 16) in [-1, 1] -> the latents SD was trained on (VAE posterior mean, scaled)."""
    return vae.encode(images).latent_dist.mean * vae.config.scaling_factor


def sd_loss_batches(sd: SDModel, vae, public: Subset, concept: Concept, anchor: str = "plain",
                    n_forget: int = 64, n_retain: int = 128, draws: int = 2,
                    seed: int = 0) -> tuple[list[LossBatch], list[LossBatch], torch.Tensor]:
    """(forget, retain) loss batches of SD SLUG for a style, and the retain prompts' token ids.

    Forget: the K/V loss of captions naming the concept against the same captions naming ``anchor``
    instead. Retain: the denoising loss of the other styles' public images, half of their captions naming
    their style and half none (prompts often name no style), ``draws`` (t, eps) each.
    """
    [(_, f_captions)], _ = concept_pairs(public, concept, n_forget, n_retain, seed)
    (r_images, r_captions), = captioned_pairs(public.where(~concept.mask(public)), n_retain, seed + 1,
                                              "digit", offset=1)
    retain_ids = tokenize(r_captions)
    pairs = draw_pairs(latents_of(vae, r_images), retain_ids, draws, len(sd.alphas_cumprod), seed + 1)
    anchor_ids = tokenize(anchor_captions(f_captions, concept.name, anchor))
    return kv_batches(sd, tokenize(f_captions), anchor_ids), denoising_batches(sd, pairs), retain_ids
