"""One webui generation's UnlearnKit state: what the panel asked for, which shards it mixes, the runs it
recorded, and what it appends to the outputs. Host objects (``p``, ``processed``) come in as arguments.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..compose.attribution import attribution_plot
from ..compose.gate_model import load_gate
from .mixing import ComposerRuns, build_gate
from .model_files import FileCache, checkpoint_path, display_name, gate_names, panel_file
from .settings import PanelSettings


class Generation:
    """What one generation asked for and what it recorded (one ComposerRuns over every sampling pass).

    A plain class: the webui loads script files without registering them in sys.modules, which dataclasses
    with postponed annotations defined there would need.
    """

    def __init__(self, settings: PanelSettings) -> None:
        self.settings = settings
        self.names: list[str] = []  # active shards (weight > 0), the webui's checkpoint names
        self.paths: list[Path] = []
        self.runs: ComposerRuns | None = None


def plan_mixture(gen: Generation, checkpoints: Mapping[str, str | os.PathLike],
                 models_path: str | os.PathLike, shards: FileCache, files: FileCache) -> None:
    """Resolve the active shards and build the run tracker with its gate (errors name the control).

    ``checkpoints``: {name: filename} of the webui's checkpoint list. A classifier gate trained by ``compose
    train-gate`` knows its shards by name ("bold"); a checkpoint file "bold.safetensors" is that shard.
    """
    s = gen.settings
    active = [(n, w) for n, w in s.shards if w > 0]
    gen.names = [n for n, _ in active]
    gen.paths = [checkpoint_path(checkpoints, n) for n in gen.names]
    shards.keep(gen.paths)
    net = None
    if s.gate == "classifier":
        net = files.get(panel_file(models_path, "gates", s.gate_file), load_gate)
    names = gate_names(gen.names, net.config.names) if net is not None else gen.names
    weights = [w for _, w in active]
    gen.runs = ComposerRuns(gen.names, lambda: build_gate(s.gate, names, weights, net, "gate file"),
                            evaluation=s.evaluation)


def attribution_output(gen: Generation | None, processed: Any) -> None:
    """Append the first sampling run's attribution plot (and a matching infotext) to the outputs."""
    if gen is None or gen.runs is None or not gen.settings.plot:
        return
    history = next((c.history for c in gen.runs.runs if c.history), None)
    if history is None:
        return
    processed.images.append(attribution_plot(history, [display_name(n) for n in gen.names]))
    infotexts = getattr(processed, "infotexts", None)
    if isinstance(infotexts, list):
        infotexts.append(infotexts[0] if infotexts else "")


def refuse(error: Exception) -> Callable:
    """A stand-in for sampling that fails with the panel's error: never sample without the asked-for edits."""

    def fail(*a: Any, **k: Any) -> Any:
        raise RuntimeError(f"UnlearnKit: {error}") from error

    return fail
