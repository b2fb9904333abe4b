"""The demo's committed artifacts: present, loadable, and made by one swappable maker each."""
import pytest
import torch

from unlearnkit.cli.demo import artifacts


def test_every_artifact_is_committed_and_listed_in_the_manifest(committed):
    made = artifacts.manifest()
    for name, art in artifacts.ARTIFACTS.items():
        for i in range(len(art.files)):
            assert artifacts.path(name, i).stat().st_size > 0
        assert made[name]["command"] == f"python -m unlearnkit demo --remake {name}"
    assert sum(f.stat().st_size for f in artifacts.DEMO_DIR.iterdir()) < 1_000_000  # small files


def test_a_missing_artifact_names_the_command_that_remakes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--remake slug"):
        artifacts.path("slug", folder=tmp_path)
    with pytest.raises(ValueError, match="unknown artifact"):
        artifacts.remake(["nonsense"], folder=tmp_path)


def test_erased_encoders_store_only_what_changed_and_load_onto_the_base(committed):
    from unlearnkit.tinyworld import store

    base = store.load_text_encoder()
    for name in ("erase_esd", "erase_advunlearn"):
        erased = artifacts.load_edited_encoder(artifacts.path(name), base)
        changed = artifacts.changed_tensors(base, erased)
        assert 0 < len(changed) < len(base.state_dict())
        assert not any("embeddings" in k for k in changed)  # the 3.2 M-row token table is not stored
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                 store.load_text_encoder().state_dict().values()))


def test_changed_tensors_roundtrip(tmp_path):
    from unlearnkit import io

    base = torch.nn.Linear(3, 2)
    edited = torch.nn.Linear(3, 2)
    edited.load_state_dict(base.state_dict())
    with torch.no_grad():
        edited.bias += 1
    changed = artifacts.changed_tensors(base, edited)
    assert list(changed) == ["bias"]
    io.save_safetensors(tmp_path / "e.safetensors", changed, {"format": "pt"})
    loaded = artifacts.load_edited_encoder(tmp_path / "e.safetensors", base)
    assert torch.allclose(loaded.bias, edited.bias, atol=1e-3) and torch.equal(loaded.weight, base.weight)
    io.save_safetensors(tmp_path / "bad.safetensors", {"nope": torch.zeros(1)}, {"format": "pt"})
    with pytest.raises(ValueError, match="do not fit"):
        artifacts.load_edited_encoder(tmp_path / "bad.safetensors", base)
