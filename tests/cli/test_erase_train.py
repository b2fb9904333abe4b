"""``erase train`` / ``erase attack`` on a diffusers pipeline folder: output file, refusals, attack JSON."""
import json

import pytest

from unlearnkit.cli import main
from unlearnkit.textencoders.loading import load_text_encoder_state

FAST = ["--iterations", "4", "--warmup", "2", "--attack-steps", "2", "--sampler-steps", "3", "--lr", "1e-3",
        "--bank-size", "1", "--no-progress", "--checkpoint-every", "2"]


def train(pipeline_dir, out, *extra):
    return main(["erase", "train", "--pipeline", str(pipeline_dir), "--concept", "a photo of a cat",
                 "--retain", "a photo of a dog", "--out", str(out), *FAST, *extra])


def test_train_writes_one_hf_keyed_encoder_with_provenance(pipeline_dir, tmp_path, capsys):
    out = tmp_path / "erased.safetensors"
    assert train(pipeline_dir, out) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["steps"] == 4 and printed["processes"] == 1
    state, info = load_text_encoder_state(out)
    assert (
        info.layout == "hf" and info.dims.hidden_size == 32 and "embeddings.token_embedding.weight" in state
    )
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["unlearnkit.erase.concept"]) == ["a photo of a cat"]
    assert meta["unlearnkit.erase.mode"] == "advunlearn-pgd" and meta["unlearnkit.erase.steps"] == "4"
    assert meta["unlearnkit.erase.base_sha256"] == printed["base_sha256"]
    assert not (tmp_path / "erased.safetensors.checkpoints").exists()  # removed once OUT is written

    before = out.read_bytes()
    assert train(pipeline_dir, out, "--attack", "none") == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


@pytest.mark.parametrize("extra,message", [
    (["--retain-file", "/nonexistent/retain.txt"], "retain file"),
    (["--concept", "<|endoftext|>"], "concept: prompt"),
    (["--layers", "7"], "layers: bad part '7'"),
])
def test_bad_train_input_exits_2_naming_it(pipeline_dir, tmp_path, capsys, extra, message):
    assert train(pipeline_dir, tmp_path / "o.safetensors", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_encoder_of_the_wrong_width_is_refused(pipeline_dir, tmp_path, capsys, make_encoder):
    from unlearnkit import io

    wide = tmp_path / "wide.safetensors"
    io.save_safetensors(
        wide, make_encoder(hidden_size=64, num_attention_heads=2, intermediate_size=64).state_dict()
    )
    assert train(pipeline_dir, tmp_path / "o.safetensors", "--text-encoder", str(wide)) == 2
    assert "hidden size: source 64 vs target 32" in capsys.readouterr().err
    argv = ["erase", "attack", "--pipeline", str(pipeline_dir), "--encoder", str(wide), "--concept", "a cat"]
    assert main(argv) == 2


def test_attack_prints_adversarial_prompts(pipeline_dir, capsys):
    argv = ["erase", "attack", "--pipeline", str(pipeline_dir), "--concept", "a photo of a cat",
            *"--steps 4 --tokens 2 --sampler-steps 3 --check-every 2".split()]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (inst,) = report["instances"]
    assert report["asr"] is None and inst["success"] is None  # no judge outside the tiny world
    assert inst["attacked_prompt"].endswith("a photo of a cat") and inst["loss_end"] <= inst["loss_start"]
    assert main([*argv, "--judge", "digit:7"]) == 2
    assert "tiny world only" in capsys.readouterr().err
