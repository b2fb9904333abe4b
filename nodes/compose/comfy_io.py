"""ComfyUI folders and files for the Compose nodes: shard source files, the shard_gates folder, gate files,
images. ComfyUI is imported only inside functions."""
from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch

from ...unlearnkit import io
from ...unlearnkit.compose.gate_model import GateNet, load_gate

SOURCE_FOLDERS = ("checkpoints", "loras", "diffusion_models", "unet")
GATE_FOLDER = "shard_gates"
GATE_EXTENSIONS = {".safetensors"}


@functools.lru_cache(maxsize=64)
def _sha256(path: str, mtime: float, size: int) -> str:
    return io.file_sha256(path)


def resolve_source(source: str) -> tuple[str, str]:
    """(path, sha256) of a shard's source file: an absolute path or a name in a ComfyUI model folder."""
    source = source.strip()
    if not source:
        return "", ""
    path = source if os.path.isabs(source) else None
    if path is None:
        import folder_paths

        for folder in SOURCE_FOLDERS:
            try:
                path = folder_paths.get_full_path(folder, source)
            except KeyError:  # folder not registered in this ComfyUI
                path = None
            if path:
                break
    if not path or not os.path.isfile(path):
        raise ValueError(
            f"source: file {source!r} not found (give a path or a name in "
            f"models/{'|'.join(SOURCE_FOLDERS[:2])})"
        )
    stat = os.stat(path)
    return path, _sha256(path, stat.st_mtime, stat.st_size)


def register_gate_folder() -> None:
    """Register models/shard_gates and output/shard_gates under the 'shard_gates' folder name (idempotent)."""
    import folder_paths

    wanted = [
        os.path.join(folder_paths.models_dir, GATE_FOLDER),
        os.path.join(folder_paths.get_output_directory(), GATE_FOLDER),
    ]
    paths, extensions = folder_paths.folder_names_and_paths.get(GATE_FOLDER, ([], set()))
    paths = list(paths) + [p for p in wanted if p not in paths]
    folder_paths.folder_names_and_paths[GATE_FOLDER] = (paths, set(extensions) | GATE_EXTENSIONS)


def gate_files() -> list[str]:
    """Gate files ComfyUI lists under 'shard_gates' (none outside ComfyUI, e.g. for registry scanners)."""
    try:
        import folder_paths
    except ImportError:
        return []
    register_gate_folder()
    return folder_paths.get_filename_list(GATE_FOLDER)


def output_gate_path(filename: str) -> str:
    """output/shard_gates/<filename>.safetensors (the folder created); ValueError naming ``filename``."""
    import folder_paths

    name = os.path.basename(filename.strip())
    if not name or name in (".", ".."):
        raise ValueError(f"filename: expected a file name, got {filename!r}")
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    folder = os.path.join(folder_paths.get_output_directory(), GATE_FOLDER)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


def gate_path(gate_name: str, check: bool = True) -> str | None:
    """Full path of a gate file listed under 'shard_gates'; ValueError naming ``gate_name`` if missing."""
    import folder_paths

    register_gate_folder()
    path = folder_paths.get_full_path(GATE_FOLDER, gate_name)
    if check and (path is None or not os.path.isfile(path)):
        raise ValueError(
            f"gate_name: file {gate_name!r} not found in {folder_paths.get_folder_paths(GATE_FOLDER)}"
        )
    return path


def load_gate_as(path: str, what: str, hint: str = "") -> GateNet:
    """A gate file's net; ValueError naming the input ``what`` (with ``hint`` appended) when unusable."""
    try:
        return load_gate(path)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ValueError(f"{what}: {os.path.basename(path)!r} cannot be used as a shard gate ({exc}){hint}") \
            from exc


def gate_summary(net: GateNet, source: str) -> str:
    c = net.config
    prompts = f", reads prompts ({c.context_dim}-wide)" if c.context_dim else ""
    return (f"shard gate {os.path.basename(source)}: shards {list(c.names)}, "
            f"latents {tuple(c.latent_shape)}, family {c.family}{prompts}")


def pil_to_image(picture: Any) -> torch.Tensor:
    """PIL image -> ComfyUI IMAGE (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0)[None]
