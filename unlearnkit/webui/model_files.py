"""Files the webui panel offers: shard checkpoints, gate files, erased text encoders, SLUG patches.

Lists entries of a models folder (relative names, as the dropdowns show them), resolves a chosen name
back to a path inside that folder, builds a shard UNet from a checkpoint file for hosts that run
the UNet module themselves (AUTOMATIC1111), and caches what was loaded by file identity.
"""
from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from .. import io

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
GATE_SUFFIXES = (".safetensors",)
TEXT_ENCODER_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
PATCH_SUFFIXES = (".safetensors",)
HF_FOLDER_MARKER = "config.json"  # an HF CLIPTextModel folder (the released AdvUnlearn encoders)
# where the extension keeps its own files, under the webui's models folder
SUBFOLDERS = {
    "gates": "UnlearnKit/gates",
    "text_encoders": "UnlearnKit/text_encoders",
    "slug_patches": "UnlearnKit/slug_patches",
}
UNET_PREFIX = "model.diffusion_model."


def list_entries(
    folder: str | os.PathLike, suffixes: Iterable[str], folder_marker: str | None = None
) -> list[str]:
    """Relative POSIX names of files with ``suffixes`` under ``folder`` (and of sub-folders holding
    ``folder_marker``)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    suffixes = tuple(s.lower() for s in suffixes)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if folder_marker and here != root and folder_marker in filenames:
            found.append(here.relative_to(root).as_posix())
            dirnames[:] = []  # an HF folder is one entry; its weight files are not listed on their own
            continue
        found += [(here / f).relative_to(root).as_posix() for f in filenames
                  if not f.startswith(".") and f.lower().endswith(suffixes)]
    return sorted(found, key=str.lower)


def resolve_entry(folder: str | os.PathLike, name: str, what: str) -> Path:
    """The path of entry ``name`` inside ``folder``; ValueError naming ``what`` if it is missing or
    outside."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if name.startswith(("/", "\\")) or ".." in Path(name).parts or root not in (path, *path.parents):
        raise ValueError(f"{what}: {name!r} is not inside {str(root)!r}")
    if not path.exists():
        raise ValueError(
            f"{what}: {name!r} not found in {str(root)!r} (press the panel's refresh button after adding "
            "files)"
        )
    return path


def panel_choices(models_path: str | os.PathLike, checkpoint_names: Iterable[str]) -> dict[str, list[str]]:
    """The panel's dropdown entries: the webui's checkpoints, and the extension's folders under models/."""
    root = Path(models_path)
    return {
        "checkpoints": sorted(checkpoint_names),
        "gates": list_entries(root / SUBFOLDERS["gates"], GATE_SUFFIXES),
        "text_encoders": list_entries(root / SUBFOLDERS["text_encoders"], TEXT_ENCODER_SUFFIXES,
                                      HF_FOLDER_MARKER),
        "slug_patches": list_entries(root / SUBFOLDERS["slug_patches"], PATCH_SUFFIXES),
    }


def panel_file(models_path: str | os.PathLike, kind: str, name: str) -> Path:
    """The path of a gate / text encoder / SLUG patch chosen in the panel (``kind`` a SUBFOLDERS key)."""
    return resolve_entry(Path(models_path) / SUBFOLDERS[kind], name, kind.replace("_", " ")[:-1])


def checkpoint_path(checkpoints: Mapping[str, str | os.PathLike], name: str) -> Path:
    """The file of the webui checkpoint ``name`` ({name: filename} of the webui's list)."""
    if name not in checkpoints:
        raise ValueError(f"shard: checkpoint {name!r} is not in the webui's models list (refresh the list)")
    return Path(checkpoints[name])


