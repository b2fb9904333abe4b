"""Attribution: which shard made each sample — its gate weights along the trajectory (CDM Fig. 3)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..plots import line_panels
from .composer import StepRecord


def weight_trajectory(history: Sequence[StepRecord]) -> torch.Tensor:
    """Stack recorded weights into (steps, B, N); calls with another batch size (a new run) reset it."""
    if not history:
        raise ValueError("attribution: no sampling steps were recorded; sample with the composed model first")
    last = [r for r in history if r.weights.shape == history[-1].weights.shape]
    return torch.stack([r.weights for r in last])


def credit(trajectory: torch.Tensor) -> torch.Tensor:
    """A sample's credit per shard: its mean weight over the steps, (B, N), rows summing to 1."""
    return trajectory.mean(dim=0)


def attribution_report(history: Sequence[StepRecord], names: Sequence[str]) -> dict:
    """JSON-ready: per-step sigmas and weights, per-sample credit and top shard."""
    traj = weight_trajectory(history)
    steps = [r for r in history if r.weights.shape == traj.shape[1:]]
    c = credit(traj)
    return {
        "shards": list(names),
        "sigmas": [r.sigma for r in steps],
        "weights": traj.permute(1, 0, 2).tolist(),  # [sample][step][shard]
        "credit": c.tolist(),
        "top_shard": [names[i] for i in c.argmax(dim=1).tolist()],
        "evaluated": [[names[i] for i in r.active] for r in steps],
        "evaluations": [r.evaluated for r in steps],  # (sample, shard) pairs run per step: one model = B
    }


def attribution_plot(
    history: Sequence[StepRecord], names: Sequence[str], max_samples: int = 4, columns: int = 2
) -> Image.Image:
    """Weight of each shard against sampling step, one panel per sample, ``columns`` per row (CDM Fig.
    1/3)."""
    traj = weight_trajectory(history)  # (S, B, N)
    panels = []
    titles = []
    c = credit(traj)
    for b in range(min(traj.shape[1], max_samples)):
        panels.append([traj[:, b, i].tolist() for i in range(traj.shape[2])])
        titles.append(f"sample {b}: {names[int(c[b].argmax())]} ({float(c[b].max()):.0%})")
    return line_panels(panels, list(names), titles, "sampling step", "weight", columns=columns)
