"""What SD SLUG's step search reads on generated images, and the tiny world's default retain pairs.

Tiny world and a style: the tiny world's own search prompts (the style's, every other style's and prompts
naming none; style and digit read zero-shot by its CLIP), as the benchmark measures. Any other image tower
or concept: the forget captions' images must stop reading as the concept rather than the anchor, and each
retain caption's images must keep reading as that caption among the retain captions.
"""
from __future__ import annotations

from typing import Any

import torch

from ...unlearnkit.unlearn.generation_metric import Attribute, Generate, SearchPrompts, generation_metrics
from .towers import ImageTower, TinyWorldTower

SEARCH_FORGET = 32  # prompts naming the concept in each search step
SEARCH_RETAIN = 48  # retain captions in each search step (generic search)
TINY_PER_STYLE, TINY_UNNAMED = 24, 60  # tiny world: prompts per other style / naming no style


def search_metrics(tower: ImageTower, generate: Generate, concept: str, anchor: str,
                   forget_captions: list[str], retain_captions: list[str]):
    """metrics() -> (forget, retain) of :func:`unlearnkit.unlearn.generation_metric.generation_metrics`."""
    tiny = tiny_style(tower, concept)
    prompts = tiny_prompts(tiny) if tiny is not None else generic_prompts(concept, anchor, forget_captions,
                                                                        retain_captions)
    adapter = tower.adapter

    def embed_texts(texts: list[str]) -> torch.Tensor:
        return adapter.encode_text(adapter.tokenize(texts).to(adapter.device))

    def embed_images(pixels: torch.Tensor) -> torch.Tensor:
        return tower.features(pixels).flatten(1)

    return generation_metrics(generate, prompts, embed_images, embed_texts)


def tiny_style(tower: ImageTower, concept: str) -> Any | None:
    """The tiny world's style the concept names when the tower is the tiny world's, else None."""
    found = TinyWorldTower.concept(concept) if isinstance(tower, TinyWorldTower) else None
    return found if found is not None and found.kind == "style" else None


def tiny_prompts(concept: Any) -> SearchPrompts:
    from ...unlearnkit.tinyworld.tasks.slug_generation import sd_search_prompts

    return sd_search_prompts(concept, TINY_PER_STYLE, SEARCH_FORGET, TINY_UNNAMED)


def generic_prompts(concept: str, anchor: str, forget_captions: list[str],
                    retain_captions: list[str]) -> SearchPrompts:
    forget = [forget_captions[i % len(forget_captions)] for i in range(SEARCH_FORGET)]
    retain = list(dict.fromkeys(retain_captions))[:SEARCH_RETAIN]
    if len(retain) < 2:
        raise ValueError("retain_captions: the search needs at least 2 different retain captions")
    groups = torch.tensor([0] * len(forget) + [1] * len(retain))
    named = Attribute("concept", (concept.strip(), anchor.strip()),
                      torch.tensor([0] * len(forget) + [-1] * len(retain)))
    kept = Attribute("caption", tuple(retain), torch.tensor([-1] * len(forget) + list(range(len(retain)))))
    return SearchPrompts(forget + retain, groups, named, (kept,))


def tiny_retain_images(concept: str, seed: int, count: int = 128) -> tuple[torch.Tensor, list[str]]:
    """Public tiny-world images of the other classes as an IMAGE (B, H, W, 3) in [0, 1], half of their
    captions naming their style and half none."""
    from ...unlearnkit.tinyworld.data import load_world
    from ...unlearnkit.tinyworld.tasks.slug_pairs import captioned_pairs

    found = TinyWorldTower.concept(concept)
    public = load_world().public_set()
    others = public.where(~found.mask(public)) if found is not None else public
    [(images, captions)] = captioned_pairs(others, count, seed + 1, "digit", offset=1)
    return ((images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous(), captions
