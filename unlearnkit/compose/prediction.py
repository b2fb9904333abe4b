"""A model's output <-> its denoised estimate x0: eps, v, x0 ("sample") and flow (CONST) predictions.

Each is affine in the output, x0 = a(σ)·x + b(σ)·out, for the state x the model is called on:
- epsilon (VP x_t):   x0 = √(1+σ²) x_t − σ ε
- v_prediction (VP):  x0 = (x_t − σ v) / √(1+σ²)          (√ᾱ x_t − √(1−ᾱ) v)
- sample:             x0 = out
- flow (flow state):  x0 = x − σ v                         (ComfyUI's CONST.calculate_denoised)
So a convex mix of x0 is the same mix of the outputs: one mixture serves every kind.
"""
from __future__ import annotations

import torch

from .schedules import bcast

PREDICTIONS = ("epsilon", "v_prediction", "sample", "flow")


def x0_coefficients(sigma: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) with x0 = a·x + b·out, each (B,)."""
    s = sigma.float()
    root = (1 + s**2).sqrt()
    if kind == "epsilon":
        return root, -s
    if kind == "v_prediction":
        return 1 / root, -s / root
    if kind == "sample":
        return torch.zeros_like(s), torch.ones_like(s)
    if kind == "flow":
        return torch.ones_like(s), -s
    raise ValueError(f"prediction_type: expected one of {list(PREDICTIONS)}, got {kind!r}")


def prediction_to_x0(out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """x0 from a model output ``out`` at state x and noise level σ (B,)."""
    a, b = x0_coefficients(sigma, kind)
    return bcast(a, x) * x + bcast(b, x) * out


def x0_to_prediction(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """The output that gives x0 at state x and σ: the inverse of prediction_to_x0."""
    a, b = x0_coefficients(sigma, kind)
    return (x0 - bcast(a, x) * x) / bcast(b, x)
