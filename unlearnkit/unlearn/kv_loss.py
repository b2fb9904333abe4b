"""SLUG's forget loss for SD: the keys and values the UNet's cross-attention computes from the text.

An SD UNet reads a prompt only through ``attn2.to_k`` / ``attn2.to_v`` applied to *every* token state
(measured in the tiny world: a style reaches it from the padding states after <end>, never read by
CLIP's pooled feature, which SLUG's 1 - cos(f_img, f_txt) loss uses). So forgetting is asked of those:

    L_f = mean_m ||W_m e(c) - W_m^0 e^0(c_anchor)||^2 / mean ||W_m^0 e^0(c_anchor)||^2

over the K/V projections m, all token positions and the forget captions c, where e are the text encoder's
output states, ^0 the unedited model and c_anchor the same caption naming the anchor (what to say instead)
— the objective UCE (Gandikota et al. 2024, Eq. 5) solves in closed form, here one SLUG gradient. Its
gradient reaches every text-encoder layer (through e) and every K/V projection (through W); forgetting
*lowers* it, so SLUG's step descends it.
"""
from __future__ import annotations

import re

import torch

from .denoising import LossBatch
from .sd_model import SDModel

STYLE_WORD = " style"


def concept_key(text: str) -> str:
    """The words a caption names a concept by: "bold style" -> "bold"; "Van Gogh" -> "Van Gogh"."""
    key = " ".join(text.split())
    styled = key.lower().endswith(STYLE_WORD) and key.lower() != "style"
    return key[: -len(STYLE_WORD)].strip() if styled else key


def anchor_caption(caption: str, concept: str, anchor: str) -> str:
    """The caption with the concept's words replaced by the anchor's (whole words, any case).

    "a digit in bold style", concept "bold style", anchor "plain" -> "a digit in plain style".
    """
    key, replacement = concept_key(concept), concept_key(anchor)
    if not key:
        raise ValueError("concept: give the name of what to forget (e.g. 'bold style')")
    pattern = re.compile(rf"(?<!\w){re.escape(key)}(?!\w)", re.IGNORECASE)
    if not pattern.search(caption):
        raise ValueError(f"forget captions: {caption!r} does not name the concept {key!r}; the forget "
                         f"loss maps each forget caption onto the same caption naming the anchor instead")
    return " ".join(pattern.sub(replacement, caption).split())


def anchor_captions(captions: list[str], concept: str, anchor: str) -> list[str]:
    """:func:`anchor_caption` for each caption; the anchor must be given and differ from the concept."""
    if not anchor or not anchor.strip():
        raise ValueError(f"anchor: give what to say instead of {concept.strip()!r} (e.g. 'plain' for a "
                         f"style): the forget loss moves the concept's captions onto the same captions "
                         f"naming the anchor")
    if concept_key(anchor).lower() == concept_key(concept).lower():
        raise ValueError(f"anchor: {anchor!r} names the concept itself; give a replacement")
    return [anchor_caption(c, concept, anchor) for c in captions]


@torch.no_grad()
def kv_targets(sd: SDModel, anchor_ids: torch.Tensor) -> list[torch.Tensor]:
    """W_m^0 e^0(c_anchor) for every K/V projection m of the unedited model: a list of (B, L, d_m)."""
    states = sd.text_states(anchor_ids)
    return [proj(states).float() for proj in sd.kv_projections().values()]


def kv_loss(sd: SDModel, forget_ids: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean over projections of ||W_m e(c) - target_m||^2 / mean ||target_m||^2 (scale-free per layer)."""
    states = sd.text_states(forget_ids)  # (B, L, width)
    terms = [(proj(states).float() - t).pow(2).sum(-1).mean() / t.pow(2).sum(-1).mean().clamp_min(1e-12)
             for proj, t in zip(sd.kv_projections().values(), targets)]
    return torch.stack(terms).mean()


def kv_batches(sd: SDModel, forget_ids: torch.Tensor, anchor_ids: torch.Tensor,
               size: int = 128) -> list[LossBatch]:
    """The K/V forget loss as gradient batches; the anchor targets are taken from the model as it is now."""
    if forget_ids.shape != anchor_ids.shape or forget_ids.shape[0] == 0:
        raise ValueError(f"forget/anchor captions: expected equal non-empty token batches, got "
                         f"{tuple(forget_ids.shape)} and {tuple(anchor_ids.shape)}")
    out = []
    for i in range(0, forget_ids.shape[0], size):
        ids, targets = forget_ids[i:i + size], kv_targets(sd, anchor_ids[i:i + size])
        out.append(lambda ids=ids, targets=targets: (kv_loss(sd, ids, targets), int(ids.shape[0])))
    return out
