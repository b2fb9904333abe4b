"""Importance, alignment and Pareto ranks over SD's candidate layers, one front per tower (SLUG §3.2).

SLUG ranks each tower's layers separately (its code: one front for CLIP's image and one for its text
tower); here the towers are the text encoder and the UNet's cross-attention K/V projections. Candidates are
tried by Pareto rank within their tower, then by importance per unit of alignment I / A (the slope of the
layer's point seen from the origin), alternating between the towers at equal rank. The order decides only
how soon the step search finds a layer; measured in the tiny world, lowest-A-first and deepest-first both
spent their first searches on layers no step makes forget a style.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .pareto import EPS, LayerScores, layer_scores
from .sd_model import split_name


def tower_of(qualified: str) -> str:
    """"unet.…" -> "unet": the group a layer is ranked in."""
    return split_name(qualified)[0]


def sd_layer_scores(forget_grads: Mapping[str, torch.Tensor], retain_grads: Mapping[str, torch.Tensor],
                    weights: Mapping[str, torch.Tensor]) -> LayerScores:
    """I_l = ||g_f|| / ||theta_l||, A_l = |cos(g_f, g_r)| and per-tower Pareto ranks of every layer."""
    return layer_scores(forget_grads, retain_grads, weights, group=tower_of)


def candidate_order(scores: LayerScores) -> list[str]:
    """Layers in search order: Pareto rank, then I / A (high first); towers alternate at equal rank."""
    ratio = scores.importance / np.maximum(scores.alignment, EPS)
    queues: dict[str, list[int]] = {}
    for i in sorted(range(len(scores.names)), key=lambda i: (scores.ranks[i], -ratio[i])):
        queues.setdefault(tower_of(scores.names[i]), []).append(i)
    order: list[int] = []
    while any(queues.values()):
        rank = min(scores.ranks[q[0]] for q in queues.values() if q)
        for queue in queues.values():
            if queue and scores.ranks[queue[0]] == rank:
                order.append(queue.pop(0))
    return [scores.names[i] for i in order]
