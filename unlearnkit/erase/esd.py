"""The losses of ESD / AdvUnlearn on UNet outputs (ε or v), as pure functions.

Notation (AdvUnlearn §3): ε_θ is the UNet with the encoder being trained, ε_o with the original
encoder; c the concept prompt, ∅ the empty prompt, c_r a retain prompt, δ adversarial tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def esd_target(out_uncond: torch.Tensor, out_cond: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """ε_o(x_t, ∅) − η (ε_o(x_t, c) − ε_o(x_t, ∅)): negative guidance away from the concept (ESD eq. 2)."""
    return out_uncond - eta * (out_cond - out_uncond)


def esd_loss(
    out_erased: torch.Tensor, out_uncond: torch.Tensor, out_cond: torch.Tensor, eta: float = 1.0
) -> torch.Tensor:
    """‖ε_θ(x_t, [δ; c]) − esd_target‖² (mean over elements)."""
    return F.mse_loss(out_erased, esd_target(out_uncond, out_cond, eta).detach())


def retain_loss(out_erased: torch.Tensor, out_original: torch.Tensor) -> torch.Tensor:
    """‖ε_θ(x_t^r, c_r) − ε_o(x_t^r, c_r)‖²: keep other prompts' predictions (AdvUnlearn's utility term)."""
    return F.mse_loss(out_erased, out_original.detach())


def match_loss(out_erased: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖ε_θ(x_t, [δ; c]) − target‖²: what attacks minimise (target ε_o(x_t, c), or the added noise)."""
    return F.mse_loss(out_erased, target.detach())


def concept_gap(out_erased: torch.Tensor, out_uncond: torch.Tensor) -> torch.Tensor:
    """‖ε_θ(x_t, c) − ε_o(x_t, ∅)‖²: how far the concept prompt still moves the prediction."""
    return F.mse_loss(out_erased, out_uncond)
