"""Layer importance, gradient alignment, their Pareto front and the layer choice (arXiv 2407.11867 §3.2).

I_l = ||grad_l L_f|| / ||theta_l|| (how much the forget loss leans on layer l, relative to its size);
A_l = |cos(grad_l L_f, grad_l L_r)| (how much forgetting there also moves retain behaviour).
Good layers have high I and low A; candidates are the layers no other layer beats on both.
"""
from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

EPS = 1e-12
_BLOCK = re.compile(r"^(.*?)\.(\d+)\.")  # "<stack>.<index>." e.g. "text_model.encoder.layers.11."


def importance(grad: torch.Tensor, weight: torch.Tensor) -> float:
    """Layer importance I = ||g|| / ||theta||."""
    return float(grad.float().norm() / weight.detach().float().norm().clamp_min(EPS))


def alignment(grad_forget: torch.Tensor, grad_retain: torch.Tensor) -> float:
    """Gradient alignment A = |cos(g_f, g_r)|; 0 when either gradient is zero."""
    f, r = grad_forget.float().flatten(), grad_retain.float().flatten()
    denom = f.norm() * r.norm()
    return 0.0 if denom <= EPS else float((f @ r).abs() / denom)


def pareto_front(
    importance: Sequence[float] | np.ndarray, alignment: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Indices of points not dominated (no other has I >= and A <= with one strict), sorted by alignment."""
    imp = np.asarray(importance, dtype=np.float64)
    ali = np.asarray(alignment, dtype=np.float64)
    if imp.ndim != 1 or imp.shape != ali.shape:
        raise ValueError(
            f"importance/alignment: expected two 1-D arrays of one length, got {imp.shape} and {ali.shape}"
        )
    if not (np.isfinite(imp).all() and np.isfinite(ali).all()):
        raise ValueError("importance/alignment: contain NaN or inf (were the gradients finite?)")
    ge = imp[None, :] >= imp[:, None]  # [i, j]: j at least as important as i
    le = ali[None, :] <= ali[:, None]
    strict = (imp[None, :] > imp[:, None]) | (ali[None, :] < ali[:, None])
    dominated = (ge & le & strict).any(axis=1)
    front = np.flatnonzero(~dominated)
    return front[np.lexsort((-imp[front], ali[front]))]


def block_position(name: str) -> tuple[str, int] | None:
    """(block stack, block index) of a layer name, e.g. ("text_model.encoder.layers", 11); None outside a
    stack."""
    m = _BLOCK.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def exclude_last_blocks(names: Sequence[str], count: int) -> list[str]:
    """Names without the layers of the last ``count`` blocks of every block stack (CLIP skip: count = skip -
    1).

    SD2 and "CLIP skip 2" setups condition on the penultimate block's output, so an edit of the last
    block has no effect there; ``count=1`` keeps SLUG off it. Layers outside a block stack are kept.
    """
    if count < 0:
        raise ValueError(f"exclude_last_blocks: must be >= 0, got {count}")
    positions = [block_position(n) for n in names]
    deepest: dict[str, int] = {}
    for pos in positions:
        if pos:
            deepest[pos[0]] = max(deepest.get(pos[0], 0), pos[1])
    return [n for n, pos in zip(names, positions) if pos is None or pos[1] <= deepest[pos[0]] - count]


def relative_depth(names: Sequence[str]) -> np.ndarray:
    """Depth of each layer in [0, 1] within its block stack ("...layers.<i>." / "resblocks.<i>."); 0 if
    none."""
    parsed = [_BLOCK.match(n) for n in names]
    deepest: dict[str, int] = {}
    for m in parsed:
        if m:
            deepest[m.group(1)] = max(deepest.get(m.group(1), 0), int(m.group(2)))
    return np.array([(int(m.group(2)) + 1) / (deepest[m.group(1)] + 1) if m else 0.0 for m in parsed])


def pareto_ranks(
    importance: Sequence[float] | np.ndarray, alignment: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Non-dominated sorting: rank 0 = the Pareto front, rank 1 = the front once rank 0 is removed, …"""
    imp, ali = np.asarray(importance, dtype=np.float64), np.asarray(alignment, dtype=np.float64)
    ranks = np.full(imp.shape, -1)
    left = np.arange(imp.shape[0])
    rank = 0
    while left.size:
        front = left[pareto_front(imp[left], ali[left])]
        ranks[front] = rank
        left = np.setdiff1d(left, front)
        rank += 1
    return ranks


def stack_of(name: str) -> str:
    """The block stack a layer belongs to ("" outside any): one Pareto front per stack, i.e. per tower."""
    pos = block_position(name)
    return pos[0] if pos else ""


def grouped_ranks(names: Sequence[str], importance: np.ndarray, alignment: np.ndarray,
                  group: Callable[[str], str] = stack_of) -> np.ndarray:
    """Pareto ranks within each group of layers, by default each block stack (SLUG ranks the vision and the
    text tower's layers separately)."""
    stacks = [group(n) for n in names]
    ranks = np.zeros(len(names), dtype=np.int64)
    for stack in dict.fromkeys(stacks):
        members = np.array([i for i, s in enumerate(stacks) if s == stack])
        ranks[members] = pareto_ranks(importance[members], alignment[members])
    return ranks


@dataclass
class LayerScores:
    """Importance and alignment of every candidate layer, the Pareto front (indices into names) and ranks.

    ``ranks``: Pareto rank of each layer (0 = on the front); by default computed over all layers at once.
    """

    names: list[str]
    importance: np.ndarray
    alignment: np.ndarray
    front: np.ndarray
    ranks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ranks is None:
            self.ranks = pareto_ranks(self.importance, self.alignment)

    @property
    def front_names(self) -> list[str]:
        return [self.names[i] for i in self.front]

    def candidate_order(self) -> list[int]:
        """Layers in the order SLUG tries them: Pareto rank, then deepest, then most important."""
        depth = relative_depth(self.names)
        return sorted(
            range(len(self.names)), key=lambda i: (self.ranks[i], -depth[i], -self.importance[i], -i)
        )

    def index(self, name: str) -> int:
        check_layer_name(name, self.front_names + self.names)
        return self.names.index(name)


def check_layer_name(name: str, names: Sequence[str]) -> None:
    """Raise a ValueError naming ``name`` and listing close / some valid names unless it is in ``names``."""
    if name in names:
        return
    unique = list(dict.fromkeys(names))
    close = difflib.get_close_matches(name, unique, n=3, cutoff=0.5)
    hint = f"; did you mean {close}?" if close else ""
    raise ValueError(
        f"layer: {name!r} is not a candidate layer{hint} (valid names include {unique[:5]}; {len(unique)} "
        "in all)"
    )


def layer_scores(
    forget_grads: Mapping[str, torch.Tensor],
    retain_grads: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    group: Callable[[str], str] = stack_of,
) -> LayerScores:
    """I and A for every layer in ``forget_grads`` (in its order), Pareto ranks within each ``group`` and the
    front."""
    names = list(forget_grads)
    if not names:
        raise ValueError("forget_grads: no layers")
    missing = [n for n in names if n not in retain_grads or n not in weights]
    if missing:
        raise ValueError(f"retain_grads/weights: missing layer(s) {missing[:3]}")
    imp = np.array([importance(forget_grads[n], weights[n]) for n in names])
    ali = np.array([alignment(forget_grads[n], retain_grads[n]) for n in names])
    for n, i, a in zip(names, imp, ali):
        if not (np.isfinite(i) and np.isfinite(a)):
            raise ValueError(
                f"layer {n!r}: importance {i} / alignment {a} is not finite (NaN gradient or weight?)"
            )
    ranks = grouped_ranks(names, imp, ali, group)
    front = np.flatnonzero(ranks == 0)
    return LayerScores(names, imp, ali, front[np.lexsort((-imp[front], ali[front]))], ranks)


def choose_layer(scores: LayerScores, layer: str | None = None) -> str:
    """The layer to edit: ``layer`` if given (any candidate), else the first of ``candidate_order`` (deepest
    on the front)."""
    if layer is not None:
        i = scores.index(layer)
        if i not in set(scores.front.tolist()):
            logger.warning(
                "layer %r is not on the Pareto front %s; editing it anyway", layer, scores.front_names
            )
        return layer
    # deepest front layer first; among equally deep ones (two towers, sublayers of one block) the most
    # important
    best = scores.candidate_order()[0]
    logger.info("SLUG layer: %s (I=%.4g, A=%.4g; Pareto front has %d layers)",
                scores.names[best], scores.importance[best], scores.alignment[best], len(scores.front))
    return scores.names[best]
