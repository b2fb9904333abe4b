"""The rows of one host model call: CFG chunks, which chunk is the prompt, and row selection.

A call stacks ``chunks`` copies of the same B samples along dim 0 (cond, uncond, AND-prompt parts),
each chunk in sample order. ComfyUI and Forge say which chunk is which (``cond_or_uncond``, 0 = the
prompt); A1111 repeats a sample once per prompt part and the uncond batch last; diffusers pipelines
stack [uncond, cond]. Rows of sample subsets are taken the same way everywhere (``take_rows``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

COND = 0  # ComfyUI's and Forge's mark of the positive prompt in cond_or_uncond


@dataclass(frozen=True)
class Layout:
    """``chunks`` stacked copies of the samples; ``score_chunk``: the prompt's chunk, None if absent."""

    chunks: int = 1
    score_chunk: int | None = 0

    def samples(self, rows: int) -> int:
        """B, the samples per chunk, of a call with ``rows`` rows (ValueError if they do not split)."""
        if self.chunks < 1 or rows % self.chunks:
            raise ValueError(f"chunks: batch of {rows} rows cannot be split into {self.chunks} equal chunks")
        return rows // self.chunks


def layout_from_marks(rows: int, cond_or_uncond: Sequence[int] | None) -> Layout:
    """The layout of a ComfyUI / Forge call from its cond_or_uncond marks (one mark per chunk)."""
    marks = list(cond_or_uncond) if cond_or_uncond else [COND]
    if rows % len(marks):
        return Layout(1, None)
    return Layout(len(marks), marks.index(COND) if COND in marks else None)


def group_duplicates(x: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(perm, k) such that x[perm] is k stacked chunks (the j-th copy of every sample in chunk j, samples
    in order of first appearance), else None when samples are repeated unevenly. x: (R, ...)."""
    rows = x.shape[0]
    _, owner = torch.unique(x.reshape(rows, -1), dim=0, return_inverse=True)  # (R,) distinct-row id
    counts = torch.bincount(owner)
    if bool((counts != counts[0]).any()):
        return None
    order = torch.arange(rows, device=x.device)
    first = torch.full_like(counts, rows).scatter_reduce(0, owner, order, "amin")
    sample = torch.empty_like(first)
    sample[first.argsort()] = torch.arange(first.shape[0], device=x.device)  # id -> sample index
    by_sample = (sample[owner] * rows + order).argsort()  # each sample's rows, in row order
    k = int(counts[0])
    return by_sample.view(-1, k).T.reshape(-1), k


def chunk_rows(samples: torch.Tensor, b: int, chunks: int) -> torch.Tensor:
    """Rows of ``samples`` (indices < B) in every chunk: (chunks · len(samples),), chunk-major."""
    return torch.cat([samples + k * b for k in range(chunks)])


def take_rows(value: Any, rows: torch.Tensor, batch: int) -> Any:
    """value[rows] for batch-sized tensors, also inside dicts, lists and tuples; anything else as is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return {k: take_rows(v, rows, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # not NamedTuples
        return type(value)(take_rows(v, rows, batch) for v in value)
    return value
