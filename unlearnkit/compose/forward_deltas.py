"""Forward-time weight deltas: y = layer(x; W) + layer_Δ(x; ΔW) without touching W (pure torch).

A layer's delta is a dense ΔW / Δb and/or low-rank terms s·up·down (LoRA): for those the extra
cost is two thin matmuls (or a conv and a 1×1 conv), never a dense ΔW in memory. Layers are
affine in their parameters, so Linear, ConvNd, GroupNorm and LayerNorm outputs split exactly.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

SUPPORTED_LAYERS = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.GroupNorm, torch.nn.LayerNorm)
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class LowRank:
    """ΔW = scale · up @ down: up (out, r[, 1, ...]), down (r, in[, k, ...]) as ComfyUI's LoRA patches hold
    them."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float

    def to(self, device: torch.device, dtype: torch.dtype) -> LowRank:
        return LowRank(
            self.up.to(device=device, dtype=dtype), self.down.to(device=device, dtype=dtype), self.scale
        )


@dataclass
class LayerDelta:
    """What a shard adds to one layer of the shared module: dense ΔW, Δb and low-rank ΔW terms."""

    dw: torch.Tensor | None = None
    db: torch.Tensor | None = None
    terms: list[LowRank] = field(default_factory=list)

    @property
    def device(self) -> torch.device | None:
        for t in (self.dw, self.db, *(term.up for term in self.terms)):
            if t is not None:
                return t.device
        return None

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> LayerDelta:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return LayerDelta(
            move(self.dw), move(self.db), [t.to(device, dtype or t.up.dtype) for t in self.terms]
        )


def fits_low_rank(layer: torch.nn.Module, term: LowRank) -> bool:
    """True if ``term`` factors through ``layer`` as two smaller layers of its own kind."""
    up, down = term.up, term.down
    if isinstance(layer, torch.nn.Linear):
        return (
            up.dim() == 2
            and down.dim() == 2
            and up.shape[0] == layer.out_features
            and down.shape[1] == layer.in_features
        )
    if isinstance(layer, torch.nn.modules.conv._ConvNd) and layer.groups == 1 and not layer.transposed:
        return (down.shape == (up.shape[1], *layer.weight.shape[1:]) and up.shape[0] == layer.weight.shape[0]
                and all(s == 1 for s in up.shape[2:]))
    return False


def low_rank_output(layer: torch.nn.Module, x: torch.Tensor, term: LowRank) -> torch.Tensor:
    """scale · layer_{up·down}(x) computed as layer_up(layer_down(x)): Linear or ConvNd (groups 1)."""
    up, down = term.up.to(x), term.down.to(x)
    if isinstance(layer, torch.nn.Linear):
        return F.linear(F.linear(x, down), up) * term.scale
    conv = CONVS[x.dim() - 2]
    hidden = conv(x, down, None, layer.stride, layer.padding, layer.dilation, 1)
    return conv(hidden, up.reshape(up.shape[0], up.shape[1], *[1] * (x.dim() - 2))) * term.scale


def dense_output(
    layer: torch.nn.Module, x: torch.Tensor, dw: torch.Tensor | None, db: torch.Tensor | None
) -> torch.Tensor:
    """What dense ΔW, Δb add to the layer's output for input x."""
    dw = dw.to(x) if dw is not None else None
    db = db.to(x) if db is not None else None
    if isinstance(layer, torch.nn.Linear):
        return F.linear(x, dw if dw is not None else torch.zeros_like(layer.weight, dtype=x.dtype), db)
    if isinstance(layer, torch.nn.modules.conv._ConvNd):
        weight = dw if dw is not None else torch.zeros_like(layer.weight, dtype=x.dtype)
        return CONVS[x.dim() - 2](x, weight, db, layer.stride, layer.padding, layer.dilation, layer.groups)
    if isinstance(layer, torch.nn.GroupNorm):
        shape = (1, -1) + (1,) * (x.dim() - 2)  # per channel
        normed = F.group_norm(x, layer.num_groups, None, None, layer.eps)
        return (normed * dw.view(shape) if dw is not None else 0) + (db.view(shape) if db is not None else 0)
    if isinstance(layer, torch.nn.LayerNorm):
        normed = F.layer_norm(x, layer.normalized_shape, None, None, layer.eps)
        return (normed * dw if dw is not None else 0) + (db if db is not None else 0)
    raise TypeError(f"layer {type(layer).__name__}: no forward-time delta")


def delta_output(layer: torch.nn.Module, x: torch.Tensor, delta: LayerDelta) -> torch.Tensor:
    out = dense_output(layer, x, delta.dw, delta.db) if delta.dw is not None or delta.db is not None else 0
    for term in delta.terms:
        out = out + low_rank_output(layer, x, term)
    return out


def _hook(delta: LayerDelta):
    def add_delta(layer: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + delta_output(layer, args[0], delta).to(output.dtype)

    return add_delta


@contextlib.contextmanager
def hooks_installed(model: torch.nn.Module, deltas: dict[str, LayerDelta]) -> Iterator[None]:
    """Forward hooks adding ``deltas`` ({layer path: LayerDelta}) to the module's layers inside the block."""
    handles = [model.get_submodule(path).register_forward_hook(_hook(d)) for path, d in deltas.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