def gate_names(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """The gate's name of each composed checkpoint: its own if the gate knows it, else its file stem.

    The webui names checkpoints by file ("bold.safetensors", "styles/bold.safetensors"); ``compose
    train-gate`` names the shards it was trained on ("bold").
    """
    return [n if n in known or PurePath(n).stem not in known else PurePath(n).stem for n in names]


def checkpoint_unet_state(tensors: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """The UNet part of an LDM/webui checkpoint (``model.diffusion_model.*``), prefix removed."""
    state = {k[len(UNET_PREFIX):]: v for k, v in tensors.items() if k.startswith(UNET_PREFIX)}
    if not state:
        raise ValueError(
            f"{what}: no '{UNET_PREFIX}*' keys; not a Stable Diffusion checkpoint (first keys: "
            f"{sorted(tensors)[:3]})"
        )
    return state


def empty_copy(base: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy of ``base`` whose state-dict tensors are new, uninitialised ones on ``device`` (default:
    each where it is now): structure, class and hooks are copied, the weights are not (no second copy of the
    base's weights is ever made, on the GPU or elsewhere)."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in base.state_dict(keep_vars=True).values():
        new = torch.empty_like(tensor, device=device if device is not None else tensor.device)
        memo[id(tensor)] = nn.Parameter(new, requires_grad=False) if isinstance(tensor, nn.Parameter) else new
    return copy.deepcopy(base, memo)


def unet_like(base: nn.Module, state: Mapping[str, torch.Tensor], what: str,
              device: torch.device | str | None = None) -> nn.Module:
    """A copy of ``base`` (same class, dtype, hooks of its class) holding the weights ``state``, on ``device``
    (default: the base's)."""
    expected = base.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, "
            f"the loaded model {tuple(expected[wrong[0]].shape)}"
        )
        raise ValueError(f"{what}: not a UNet of the loaded model's architecture ({detail}); "
                         "shards must be fine-tunes of the checkpoint that is loaded")
    shard = empty_copy(base, device)
    shard.__dict__.pop("forward", None)  # an instance-level forward (a host hook) is not part of the weights
    with torch.no_grad():
        shard.load_state_dict({k: state[k] for k in expected}, strict=True)
    return shard.eval().requires_grad_(False)


def load_unet_like(base: nn.Module, path: str | os.PathLike,
                   device: torch.device | str | None = None) -> nn.Module:
    """A shard UNet read from a checkpoint file (through ``unlearnkit.io``: safetensors or weights-only
    pickles), on ``device`` (default: the base's)."""
    what = f"shard {Path(path).name!r}"
    tensors, _ = io.load_state_dict(path)
    state = checkpoint_unet_state(tensors, what)
    io.check_finite(state, what)
    return unet_like(base, state, what, device)


def display_name(name: str) -> str:
    """A checkpoint's name for plots and logs: without its file suffix ("styles/bold")."""
    path = PurePath(name)
    return str(path.with_suffix("")) if path.suffix.lower() in CHECKPOINT_SUFFIXES else name


def file_key(path: str | os.PathLike) -> tuple[str, int, int]:
    """Identity of a file's current content for caches: (resolved path, mtime in ns, size)."""
    stat = os.stat(path)
    return str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size


class FileCache:
    """What was loaded from files, by file identity; entries no longer asked for are dropped by ``keep``."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, Any], Any] = OrderedDict()

    def get(self, path: str | os.PathLike, load: Callable[[Path], Any], tag: Any = None) -> Any:
        """The object ``load(path)`` gave for this file (and ``tag``), loading it again if the file
        changed."""
        key = (file_key(path), tag)
        stale = [k for k in self._items if k[0][0] == key[0][0] and k[1] == tag and k != key]
        for k in stale:
            del self._items[k]
        if key not in self._items:
            logger.info("loading %s", path)
            self._items[key] = load(Path(path))
        self._items.move_to_end(key)
        return self._items[key]

    def keep(self, paths: Iterable[str | os.PathLike]) -> None:
        """Drop every entry whose file is not in ``paths`` (frees shards the panel no longer uses)."""
        wanted = {str(Path(p).resolve()) for p in paths}
        for k in [k for k in self._items if k[0][0] not in wanted]:
            del self._items[k]

    def __len__(self) -> int:
        return len(self._items)


_HASHES: dict[tuple[str, int, int], str] = {}


def short_hash(path: str | os.PathLike, length: int = 10) -> str:
    """First ``length`` hex digits of the file's SHA-256 (the webui's "Model hash" form), cached per file
    identity."""
    key = file_key(path)
    if key not in _HASHES:
        _HASHES[key] = io.file_sha256(path)
    return _HASHES[key][:length]
