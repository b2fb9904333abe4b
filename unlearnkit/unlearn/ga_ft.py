"""GA + FT: gradient ascent on the forget pairs while fine-tuning on the retain pairs (SLUG's Tab. 1
baseline).

Each Adam step descends -L_f + retain_weight * L_contrastive(retain batch): forgetting, with CLIP's
own loss pulling utility back. Same stopping rule and in-place training as :mod:`.gradient_ascent`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .adapter import Encoders
from .evaluation import Metrics
from .gradient_ascent import BaselineResult, GradientAscentConfig, gradient_ascent
from .gradients import Batch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GaFtConfig(GradientAscentConfig):
    """GA's settings plus the weight of the retain (fine-tuning) loss."""

    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.retain_weight > 0:
            raise ValueError(f"retain_weight: GA + FT needs a positive weight, got {self.retain_weight}")


def ga_ft(encoders: Encoders, forget: Iterable[Batch], retain: Iterable[Batch], metrics: Metrics,
          config: GaFtConfig | None = None) -> BaselineResult:
    """Gradient ascent on L_f + contrastive fine-tuning on retain pairs, until metrics()[0] <= target (in
    place)."""
    config = config or GaFtConfig()
    return gradient_ascent(
        encoders, forget, metrics, config, retain=retain, retain_weight=config.retain_weight
    )
