"""unlearnkit/erase/cli.py: `python -m unlearnkit erase convert|inspect`."""
import argparse
import json

import torch

from unlearnkit import cli, io
from unlearnkit.cli import erase as erase_cli


def _run(argv):
    """Parse with only this subcommand registered (other packs' subcommands may not exist yet)."""
    parser = argparse.ArgumentParser()
    erase_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_erase_is_a_registered_subcommand():
    assert ".erase" in cli.SUBCOMMANDS


def test_convert_then_inspect_and_refuse_overwrite(make_encoder, tmp_path, capsys):
    model = make_encoder()
    src = tmp_path / "AdvUnlearn_text_encoder.pt"
    torch.save({f"text_encoder.text_model.{k}": v for k, v in model.state_dict().items()}, src)
    out = tmp_path / "erased.safetensors"
    assert _run(["erase", "convert", str(src), str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(out) and report["layout"] == "diffusers_text_encoder"
    tensors, meta = io.load_state_dict(out)
    assert set(tensors) == set(model.state_dict()) and meta["unlearnkit.source_sha256"] == io.file_sha256(src)
    before = out.read_bytes()

    assert _run(["erase", "convert", str(src), str(out), "--dtype", "fp16"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert _run(["erase", "convert", str(src), str(out), "--dtype", "fp16", "--overwrite"]) == 0
    capsys.readouterr()
    assert io.load_state_dict(out)[0]["final_layer_norm.weight"].dtype == torch.float16

    assert _run(["erase", "inspect", str(out), "--hash"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["layout"] == "hf" and info["dims"]["num_layers"] == 2 and info["sha256"] == io.file_sha256(out)
    )


def test_bad_source_is_one_line_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert (
        _run(["erase", "convert", str(tmp_path / "empty.safetensors"), str(tmp_path / "o.safetensors")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is empty" in err and not (tmp_path / "o.safetensors").exists()
