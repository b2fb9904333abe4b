"""Keep SLUG's one-layer step off what the retain prompts feed that layer (a null-space constraint).

A linear layer W (out, in) changed by D maps an input x to (W + D) x; inputs in the span of U (in, r) are
unchanged when D U = 0. With U the principal directions holding ``energy`` of the layer's inputs on the
retain prompts (second moment over all token positions), the projected step d (I - U U^T) spares them to
first order while the concept's own token still moves (in the tiny world, 63 % of the input that "bold"
gives text layer 0 lies outside the top 32 of its 64 directions). The preservation term of UCE (Gandikota
et al. 2024) and AlphaEdit's null-space projection (Fang et al. 2025), applied to SLUG's single step.
"""
from __future__ import annotations

import torch

from .sd_model import UNET, SDModel, split_name


@torch.no_grad()
def layer_inputs(sd: SDModel, layer: str, token_ids: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Inputs (N, in) of the linear layer owning weight ``layer`` over all token positions of the prompts.

    A UNet K/V projection reads the text states; a text-encoder layer's input is captured with a hook.
    """
    tower, name = split_name(layer)
    rows: list[torch.Tensor] = []
    if tower == UNET:
        for i in range(0, len(token_ids), batch):
            states = sd.text_states(token_ids[i:i + batch])  # (B, L, width)
            rows.append(states.reshape(-1, states.shape[-1]).float().cpu())
        return torch.cat(rows)
    module = sd.text_encoder.get_submodule(name.removesuffix(".weight"))
    hook = module.register_forward_pre_hook(lambda _, args: rows.append(args[0].detach().float().cpu()))
    try:
        for i in range(0, len(token_ids), batch):
            sd.text_states(token_ids[i:i + batch])
    finally:
        hook.remove()
    return torch.cat([r.reshape(-1, r.shape[-1]) for r in rows])


def principal_basis(inputs: torch.Tensor, energy: float) -> torch.Tensor:
    """U (in, r): the fewest principal directions of E[x x^T] holding at least ``energy`` of its trace."""
    if not 0.0 < energy < 1.0:
        raise ValueError(f"retain_energy: expected a fraction in (0, 1), got {energy}")
    if inputs.dim() != 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs: expected (N, in) with N > 0, got {tuple(inputs.shape)}")
    second = inputs.T.double() @ inputs.double() / inputs.shape[0]  # (in, in)
    values, vectors = torch.linalg.eigh(second)
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    share = values.cumsum(0) / values.sum().clamp_min(1e-30)
    rank = int((share < energy).sum()) + 1
    return vectors[:, :rank].float()


def project_off(direction: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """d (I - U U^T): the step's action on inputs in span(U) removed; d (out, in), U (in, r)."""
    if direction.dim() != 2 or direction.shape[1] != basis.shape[0]:
        raise ValueError(f"direction/basis: expected (out, {basis.shape[0]}) and ({basis.shape[0]}, r), "
                         f"got {tuple(direction.shape)} and {tuple(basis.shape)}")
    basis = basis.to(direction)
    return direction - (direction @ basis) @ basis.T
