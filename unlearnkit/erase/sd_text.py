"""The text conditioning of SD1.x, SD2.x and SDXL as one encoder the erase loop trains.

SD1.x conditions on CLIP-L's last layer; SD2.x on OpenCLIP-H's penultimate layer followed by the final
layer norm; SDXL on the concatenation of CLIP-L's and OpenCLIP-G's penultimate layers (no final norm) and,
through its size embedding ``y``, on G's pooled and projected end-token state. :class:`SDTextEncoder`
holds one or two ``transformers.CLIPTextModel`` towers and returns exactly that as ``last_hidden_state``
(B, L, W). When the model also reads a pooled vector, it is appended as one extra row (zero-padded to W):
(B, L + 1, W); the UNet adapter splits it off. The core's protocol holds: ``text_model`` is the tower
whose token embeddings adversarial tokens live in (the trained one), ``config.hidden_size`` the width the
UNet cross-attends to, and parameter names keep ``encoder.layers.N.`` so layer specs select them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn


@dataclass(frozen=True)
class TowerOutput:
    """Which hidden state of a tower SD reads: ``layer`` None = last, -2 = penultimate; ``final_norm``
    applies the tower's final layer norm to an intermediate state (SD2: yes, SDXL: no)."""

    layer: int | None = None
    final_norm: bool = True
    pad_id: int | None = None  # ids after the first end token become this (OpenCLIP-G pads with 0)


def pad_after_end(ids: torch.Tensor, end_id: int, pad_id: int) -> torch.Tensor:
    """Ids (B, L) with every position after the first end token set to ``pad_id``."""
    is_end = (ids == end_id).int()
    after = (is_end.cumsum(1) - is_end) > 0
    return ids.masked_fill(after, pad_id)


def tower_states(tower: nn.Module, ids: torch.Tensor, out: TowerOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """(the hidden state (B, L, W) of one HF CLIPTextModel that SD reads, its final-normed last state)."""
    res = tower(input_ids=ids, output_hidden_states=out.layer is not None)
    if out.layer is None:
        return res.last_hidden_state, res.last_hidden_state
    hidden = res.hidden_states[out.layer]
    read = text_model_of(tower).final_layer_norm(hidden) if out.final_norm else hidden
    return read, res.last_hidden_state


def text_model_of(tower: nn.Module) -> nn.Module:
    return getattr(tower, "text_model", tower)


def pooled_projection(last: torch.Tensor, ids: torch.Tensor, projection: nn.Module,
                      end_id: int) -> torch.Tensor:
    """SDXL's pooled vector: the final-normed last state (B, L, W) at the first end token, projected."""
    rows = torch.arange(ids.shape[0], device=ids.device)
    first_end = (ids == end_id).int().argmax(1)
    return projection(last[rows, first_end.to(last.device)])


class SDTextEncoder(nn.Module):
    """One or two CLIP towers -> SD's conditioning; optionally its pooled vector as one extra row."""

    def __init__(self, towers: Sequence[nn.Module], outputs: Sequence[TowerOutput], end_id: int,
                 trained: Sequence[int] = (0,), projection: nn.Module | None = None) -> None:
        super().__init__()
        if len(towers) != len(outputs) or not towers:
            raise ValueError(f"towers: expected one output spec per tower, got {len(towers)}/{len(outputs)}")
        self.towers = nn.ModuleList(towers)
        self.outputs, self.end_id, self.trained = list(outputs), int(end_id), sorted(set(trained))
        if not self.trained or not all(0 <= i < len(towers) for i in self.trained):
            raise ValueError(f"trained: expected tower indices in 0..{len(towers) - 1}, got {list(trained)}")
        self.projection = projection  # the pooled vector's projection (SDXL: OpenCLIP-G's text_projection)
        widths = [int(text_model_of(t).embeddings.token_embedding.weight.shape[1]) for t in towers]
        depths = [int(t.config.num_hidden_layers) for t in towers]
        self.widths = widths
        self.config = SimpleNamespace(hidden_size=sum(widths), num_hidden_layers=max(depths))

    @property
    def text_model(self) -> nn.Module:
        return text_model_of(self.towers[self.trained[0]])

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Only the trained towers' tensors: the frozen tower and the projection never train."""
        mine = tuple(f"{prefix}{'.' if prefix else ''}towers.{i}." for i in self.trained)
        for name, param in super().named_parameters(prefix, recurse, remove_duplicate):
            if name.startswith(mine):
                yield name, param

    def canonical_state(self) -> dict[str, torch.Tensor]:
        """Every tower's weights under HF keys, prefixed by the tower index when there are two."""
        from ..textencoders.layouts import to_hf

        out = {}
        for i, tower in enumerate(self.towers):
            hf = to_hf(tower.state_dict(), what=f"tower {i}")[0]
            out.update({(f"{i}." if len(self.towers) > 1 else "") + k: v for k, v in hf.items()})
        return out

    def tower_ids(self, ids: torch.Tensor, i: int) -> torch.Tensor:
        pad = self.outputs[i].pad_id
        return ids if pad is None else pad_after_end(ids, self.end_id, pad)

    def forward(self, input_ids: torch.Tensor, **_) -> SimpleNamespace:
        ids = [self.tower_ids(input_ids, i) for i in range(len(self.towers))]
        states = [tower_states(t, i, o) for t, i, o in zip(self.towers, ids, self.outputs)]
        context = torch.cat([s for s, _ in states], dim=-1)
        if self.projection is not None:  # SDXL: from the last tower (OpenCLIP-G)
            pooled = pooled_projection(states[-1][1], ids[-1], self.projection, self.end_id)
            row = torch.zeros_like(context[:, :1])
            row[:, 0, : pooled.shape[1]] = pooled
            context = torch.cat([context, row], dim=1)
        return SimpleNamespace(last_hidden_state=context)


def split_pooled(context: torch.Tensor, pooled_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L + 1, W) -> context (B, L, W), pooled (B, pooled_size): undoes SDTextEncoder's extra row."""
    return context[:, :-1], context[:, -1, :pooled_size]
