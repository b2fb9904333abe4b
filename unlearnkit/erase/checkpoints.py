"""Resumable training state: trainable weights + optimizer + attack δ + RNG + step, via ``unlearnkit.io``.

Files ``checkpoint-<step>.pt`` in a folder, written atomically, read with ``weights_only=True``.
All randomness of a training step comes from a generator seeded by (seed, step, rank), so a
resumed run replays exactly the steps an uninterrupted one would have taken.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import io

logger = logging.getLogger(__name__)

PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")
KEEP = 2  # newest checkpoints kept


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator for one training step of one process (independent of anything run before)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(found)


def latest(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1][1] if found else None


def rng_state() -> dict[str, torch.Tensor]:
    """Global RNG states (CPU and CUDA), saved for any library code that draws from them."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(folder: Path, step: int, params: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
         delta: torch.Tensor | None, config: Mapping[str, Any], losses: list[float],
         extra: Mapping[str, Any] | None = None) -> Path:
    """Write the state after ``step`` completed steps; keeps the newest KEEP checkpoints."""
    state = {
        "step": step,
        "params": {k: v.detach().cpu().clone() for k, v in params.items()},
        "optimizer": optimizer.state_dict(),
        "delta": None if delta is None else delta.detach().cpu(),
        "rng": rng_state(),
        "config": dict(config),
        "losses": list(losses),
        "extra": dict(extra or {}),  # per-step records beside the losses (e.g. attack norms)
    }
    path = io.save_checkpoint(folder / f"checkpoint-{step:07d}.pt", state)
    for _, old in checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    logger.info("checkpoint %s", path)
    return path


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: tuple[str, ...]
) -> list[str]:
    keys = (set(saved) | set(current)) - set(ignore)
    return [
        f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
        for k in sorted(keys)
        if saved.get(k) != current.get(k)
    ]


def load(path: Path, params: Mapping[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
         config: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Restore weights, optimizer and RNG in place; returns the checkpoint (step, delta, losses)."""
    state = io.load_checkpoint(path)
    diff = config_differences(state.get("config", {}), config, ignore)
    if diff:
        raise ValueError(f"checkpoint {str(path)!r}: made with other settings ({'; '.join(diff[:4])}); "
                         f"use another checkpoint folder or the same settings")
    saved = state["params"]
    if set(saved) != set(params):
        raise ValueError(
            f"checkpoint {str(path)!r}: trains other parameters than this run ({len(saved)} vs {len(params)})"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    logger.info("resumed from %s (step %d)", path, state["step"])
    return state
