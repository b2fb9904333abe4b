"""unlearnkit/io.py: safe loading, clear errors, atomic writes."""
import pickle
from pathlib import Path

import pytest
import torch

from unlearnkit import io


class _RunsCode:
    """A pickle payload that would create a marker file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_safetensors_roundtrip_keeps_tensors_and_metadata(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    path = io.save_safetensors(tmp_path / "w.safetensors", tensors, {"concept": "seven"})
    loaded, meta = io.load_state_dict(path)
    assert meta == {"concept": "seven"}
    assert set(loaded) == set(tensors)
    assert torch.equal(loaded["a.weight"], tensors["a.weight"])


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    path = io.save_safetensors(tmp_path / "w.safetensors", {"a": torch.randn(64, 64)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="w.safetensors.*corrupt or truncated"):
        io.load_state_dict(path)


def test_code_executing_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"w": _RunsCode(marker)}, f)
    with pytest.raises(ValueError, match="evil.pt.*refused"):
        io.load_state_dict(path)
    assert not marker.exists()


def test_plain_torch_state_dict_loads_and_unwraps_state_dict_key(tmp_path):
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": {"text_encoder.x": torch.ones(2)}}, path)
    tensors, meta = io.load_state_dict(path)
    assert list(tensors) == ["text_encoder.x"] and meta == {}


def test_empty_missing_and_unknown_files(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        io.load_state_dict(tmp_path / "e.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        io.load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "w.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown suffix"):
        io.load_state_dict(tmp_path / "w.gguf")


def test_existing_output_is_never_overwritten_unless_asked(tmp_path):
    path = io.save_safetensors(tmp_path / "w.safetensors", {"a": torch.zeros(1)})
    with pytest.raises(FileExistsError, match="w.safetensors"):
        io.save_safetensors(path, {"a": torch.ones(1)})
    assert io.load_state_dict(path)[0]["a"].item() == 0
    io.save_safetensors(path, {"a": torch.ones(1)}, overwrite=True)
    assert io.load_state_dict(path)[0]["a"].item() == 1


def test_failed_write_leaves_no_file_behind(tmp_path):
    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(tmp_path / "out.bin", broken)
    assert list(tmp_path.iterdir()) == []


def test_check_finite_names_the_bad_tensor():
    with pytest.raises(ValueError, match="shard 'a'.*'x.w'"):
        io.check_finite({"ok": torch.zeros(2), "x.w": torch.tensor([1.0, float("nan")])}, "shard 'a'")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_check_finite_catches_nan_and_both_infinities_in_every_float_dtype(bad, dtype):
    value = torch.randn(50, 7).to(dtype)
    value[31, 4] = bad
    with pytest.raises(ValueError, match="'w' contains NaN or inf"):
        io.check_finite({"empty": torch.zeros(0), "ids": torch.arange(3), "w": value}, "enc")
    io.check_finite({"empty": torch.zeros(0), "w": value.nan_to_num(0.0, 0.0, 0.0)}, "enc")


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    path = io.save_safetensors(tmp_path / "w.safetensors", {"a": torch.zeros(1)})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_check_finite_works_without_an_fp16_aminmax_kernel(monkeypatch):
    """torch 2.1.2 (what AUTOMATIC1111 pins) has no fp16 CPU kernel for aminmax ('"aminmax_cpu" not
    implemented for 'Half''): checking an fp16 shard must not need one. Restated here with the error
    torch 2.1.2 raises; the real-webui test (tests/extensions/test_a1111_real.py) loads fp16 shards in it."""
    real = torch.aminmax

    def aminmax_of_torch_2_1_2(value, *args, **kwargs):
        if value.dtype == torch.float16 and value.device.type == "cpu":
            raise RuntimeError("\"aminmax_cpu\" not implemented for 'Half'")
        return real(value, *args, **kwargs)

    monkeypatch.setattr(torch, "aminmax", aminmax_of_torch_2_1_2)
    io.check_finite({"w": torch.randn(8, 8).half()}, "shard")
    with pytest.raises(ValueError, match="'w' contains NaN or inf"):
        io.check_finite({"w": torch.tensor([1.0, float("inf")]).half()}, "shard")


SAME_FILE = (
    "import sys, torch\n"
    "from unlearnkit import io\n"
    "tensors = {'b': torch.arange(6.0).reshape(2, 3), 'a': torch.zeros(2, dtype=torch.float16)}\n"
    "io.save_safetensors(sys.argv[1], tensors, {f'key{i}': str(i) for i in range(12)})\n"
)


def test_same_tensors_and_metadata_give_the_same_bytes_in_every_process(tmp_path):
    """safetensors' own writer keeps metadata in a hash map: its order, and so the file's SHA-256 (the shard
    hash in infotexts and forget records, the webui's "Model hash"), changed from one process to the next."""
    import subprocess
    import sys

    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for path in paths:  # separate processes: separate hash seeds
        root = Path(__file__).parents[1]
        subprocess.run([sys.executable, "-c", SAME_FILE, str(path)], check=True, cwd=root, timeout=300)
    assert len({io.file_sha256(p) for p in paths}) == 1
    tensors, metadata = io.load_state_dict(paths[0])
    assert metadata == {f"key{i}": str(i) for i in range(12)}
    assert torch.equal(tensors["b"], torch.arange(6.0).reshape(2, 3)) and tensors["a"].dtype == torch.float16


def test_written_files_read_back_in_safetensors_for_every_dtype_and_shape(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = {dtype_name: torch.randn(3, 5).mul(4).to(dtype) for dtype_name, dtype in (
        ("f64", torch.float64), ("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16),
        ("i64", torch.int64), ("i32", torch.int32), ("i16", torch.int16), ("i8", torch.int8),
        ("u8", torch.uint8), ("bool", torch.bool))}
    tensors.update(scalar=torch.tensor(2.5), empty=torch.zeros(0, 4), strided=torch.randn(4, 6).t())
    path = io.save_safetensors(tmp_path / "all.safetensors", tensors, {"é": "ünïcode"})
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        assert loaded[name].dtype == value.dtype and torch.equal(loaded[name], value), name
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"é": "ünïcode"}
    assert path.stat().st_size == 8 + int.from_bytes(path.read_bytes()[:8], "little") + sum(
        v.numel() * v.element_size() for v in tensors.values())


def test_unstorable_tensors_are_refused_naming_them(tmp_path):
    with pytest.raises(ValueError, match="'c'.*complex"):
        io.save_safetensors(tmp_path / "c.safetensors", {"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="__metadata__"):
        io.save_safetensors(tmp_path / "m.safetensors", {"__metadata__": torch.zeros(2)})
    assert not list(tmp_path.iterdir())
