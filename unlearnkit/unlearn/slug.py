"""SLUG end to end (arXiv 2407.11867 Alg. 1): gradients -> scores -> layer -> step search -> delta.

The model is left unchanged: the result holds the chosen layer's delta, which becomes a patch
(:func:`SlugResult.to_patch`, then :func:`.patches.apply_patch` / :func:`.patches.save_patch`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import torch

from .adapter import Encoders
from .evaluation import Metrics, forget_similarity, make_evaluator, prepare_pairs, zero_shot_metrics
from .gradients import Batch, LayerGradients, layer_gradients
from .layer_step import slug_delta, stepped_layer
from .pareto import LayerScores, check_layer_name, choose_layer, exclude_last_blocks, layer_scores
from .patches import Patch, make_patch
from .step_search import StepSearchConfig, StepSearchResult, initial_step, search_step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlugConfig:
    """``layer``: edit this candidate layer (None: search the candidates, see below).

    ``max_layers``: without ``layer``, run the step search on up to this many layers in
    :meth:`.LayerScores.candidate_order` (the deepest Pareto-front layer first, as in SLUG; SLUG's code
    searches every front layer) and keep the first that meets both targets (else the best compromise).

    ``exclude_last_blocks``: leave the last N blocks of every block stack out of the candidates
    (CLIP skip: SD2 and "clip skip 2" read the penultimate block, so N = 1 there).
    """

    layer: str | None = None
    search: StepSearchConfig = field(default_factory=StepSearchConfig)
    progress: bool = True
    exclude_last_blocks: int = 0
    max_layers: int = 4

    def __post_init__(self) -> None:
        if self.exclude_last_blocks < 0:
            raise ValueError(f"exclude_last_blocks: must be >= 0, got {self.exclude_last_blocks}")
        if self.max_layers < 1:
            raise ValueError(f"max_layers: must be >= 1, got {self.max_layers}")


def allowed_layers(names: list[str], config: SlugConfig) -> list[str]:
    """The candidate layers SLUG may edit under ``config`` (a named ``layer`` must be one of them)."""
    allowed = exclude_last_blocks(names, config.exclude_last_blocks)
    if not allowed:
        raise ValueError(f"exclude_last_blocks={config.exclude_last_blocks}: leaves no candidate layer")
    if config.layer is not None:
        check_layer_name(config.layer, names)
        if config.layer not in allowed:
            raise ValueError(f"layer: {config.layer!r} is in the last {config.exclude_last_blocks} block(s), "
                             f"which exclude_last_blocks leaves out")
    return allowed


@dataclass
class SlugResult:
    """What SLUG found: layer scores, the chosen layer and its forget gradient, the step search(es)."""

    scores: LayerScores
    layer: str
    grad_forget: torch.Tensor
    search: StepSearchResult
    similarity_before: float  # mean cos(f_img, f_txt) on the forget pairs
    similarity_after: float
    gradients: LayerGradients | None = None
    tried: list[tuple[str, StepSearchResult]] = field(default_factory=list)  # every layer searched, in order

    @property
    def step(self) -> float:
        return self.search.step

    @property
    def delta(self) -> torch.Tensor:
        return slug_delta(self.grad_forget, self.search.step)

    def metrics(self) -> dict[str, float]:
        i = self.scores.names.index(self.layer)
        return {
            "forget_before": self.search.baseline[0],
            "retain_before": self.search.baseline[1],
            "forget_after": self.search.forget_metric,
            "retain_after": self.search.retain_metric,
            "similarity_before": self.similarity_before,
            "similarity_after": self.similarity_after,
            "importance": float(self.scores.importance[i]),
            "alignment": float(self.scores.alignment[i]),
            "search_success": float(self.search.success),
            "search_evals": float(
                1 + sum(len(s.history) for _, s in self.tried or [(self.layer, self.search)])
            ),
            "layers_tried": float(len(self.tried) or 1),
        }

    def to_patch(self, encoders: Encoders, concept: str, dtype: torch.dtype | None = None) -> Patch:
        """The result as a patch for ``encoders.model`` (delta in the layer's dtype unless ``dtype``).

        Call it before applying other patches to that layer.
        """
        return make_patch(encoders.model, self.layer, self.delta, concept, self.step, self.metrics(), dtype)


def pick_search(
    tried: list[tuple[str, StepSearchResult]], retain_drop: float
) -> tuple[str, StepSearchResult]:
    """The first layer whose search met both targets; else the one that forgot most while utility held."""
    for name, search in tried:
        if search.success:
            return name, search
    floor = tried[0][1].baseline[1] - retain_drop
    holding = [(name, s) for name, s in tried if s.retain_metric >= floor]
    return min(holding, key=lambda t: t[1].forget_metric) if holding else tried[0]


def _search_layers(
    encoders: Encoders, order: list[str], grads: LayerGradients, layers: dict, metrics: Metrics,
    config: SlugConfig,
) -> list[tuple[str, StepSearchResult]]:
    tried: list[tuple[str, StepSearchResult]] = []
    baseline = None
    for name in order:
        grad = grads.forget[name]
        if float(grad.norm()) == 0 and len(order) > 1:
            logger.info("SLUG: skipping %s (zero forget gradient)", name)
            continue
        start = initial_step(layers[name], grad, config.search.initial_divisor)
        search = search_step(
            make_evaluator(encoders, name, grad, metrics), start, config.search, config.progress, baseline
        )
        baseline = search.baseline
        tried.append((name, search))
        if search.success:
            break
        logger.info("SLUG: %s did not meet both targets (%s)", name, search.reason)
    if not tried:
        raise ValueError("every candidate layer has a zero forget gradient; nothing to edit")
    return tried


def run_slug(
    encoders: Encoders, forget: Iterable[Batch], retain: Iterable[Batch], config: SlugConfig | None = None,
    metrics: Metrics | None = None, keep_gradients: bool = False,
) -> SlugResult:
    """Single Layer Unlearning Gradient: one gradient pass, one layer, one step (model left unchanged).

    ``forget``/``retain``: (images, texts) batches; ``metrics()`` -> (forget metric, retain metric)
    measured on the current model (default: zero-shot recognition over the pairs' distinct texts).
    """
    config = config or SlugConfig()
    layers = dict(encoders.named_layers())
    allowed = allowed_layers(list(layers), config)
    forget_p = prepare_pairs(encoders, forget, "forget")
    retain_p = prepare_pairs(encoders, retain, "retain")
    grads = layer_gradients(encoders, forget_p, retain_p, layers=allowed, progress=config.progress)
    scores = layer_scores(grads.forget, grads.retain, {n: layers[n] for n in grads.names})
    if config.layer is not None:
        order = [choose_layer(scores, config.layer)]
    else:
        order = [scores.names[i] for i in scores.candidate_order()[: config.max_layers]]
    metrics = metrics or partial(zero_shot_metrics, encoders, forget_p, retain_p)
    tried = _search_layers(encoders, order, grads, layers, metrics, config)
    layer, search = pick_search(tried, config.search.retain_drop)
    grad = grads.forget[layer]
    before = forget_similarity(encoders, forget_p)
    with stepped_layer(encoders.model, layer, grad, search.step):
        after = forget_similarity(encoders, forget_p)
    logger.info(
        "SLUG %s step %.4g: forget similarity %.4f -> %.4f, search %s", layer, search.step, before, after,
        "succeeded" if search.success else f"failed ({search.reason})",
    )
    return SlugResult(scores, layer, grad, search, before, after, grads if keep_gradients else None, tried)
