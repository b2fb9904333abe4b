"""The one-step, single-layer SLUG update (arXiv 2407.11867 Eq. 4).

With L_f = 1 - cos(f_img, f_txt), forgetting means *raising* L_f (lowering the forget pairs'
similarity), so the edit is gradient ascent on it: theta_l <- theta_l + lambda * grad_l L_f.
(SLUG's code takes the gradient of -L_f and steps with a negative ratio: the same edit.)
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

logger = logging.getLogger(__name__)


def slug_delta(grad_forget: torch.Tensor, step: float) -> torch.Tensor:
    """Delta theta_l = +lambda * grad_l L_f (float32); adding it lowers the forget pairs' cosine
    similarity."""
    if step < 0:
        raise ValueError(
            f"step: must be >= 0 (the sign is fixed so that the concept is forgotten), got {step}"
        )
    return grad_forget.detach().float() * float(step)


def get_layer(model: nn.Module, name: str) -> nn.Parameter:
    """The parameter called ``name``; a clear error listing some valid names otherwise."""
    params = dict(model.named_parameters())
    if name not in params:
        import difflib

        close = difflib.get_close_matches(name, list(params), n=3, cutoff=0.5)
        raise ValueError(f"layer: {name!r} not in the model; close names: {close or list(params)[:5]}")
    return params[name]


@contextmanager
def stepped_layer(
    model: nn.Module, name: str, grad_forget: torch.Tensor, step: float
) -> Iterator[nn.Parameter]:
    """Temporarily apply theta_l + lambda * grad_l L_f; the exact original bytes are restored on exit."""
    param = get_layer(model, name)
    if tuple(grad_forget.shape) != tuple(param.shape):
        raise ValueError(
            f"grad_forget: shape {tuple(grad_forget.shape)} != layer {name!r} shape {tuple(param.shape)}"
        )
    original = param.detach().clone()
    try:
        with torch.no_grad():
            param.copy_(
                (original.float() + slug_delta(grad_forget, step).to(original.device)).to(param.dtype)
            )
        yield param
    finally:
        with torch.no_grad():
            param.copy_(original)
