"""``erase train|attack --checkpoint FILE``: a single-file checkpoint read offline (the tiny world's own LDM
export, as ComfyUI's Load Checkpoint and the webui load it)."""
import json

import pytest
import torch

from unlearnkit.cli import main
from unlearnkit.cli.checkpoint_file import checkpoint_components
from unlearnkit.textencoders.loading import load_text_encoder_state
from unlearnkit.tinyworld.export import save_ldm_checkpoint
from unlearnkit.tinyworld.tasks.erase_models import tiny_components

FAST = ["--iterations", "2", "--warmup", "1", "--attack-steps", "1", "--sampler-steps", "3", "--lr", "1e-3",
        "--bank-size", "1", "--no-progress", "--checkpoint-every", "1", "--retain-weight", "30"]


@pytest.fixture(scope="module")
def single_file(tmp_path_factory):
    return save_ldm_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_single_file_gives_the_tiny_world_models(single_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got, ref = checkpoint_components(str(single_file)), tiny_components("paragon")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = ref.tokenizer(["a handwritten digit 7 in bold style", ""], padding="max_length", max_length=77,
                        truncation=True, return_tensors="pt").input_ids
    assert torch.equal(got.tokenizer(["a handwritten digit 7 in bold style", ""], padding="max_length",
                                     max_length=77, truncation=True, return_tensors="pt").input_ids, ids)
    with torch.no_grad():
        c_got, c_ref = got.text_encoder(input_ids=ids)[0], ref.text_encoder(input_ids=ids)[0]
        e_got = got.unet(x, torch.tensor([500, 20]), encoder_hidden_states=c_ref).sample
        e_ref = ref.unet(x, torch.tensor([500, 20]), encoder_hidden_states=c_ref).sample
    # the file is fp16: the same weights rounded
    assert (c_got - c_ref).abs().max() < 0.05 and (e_got - e_ref).abs().max() < 0.05 * e_ref.abs().max()
    assert got.scheduler.config.prediction_type == "epsilon"
    assert torch.allclose(got.scheduler.alphas_cumprod, ref.scheduler.alphas_cumprod)


def test_train_and_attack_on_a_single_file(single_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "erased.safetensors"
    argv = ["erase", "train", "--checkpoint", str(single_file), "--concept",
            "a handwritten digit in bold style", "--retain", "a handwritten digit 3", "--out", str(out),
            *FAST]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    state, info = load_text_encoder_state(out)
    assert printed["steps"] == 2 and info.dims.hidden_size == 64
    assert "encoder.layers.0.mlp.fc1.weight" in state
    assert main(["erase", "attack", "--checkpoint", str(single_file), "--encoder", str(out), "--concept",
                 "a handwritten digit 7 in bold style", "--steps", "2", "--seeds", "1",
                 "--sampler-steps", "3", "--judge", "style:bold"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= report["asr"] <= 1.0 and len(report["instances"]) == 1


def test_bad_checkpoint_is_refused_naming_it(tmp_path, capsys):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"x")
    assert main(["erase", "train", "--checkpoint", str(bad), "--concept", "a", "--retain", "b", "--out",
                 str(tmp_path / "o.safetensors"), *FAST]) == 2
    assert "--checkpoint" in capsys.readouterr().err
