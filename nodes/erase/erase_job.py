"""One Erase Concept run: checks, the run's identity, training in the graph, the saved encoder file(s).

Training runs outside ComfyUI's ``inference_mode`` with gradients on (as ComfyUI's own training node
does), on the MODEL's device after ComfyUI loads it, through the core's unchanged loop
(``unlearnkit.erase.advunlearn``). Its checkpoints live in ``output/unlearnkit/erase_checkpoints/<run>/``,
named by the run's identity (the CLIP's weights, the MODEL's, every setting); re-queuing the same graph
resumes there and ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...unlearnkit import io
from ...unlearnkit.erase.advunlearn import EraseConfig
from ...unlearnkit.erase.erased_file import state_sha256, tower_file, tower_metadata
from ..clip_weights import encoder_dims
from .comfy_text import Tower
from .comfy_unet import cross_attention_width

logger = logging.getLogger(__name__)

ATTACK_SETTINGS = {  # inner attack per mode: (steps, step size, adversarial tokens)
    "pgd": (10, 1e-2, 1), "fast_at": (1, 1e-2, 5), "none": (1, 1e-3, 1)}
RETAIN_WEIGHT = 30.0  # γ: the tiny world's measured setting (bench/erase.py)
PREDICTIONS = ("EPS", "V_PREDICTION")


def lines(text: str) -> list[str]:
    return [line.strip() for line in str(text).splitlines() if line.strip()]


@dataclass(frozen=True)
class EraseRequest:
    """The node's settings (the one place they are checked)."""

    concept: str
    retain: str
    encoder_name: str
    iterations: int = 200
    attack: str = "pgd"
    layers: str = "all"
    towers: str = "all"
    learning_rate: float = 1e-3
    resolution: int = 512
    seed: int = 0

    def check(self) -> None:
        if not lines(self.concept):
            raise ValueError("concept: empty; give the prompt(s) that name what to erase, one per line")
        if not lines(self.retain):
            raise ValueError("retain: empty; give prompts whose images must not change, one per line")
        if int(self.iterations) < 1:
            raise ValueError(f"iterations: expected >= 1, got {self.iterations}")
        name = self.encoder_name.strip()
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"encoder_name: {self.encoder_name!r} is not a plain file name")

    def config(self) -> EraseConfig:
        steps, lr, tokens = ATTACK_SETTINGS[self.attack]
        retain = tuple(lines(self.retain))
        return EraseConfig(
            concept=tuple(lines(self.concept)), retain=retain, attack=self.attack,
            iterations=int(self.iterations), warmup=int(self.iterations) * 3 // 8,
            lr=float(self.learning_rate),
            retain_weight=RETAIN_WEIGHT, retain_batch=min(10, len(retain)), layers=self.layers,
            attack_steps=steps, attack_lr=lr, attack_tokens=tokens, sampler_steps=10, guidance=3.0,
            bank_size=2, seed=int(self.seed))


def check_model(model: Any, width: int) -> None:
    """A discrete eps/v model whose cross-attention reads ``width``-wide conditioning."""
    base = model.model
    kind = getattr(base.model_type, "name", str(base.model_type))
    if kind not in PREDICTIONS or not hasattr(base.model_sampling, "sigmas"):
        raise ValueError(f"model: {kind} sampling; Erase Concept trains SD1.x/SD2.x/SDXL (eps or v) models")
    cross = cross_attention_width(base)
    if cross != width:
        raise ValueError(f"model: cross-attends to width {cross}, but the clip's text encoder(s) give width "
                         f"{width}; connect the CLIP that belongs to this MODEL")


def unet_fingerprint(model: Any) -> str:
    """Cheap identity of the MODEL as sampled: every tensor's name and shape, a few tensors' bytes, its
    patches."""
    digest = hashlib.sha256()
    state = model.model.diffusion_model.state_dict()
    keys = sorted(state)
    for key in keys:
        digest.update(f"{key}{tuple(state[key].shape)}".encode())
    for key in keys[:: max(1, len(keys) // 8)]:
        digest.update(state[key].detach().flatten()[:4096].float().cpu().numpy().tobytes())
    digest.update(json.dumps(sorted(str(k) for k in getattr(model, "patches", {}))).encode())
    return digest.hexdigest()


def run_key(encoder: Any, model: Any, request: EraseRequest, config: EraseConfig) -> str:
    """The run's identity: the CLIP's towers as trained from, the MODEL, every setting."""
    parts = [state_sha256(encoder.canonical_state()), unet_fingerprint(model), config.to_dict(),
             request.towers, request.resolution]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def output_paths(folder: Path, name: str, towers: list[Tower], all_towers: int) -> dict[str, Path]:
    """{tower: file}: ``<name>.safetensors`` (one-tower CLIP), ``<name>_clip_l`` / ``_clip_g`` (SDXL)."""
    stem = name.strip().removesuffix(".safetensors")
    if all_towers == 1:
        return {towers[0].name: folder / f"{stem}.safetensors"}
    return {t.name: folder / f"{stem}_{t.name}.safetensors" for t in towers}


def run_metadata(path: Path) -> dict[str, str]:
    try:
        return io.load_state_dict(path)[1]
    except (ValueError, OSError):  # not a weight file of ours
        return {}


def existing_run(paths: dict[str, Path], key: str) -> dict | None:
    """The saved run's record when every file exists and was made by this run; ValueError when a name is
    taken by anything else (nothing is overwritten)."""
    present = [p for p in paths.values() if p.exists()]
    if not present:
        return None
    metas = [run_metadata(p) for p in present]
    if len(present) == len(paths) and all(m.get("unlearnkit.erase.run") == key for m in metas):
        return json.loads(metas[0].get("unlearnkit.erase.record", "{}"))
    raise ValueError(f"encoder_name: {present[0].name!r} already exists in {str(present[0].parent)!r}; "
                     "choose another name (files are never overwritten)")


def tower_file_state(clip: Any, tower: Tower, trained: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained tower as the file's tensors, in the CLIP's own weight dtype."""
    from ...unlearnkit.textencoders.layouts import to_hf

    current = clip.cond_stage_model.state_dict()
    dtype = current[tower.layout.prefix + "embeddings.token_embedding.weight"].dtype
    projection = tower.layout.prefix.removesuffix("text_model.") + "text_projection.weight"
    keep = current.get(projection) if tower.name == "clip_g" else None
    return tower_file(to_hf(trained.state_dict(), what=tower.name)[0], dtype, keep)


def save_towers(clip: Any, paths: dict[str, Path], towers: dict[int, Tower], encoder: Any, key: str,
                record: dict) -> list[Path]:
    """Write each trained tower ({index in the encoder: tower}) atomically, never replacing a file;
    metadata says what it is and how it was made."""
    written = []
    for index, tower in towers.items():
        info = {"run": key, "tower": tower.name, "record": json.dumps(record)}
        meta = tower_metadata(encoder_dims(clip, tower.layout), info)
        state = tower_file_state(clip, tower, encoder.towers[index])
        written.append(io.save_safetensors(paths[tower.name], state, meta))
    return written


def checkpoint_folder(key: str) -> Path:
    import folder_paths

    return Path(folder_paths.get_output_directory()) / "unlearnkit" / "erase_checkpoints" / key


def remove_checkpoints(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
