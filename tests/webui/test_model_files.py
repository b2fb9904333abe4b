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


def test_a_shard_copy_never_copies_the_base_weights_and_lands_where_asked(tmp_path, monkeypatch):
    base = TinyUNet()
    base.register_buffer("steps", torch.arange(3.0))
    shard = TinyUNet()
    shard.register_buffer("steps", torch.arange(3.0) + 10)
    copied = []
    for cls in (torch.Tensor, nn.Parameter):
        real = cls.__deepcopy__
        spy = lambda t, memo, real=real: copied.append(t.shape) or real(t, memo)  # noqa: E731
        monkeypatch.setattr(cls, "__deepcopy__", spy)
    loaded = lib.unet_like(base, shard.state_dict(), "shard 'x'", device="cpu")
    assert copied == []  # every weight came from `state`, none was deep-copied from the base first
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), shard.state_dict().values()))
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(loaded.parameters(), base.parameters()))
    assert type(loaded) is TinyUNet and not any(p.requires_grad for p in loaded.parameters())


def test_panel_choices_files_and_names(tmp_path):
    (tmp_path / "UnlearnKit" / "gates").mkdir(parents=True)
    (tmp_path / "UnlearnKit" / "gates" / "g.safetensors").write_bytes(b"x")
    found = lib.panel_choices(tmp_path, ["z.safetensors", "a.ckpt"])
    assert found == {"checkpoints": ["a.ckpt", "z.safetensors"], "gates": ["g.safetensors"],
                     "text_encoders": [], "slug_patches": []}
    assert lib.panel_file(tmp_path, "gates", "g.safetensors").name == "g.safetensors"
    with pytest.raises(ValueError, match="gate: 'h.safetensors' not found"):
        lib.panel_file(tmp_path, "gates", "h.safetensors")
    assert lib.checkpoint_path({"a.ckpt": "/m/a.ckpt"}, "a.ckpt").name == "a.ckpt"
    with pytest.raises(ValueError, match="shard: checkpoint 'b.ckpt' is not in the webui's models list"):
        lib.checkpoint_path({"a.ckpt": "/m/a.ckpt"}, "b.ckpt")
    assert [lib.display_name(n) for n in ("slanted.safetensors", "sub/bold.ckpt", "x.y")] == [
        "slanted", "sub/bold", "x.y"]


def test_a_gate_trained_on_shard_names_serves_webui_checkpoint_names():
    """`compose train-gate` names shards "bold"; the webui names checkpoints "bold.safetensors"."""
    assert lib.gate_names(["bold.safetensors", "sub/slanted.ckpt", "x"], ["bold", "slanted", "x"]) == [
        "bold", "slanted", "x"]
    assert lib.gate_names(["bold.safetensors"], ["bold.safetensors", "bold"]) == ["bold.safetensors"]
    assert lib.gate_names(["other.safetensors"], ["bold"]) == ["other.safetensors"]  # the gate refuses it
