"""unlearnkit/webui/model_files.py: model-folder listings, safe name resolution, shard UNets from checkpoints,
caches."""

import os

import pytest
import torch
from torch import nn

from unlearnkit import io
from unlearnkit.webui import model_files as lib


def test_list_entries_files_and_hf_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.safetensors").write_bytes(b"x")
    (tmp_path / "A.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.safetensors").write_bytes(b"x")
    hf = tmp_path / "vangogh_unlearned"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"x")
    assert lib.list_entries(tmp_path, (".safetensors", ".pt"), "config.json") == [
        "A.pt",
        "sub/b.safetensors",
        "vangogh_unlearned",
    ]
    assert lib.list_entries(tmp_path / "missing", (".pt",)) == []


def test_resolve_entry_stays_inside_the_folder(tmp_path):
    (tmp_path / "g.safetensors").write_bytes(b"x")
    assert lib.resolve_entry(tmp_path, "g.safetensors", "gate") == (tmp_path / "g.safetensors").resolve()
    with pytest.raises(ValueError, match="gate: '../etc' is not inside"):
        lib.resolve_entry(tmp_path, "../etc", "gate")
    with pytest.raises(ValueError, match="gate: 'nope.safetensors' not found"):
        lib.resolve_entry(tmp_path, "nope.safetensors", "gate")


class TinyUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.out = nn.Linear(4, 4)

    def forward(self, x, timesteps=None, context=None):
        return self.conv(x)


def test_load_unet_like_reads_the_unet_part_and_checks_architecture(tmp_path):
    base = TinyUNet().half()
    base.forward = lambda *a, **k: "a host hook"  # instance-level forward must not be copied
    shard = TinyUNet()
    state = {f"model.diffusion_model.{k}": v for k, v in shard.state_dict().items()}
    state["cond_stage_model.transformer.x"] = torch.zeros(1)
    io.save_safetensors(tmp_path / "shard.safetensors", state)
    loaded = lib.load_unet_like(base, tmp_path / "shard.safetensors")
    assert "forward" not in loaded.__dict__ and loaded.conv.weight.dtype == torch.float16
    assert torch.equal(loaded.conv.weight, shard.conv.weight.half()) and not torch.equal(
        loaded.conv.weight, base.conv.weight
    )
    io.save_safetensors(tmp_path / "vae.safetensors", {"first_stage_model.w": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a Stable Diffusion checkpoint"):
        lib.load_unet_like(base, tmp_path / "vae.safetensors")
    wrong = {f"model.diffusion_model.{k}": torch.zeros(2) for k in shard.state_dict()}
    io.save_safetensors(tmp_path / "other.safetensors", wrong)
    with pytest.raises(ValueError, match="fine-tunes of the checkpoint that is loaded"):
        lib.load_unet_like(base, tmp_path / "other.safetensors")


def test_file_cache_reloads_changed_files_and_keeps_only_asked(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_text("1")
    b.write_text("2")
    cache, loads = lib.FileCache(), []

    def load(path):
        loads.append(path.name)
        return path.read_text()

    assert cache.get(a, load) == "1" and cache.get(a, load) == "1" and loads == ["a.bin"]
    a.write_text("11")
    os.utime(a, ns=(1, 10**9))
    assert cache.get(a, load) == "11" and len(cache) == 1
    cache.get(b, load)
    cache.keep([b])
    assert len(cache) == 1 and cache.get(b, load) == "2" and loads == ["a.bin", "a.bin", "b.bin"]


def test_short_hash_is_the_sha256_prefix(tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"abc")
    assert lib.short_hash(f) == io.file_sha256(f)[:10]
