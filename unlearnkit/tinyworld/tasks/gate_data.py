"""Gate training data from the tiny world: each shard's latents and the pooled prompt of each image."""
from __future__ import annotations

import torch

from ..data import TEMPLATES, caption, load_world, shard_names
from ..models import encode_prompts
from ..stages import latents_of
from ..styles import STYLES


def image_captions(
    digits: torch.Tensor, styles: torch.Tensor, g: torch.Generator, p_style: float = 0.8
) -> list[str]:
    """One random caption per image (a template, with its style w.p. p_style), like the UNets' training."""
    templates = torch.randint(0, len(TEMPLATES), (len(digits),), generator=g).tolist()
    styled = (torch.rand(len(digits), generator=g) < p_style).tolist()
    return [
        caption(d, STYLES[s] if w else None, t)
        for d, s, t, w in zip(digits.tolist(), styles.tolist(), templates, styled)
    ]


@torch.no_grad()
def pooled_prompts(text_encoder, prompts: list[str]) -> torch.Tensor:
    """Mean over tokens of the text encoder's last hidden states: what a prompt-reading gate reads, (B, D)."""
    return encode_prompts(text_encoder, prompts).mean(dim=1)


def gate_data(shard_set: str, text_encoder, vae, seed: int = 0) -> tuple[dict, dict, torch.Tensor]:
    """({shard: latents}, {shard: pooled prompts}, pooled empty prompt) for train_gate."""
    world, g = load_world(), torch.Generator().manual_seed(seed)
    latents, contexts = {}, {}
    for name in shard_names(shard_set):
        data = world.shard_source(shard_set, name)
        latents[name] = latents_of(vae, data.images)[0]
        contexts[name] = pooled_prompts(text_encoder, image_captions(data.digits, data.styles, g))
    return latents, contexts, pooled_prompts(text_encoder, [""])[0]
