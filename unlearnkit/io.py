"""The one place that reads and writes weight files.

Untrusted files are never unpickled with code execution: safetensors, or
``torch.load(..., weights_only=True)``. Outputs are written atomically (temp file +
rename in the same folder) and never replace an existing file unless asked.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NESTED_KEYS = ("state_dict", "model", "module")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (the identity recorded when a shard is forgotten)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise ValueError(
            f"weight file {str(path)!r}: not a valid safetensors file (corrupt or truncated?): {exc}"
        ) from exc
    return tensors, metadata


def _unwrap_nested(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap {'state_dict': {...}} style containers into a flat {name: tensor} dict."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"weight file {str(path)!r}: expected a state dict (name -> tensor), got {type(obj).__name__}"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"weight file {str(path)!r}: contains no tensors")
    return tensors


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"weight file {str(path)!r}: refused — it holds pickled objects other than tensors "
            f"(it may try to run code); only plain state dicts are loaded: {exc}"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"weight file {str(path)!r}: cannot be read (corrupt or truncated?): {exc}") from exc
    return _unwrap_nested(obj, path)


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a weight file safely: returns (tensors, metadata). Metadata is empty for pickles."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file {str(path)!r}: does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"weight file {str(path)!r}: is empty")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path), {}
    raise ValueError(
        f"weight file {str(path)!r}: unknown suffix {suffix!r}; expected one of "
        f"{SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES}"
    )


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise if any floating tensor holds NaN/inf, naming the first offending key."""
    for key, value in tensors.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        # min/max propagate NaN and expose ±inf; one reduction pass, ~10x faster than isfinite().all().
        # torch.aminmax has no fp16 CPU kernel before torch 2.2 (AUTOMATIC1111 pins 2.1.2) and none for fp8:
        # reduce those in fp32, which holds every fp16 / bf16 / fp8 value, ±inf and NaN exactly
        exact = value if value.dtype in (torch.float32, torch.float64) else value.float()
        if not all(torch.isfinite(extreme) for extreme in torch.aminmax(exact)):
            raise ValueError(f"{what}: tensor {key!r} contains NaN or inf")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; refuses to replace a file unless overwrite."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"output {str(path)!r}: already exists; choose another name or pass overwrite=True"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# safetensors' dtype names (the format's spec); anything else is refused naming the tensor
SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
    **{getattr(torch, n): code for n, code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"))
       if hasattr(torch, n)},
}


def safetensors_header(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The length-prefixed JSON header of a safetensors file holding ``tensors`` in name order.

    Metadata keys sorted, compact JSON, padded with spaces to 8 bytes (the format's alignment): the same
    tensors and metadata always give the same bytes. (safetensors' own writer keeps metadata in a hash map,
    so its order, the file's SHA-256 and the webui's "Model hash" varied between identical exports.)
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        if value.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {value.dtype} cannot be stored in safetensors")
        size = value.numel() * value.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(value: torch.Tensor) -> memoryview:
    """The little-endian bytes of a CPU tensor in row-major order, without a copy when it is contiguous."""
    flat = value.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str]) -> None:
    """Write a safetensors file directly: the header, then each tensor's bytes in name order (streamed)."""
    with open(path, "wb") as f:
        f.write(safetensors_header(tensors, metadata))
        for name in sorted(tensors):
            f.write(tensor_bytes(tensors[name]))


def save_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write tensors (+ string metadata) as safetensors, atomically; equal inputs give equal bytes."""
    bad = {k: type(v).__name__ for k, v in (metadata or {}).items() if not isinstance(v, str)}
    if bad:
        raise ValueError(f"metadata: values must be strings, got {bad}")
    bad_names = [k for k in tensors if not isinstance(k, str) or k == "__metadata__"]
    if bad_names:
        raise ValueError(f"tensors: names must be strings other than '__metadata__', got {bad_names}")
    flat = {k: v.detach() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: write_safetensors(tmp, flat, dict(metadata or {})),
                        overwrite=overwrite)


def save_checkpoint(path: str | os.PathLike, state: Mapping, overwrite: bool = True) -> Path:
    """Write a training checkpoint (tensors, numbers, strings, lists/dicts of them) atomically with
    torch.save."""
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp), overwrite=overwrite)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint with ``weights_only=True`` (no code runs); ValueError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: does not exist")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ValueError(
            f"checkpoint {str(path)!r}: cannot be read safely (corrupt, truncated or not plain data): {exc}"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {str(path)!r}: expected a dict, got {type(obj).__name__}")
    return obj
