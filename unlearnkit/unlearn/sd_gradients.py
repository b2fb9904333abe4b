"""One pass of per-layer gradients of SD forget and retain losses (SLUG, arXiv 2407.11867 §3.1).

A loss comes as batches: closures returning ``(loss averaged over the batch, batch size)`` on the current
model (:func:`.kv_loss.kv_batches`, :func:`.denoising.denoising_batches`), so any differentiable SD loss fits.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from .denoising import LossBatch
from .gradients import LayerGradients, grads_only_for
from .sd_model import SDModel

logger = logging.getLogger(__name__)


def averaged_gradients(batches: Iterable[LossBatch], params: list[nn.Parameter],
                       what: str) -> tuple[list[torch.Tensor], float]:
    """Batch-size-weighted mean of grad(loss) for each parameter (float32), and of the loss."""
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    total, rows = 0.0, 0
    for batch in batches:
        loss, n = batch()
        if not torch.isfinite(loss):
            raise ValueError(f"{what}: the loss is {loss.item()} (NaN/inf); check the model weights "
                             "and inputs")
        for acc, grad in zip(sums, torch.autograd.grad(loss * n, params, allow_unused=True)):
            if grad is not None:
                acc += grad.float()
        total, rows = total + loss.item() * n, rows + n
    if rows == 0:
        raise ValueError(f"{what}: no batches (need at least one pair)")
    return [s / rows for s in sums], total / rows


def sd_layer_gradients(sd: SDModel, forget: Iterable[LossBatch], retain: Iterable[LossBatch],
                       layers: list[str]) -> LayerGradients:
    """grad L_f and grad L_r for each qualified layer name (one pass each); the model is left unchanged."""
    by_name = dict(sd.modules.named_parameters())
    unknown = [n for n in layers if n not in by_name]
    if unknown or not layers:
        known = [n for n, _ in sd.named_layers()][:3]
        raise ValueError(f"layers: unknown or none {unknown[:3]}; e.g. {known}")
    params = [by_name[n] for n in layers]
    with grads_only_for(sd.modules, params), torch.enable_grad():
        g_f, l_f = averaged_gradients(forget, params, "forget")
        g_r, l_r = averaged_gradients(retain, params, "retain")
    for name, grad in zip(layers + layers, g_f + g_r):
        if not torch.isfinite(grad).all():
            raise ValueError(f"gradient of layer {name!r} contains NaN or inf; check the model "
                             "weights and inputs")
    logger.info("SD SLUG gradients for %d layers: forget loss %.4g, retain loss %.4g", len(layers), l_f, l_r)
    return LayerGradients(list(layers), dict(zip(layers, g_f)), dict(zip(layers, g_r)), l_f, l_r)
