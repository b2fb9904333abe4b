"""SLUG on Stable Diffusion: one gradient pass, one layer (text encoder or UNet K/V), one step, a patch.

Alg. 1 of SLUG (arXiv 2407.11867) with SD's losses: per-layer gradients of the forget loss (the
cross-attention K/V loss, :mod:`.kv_loss`) and of the retain loss (denoising loss of retain pairs,
:mod:`.denoising`); importance and alignment with a Pareto front per tower (:mod:`.sd_scores`); then a
binary search on lambda in theta_l <- theta_l - lambda P(grad_l L_f), judged on generated images
(:mod:`.generation_metric`), continued to the smallest step that forgets (:func:`.step_search.refine_step`).
P projects the step off the directions the retain prompts feed the layer (:mod:`.retain_projection`;
``retain_energy=None``: SLUG's plain step). The model is left unchanged; the result becomes a patch.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .denoising import LossBatch
from .layer_step import stepped_layer
from .pareto import LayerScores
from .patches import Patch, make_patch
from .retain_projection import layer_inputs, principal_basis, project_off
from .sd_gradients import sd_layer_gradients
from .sd_model import TOWERS, UNET, SDModel, split_name
from .sd_scores import candidate_order, sd_layer_scores
from .slug import pick_search
from .step_search import StepSearchConfig, StepSearchResult, initial_step, search_smallest_step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SDSlugConfig:
    """``towers``: where SLUG may edit; ``layer``: edit this qualified layer ("text_encoder.…" / "unet.…");
    ``max_layers``: candidates searched (in :func:`.sd_scores.candidate_order`) before the best compromise;
    ``retain_energy``: share of the retain prompts' layer inputs the step leaves alone (None: plain step);
    ``margin``: the smallest forgetting step is taken ``1 + margin`` times when that still keeps utility."""

    towers: tuple[str, ...] = TOWERS
    layer: str | None = None
    max_layers: int = 4
    retain_energy: float | None = 0.96
    margin: float = 0.0
    search: StepSearchConfig = field(default_factory=lambda: StepSearchConfig(retain_drop=0.05))

    def __post_init__(self) -> None:
        if self.max_layers < 1:
            raise ValueError(f"max_layers: must be >= 1, got {self.max_layers}")
        if self.retain_energy is not None and not 0.0 < self.retain_energy < 1.0:
            raise ValueError(f"retain_energy: expected None or a fraction in (0, 1), "
                             f"got {self.retain_energy}")
        if not self.towers or any(t not in TOWERS for t in self.towers):
            raise ValueError(f"towers: expected a non-empty subset of {TOWERS}, got {self.towers}")
        if self.margin < 0:
            raise ValueError(f"margin: expected >= 0, got {self.margin}")


@dataclass
class SDSlugResult:
    """Scores of every candidate, the chosen layer, its step direction and every step search run."""

    scores: LayerScores
    layer: str
    direction: torch.Tensor
    search: StepSearchResult
    tried: list[tuple[str, StepSearchResult]]

    @property
    def step(self) -> float:
        return self.search.step

    @property
    def delta(self) -> torch.Tensor:
        """Delta theta_l = lambda * d_l (float32)."""
        return self.direction.detach().float() * float(self.search.step)

    def metrics(self) -> dict[str, float]:
        i = self.scores.names.index(self.layer)
        return {"forget_before": self.search.baseline[0], "retain_before": self.search.baseline[1],
                "forget_after": self.search.forget_metric, "retain_after": self.search.retain_metric,
                "importance": float(self.scores.importance[i]), "alignment": float(self.scores.alignment[i]),
                "search_success": float(self.search.success), "layers_tried": float(len(self.tried)),
                "search_evals": float(1 + sum(len(s.history) for _, s in self.tried))}

    def to_patch(self, sd: SDModel, concept: str, dtype: torch.dtype | None = None) -> Patch:
        """A patch for the tower holding the layer (named inside that tower; a UNet patch: target "unet")."""
        tower, name = split_name(self.layer)
        return make_patch(sd.modules[tower], name, self.delta, concept, self.step, self.metrics(), dtype,
                          target=UNET if tower == UNET else "")


def _direction(sd: SDModel, name: str, grad: torch.Tensor, config: SDSlugConfig,
               retain_ids: torch.Tensor | None) -> torch.Tensor:
    """-grad L_f (the K/V loss falls as the concept is forgotten), projected off the retain inputs."""
    direction = -grad
    if config.retain_energy is not None:
        basis = principal_basis(layer_inputs(sd, name, retain_ids), config.retain_energy)
        direction = project_off(direction, basis)
    return direction


def run_sd_slug(sd: SDModel, forget: list[LossBatch], retain: list[LossBatch],
                metrics: Callable[[], tuple[float, float]], config: SDSlugConfig | None = None,
                retain_ids: torch.Tensor | None = None) -> SDSlugResult:
    """Single Layer Unlearning Gradient on SD; ``metrics()`` -> (forget, retain) on the current (stepped)
    model.

    ``forget`` / ``retain``: loss batches (:mod:`.sd_gradients`) of a forget loss that forgetting lowers
    (:func:`.kv_loss.kv_batches`) and of the retain loss (:func:`.denoising.denoising_batches`).
    ``retain_ids``: the retain prompts' token ids (B, L), needed when ``config.retain_energy`` is set.
    """
    config = config or SDSlugConfig()
    if config.retain_energy is not None and retain_ids is None:
        raise ValueError("retain_ids: needed for the retain projection (or set retain_energy=None)")
    layers = dict(sd.named_layers(config.towers))
    if config.layer is not None and config.layer not in layers:
        raise ValueError(f"layer: {config.layer!r} is not a candidate; e.g. {list(layers)[:3]}")
    grads = sd_layer_gradients(sd, forget, retain, list(layers))
    scores = sd_layer_scores(grads.forget, grads.retain, layers)
    order = [config.layer] if config.layer else candidate_order(scores)[: config.max_layers]
    tried: list[tuple[str, StepSearchResult]] = []
    directions: dict[str, torch.Tensor] = {}
    baseline = None
    for name in order:
        directions[name] = _direction(sd, name, grads.forget[name], config, retain_ids)
        if float(directions[name].norm()) == 0:
            continue

        def evaluate(step: float, name: str = name) -> tuple[float, float]:
            with stepped_layer(sd.modules, name, directions[name], step):
                return metrics()

        start = initial_step(layers[name], directions[name], config.search.initial_divisor)
        search = search_smallest_step(evaluate, start, config.search, baseline, config.margin)
        baseline = search.baseline
        tried.append((name, search))
        logger.info("SD SLUG %s: step %.4g forget %.3f retain %.3f (%s)", name, search.step,
                    search.forget_metric, search.retain_metric, search.reason)
        if search.success:
            break
    if not tried:
        raise ValueError("every candidate layer has a zero forget gradient; nothing to edit")
    layer, search = pick_search(tried, config.search.retain_drop)
    return SDSlugResult(scores, layer, directions[layer], search, tried)
