"""`python -m unlearnkit unlearn run/apply/info` on a seeded tiny-world-shaped CLIP and a transformers CLIP
folder."""

import json

import pytest
import torch
from PIL import Image

from unlearnkit import io
from unlearnkit.cli import main
from unlearnkit.unlearn.patches import load_patch


@pytest.fixture
def tiny_clip(monkeypatch):
    """The tiny world's CLIP architecture with seeded random weights (the trained file is not needed)."""
    from unlearnkit.tinyworld import store
    from unlearnkit.tinyworld.models import build_clip

    torch.manual_seed(0)
    clip = build_clip().eval()
    monkeypatch.setattr(store, "load_clip", lambda *a, **k: clip)
    return clip


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_run_writes_patch_plot_summary_and_never_overwrites(tiny_clip, tmp_path, capsys):
    out = tmp_path / "p" / "seven"
    args = ["unlearn", "run", "--forget", "digit:7", "--out", str(out), "--no-progress", "--max-evals", "3",
            "--n-forget", "16", "--n-retain", "32", "--dtype", "fp16"]
    code = main(args)
    summary = _last_json(capsys)
    assert code == (0 if summary["search_success"] else 1)
    assert summary["concept"] == "digit 7" and summary["layer"].startswith(
        "text_model."
    )  # text tower by default
    patch = load_patch(out.with_suffix(".safetensors"))
    assert (
        patch.layer == summary["layer"] and patch.delta.dtype == torch.float16 and patch.concept == "digit 7"
    )
    assert json.loads(out.with_suffix(".json").read_text())["patch_id"] == patch.id
    assert Image.open(f"{out}.layers.png").size == (640, 480)
    stamp = out.with_suffix(".safetensors").read_bytes()
    assert main(args) == 2 and "already exist" in capsys.readouterr().err
    assert out.with_suffix(".safetensors").read_bytes() == stamp
    assert main(args + ["--overwrite", "--tower", "both"]) in (0, 1)
    assert _last_json(capsys)["tower"] == "both"


def test_apply_and_info(tiny_clip, tmp_path, capsys):
    src = io.save_safetensors(tmp_path / "clip.safetensors", tiny_clip.state_dict())
    main(
        [
            "unlearn", "run", "--forget", "bold", "--out", str(tmp_path / "bold"), "--no-progress",
            "--max-evals", "2", "--n-forget", "8", "--n-retain", "16",
        ]
    )
    layer = _last_json(capsys)["layer"]
    patch_file = str(tmp_path / "bold.safetensors")
    assert main(["unlearn", "apply", str(src), str(tmp_path / "out.safetensors"), patch_file]) == 0
    assert _last_json(capsys)["patches"][0]["concept"] == "bold style"
    before, _ = io.load_state_dict(src)
    after, _ = io.load_state_dict(tmp_path / "out.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [layer]
    assert (
        main(
            [
                "unlearn",
                "apply",
                str(tmp_path / "out.safetensors"),
                str(tmp_path / "o2.safetensors"),
                patch_file,
            ]
        )
        == 2
    )
    assert "already applied" in capsys.readouterr().err
    assert main(["unlearn", "info", "--json", patch_file]) == 0
    info = _last_json(capsys)
    assert (info["concept"], info["layer"], info["dtype"]) == ("bold style", layer, "float32")
    assert info["target"] == "text"


def _folder(path, colours, captions=None):
    path.mkdir()
    for i, colour in enumerate(colours):
        Image.new("RGB", (20, 20), colour).save(path / f"img{i}.png")
        if captions:
            (path / f"img{i}.txt").write_text(captions[i])
    return path


def test_run_on_a_clip_folder_with_image_folders(make_hf_clip, tmp_path, capsys):
    model = make_hf_clip()
    clip_dir = tmp_path / "clip"
    model.config.save_pretrained(clip_dir)
    io.save_safetensors(clip_dir / "model.safetensors", model.state_dict())
    forget = _folder(tmp_path / "forget", [(200, 30, 30), (180, 40, 20)])
    retain = _folder(
        tmp_path / "retain",
        [(0, 0, 200), (0, 200, 0), (90, 90, 90)],
        ["a blue sea", "a green field", "grey fog"],
    )
    code = main(
        [
            "unlearn", "run", "--clip-dir", str(clip_dir), "--forget-images", str(forget), "--concept",
            "Red Period", "--retain-images", str(retain), "--out", str(tmp_path / "red"), "--no-progress",
            "--max-evals", "3",
        ]
    )
    summary = _last_json(capsys)
    assert code in (0, 1) and summary["concept"] == "Red Period" and summary["target"].startswith("clip_dir:")
    assert load_patch(tmp_path / "red.safetensors").layer.startswith("text_model.")


@pytest.mark.parametrize("extra,message", [
    (["--forget", "7", "--forget-images", "x"], "exactly one"),
    (["--forget-images", "x"], "needs the concept's name"),
    (["--forget", "purple"], "tiny-world digit"),
    (["--forget", "7", "--layer", "text_model.encoder.layers.1.mlp.fc9.weight"], "did you mean"),
])
def test_run_input_errors_exit_2(tiny_clip, tmp_path, capsys, extra, message):
    assert main(["unlearn", "run", "--out", str(tmp_path / "x"), "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_run_summary_lists_every_layer_searched(tiny_clip, tmp_path, capsys):
    main(
        [
            "unlearn", "run", "--forget", "3", "--out", str(tmp_path / "t"), "--no-progress", "--max-evals",
            "2", "--max-layers", "2", "--n-forget", "8", "--n-retain", "16", "--exclude-last-blocks", "1",
        ]
    )
    summary = _last_json(capsys)
    tried = summary["layers_tried"]
    assert 1 <= len(tried) <= 2 and summary["layer"] in [t["layer"] for t in tried]
    if summary["search_success"]:
        assert tried[-1]["layer"] == summary["layer"] and tried[-1]["success"]
    assert all(".layers.0." in t["layer"] for t in tried)  # the last of the 2 text blocks is left out
    assert summary["options"]["exclude_last_blocks"] == 1


def test_image_folder_on_the_tiny_world_takes_retain_pairs_from_it(tiny_clip, tmp_path, capsys, monkeypatch):
    import unlearnkit.tinyworld.tasks.slug_pairs as tinytask

    seen = []
    real = tinytask.captioned_pairs
    monkeypatch.setattr(tinytask, "captioned_pairs", lambda *a, **k: seen.append(a[1]) or real(*a, **k))
    forget = _folder(tmp_path / "forget", [(250, 20, 20), (230, 30, 10), (240, 0, 40)])
    code = main(
        [
            "unlearn", "run", "--forget-images", str(forget), "--concept", "red blob", "--out",
            str(tmp_path / "r"), "--no-progress", "--max-evals", "2", "--n-retain", "24",
        ]
    )
    summary = _last_json(capsys)
    assert code in (0, 1) and summary["concept"] == "red blob" and summary["target"] == "tinyworld"
    assert seen == [24]  # 24 captioned tiny-world images as the retain set
