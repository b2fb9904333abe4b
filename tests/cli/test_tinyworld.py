import json

import pytest

from unlearnkit.cli import build_parser, main


def test_tinyworld_subcommands_registered():
    args = build_parser().parse_args(["tinyworld", "eval", "--json", "--samples", "4"])
    assert args.samples == 4 and args.json and callable(args.func)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tinyworld", "fly"])


def test_quick_train_via_cli(tmp_path, capsys):
    assert main(["tinyworld", "train", "--quick", "--stages", "judges", "--weights-dir", str(tmp_path)]) == 0
    assert (tmp_path / "judges" / "digit.safetensors").is_file() and (
        tmp_path / "judges" / "style.safetensors"
    ).is_file()
    with pytest.raises(ValueError, match="threads"):
        main(["tinyworld", "train", "--quick", "--threads", "0", "--weights-dir", str(tmp_path)])


def test_eval_json_is_last_line(monkeypatch, capsys):
    import unlearnkit.tinyworld.evaluate as ev

    monkeypatch.setattr(ev, "evaluate", lambda **kw: {"digit_acc": 1.0, "k": kw["k"]})
    assert main(["tinyworld", "eval", "--json", "--samples", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"digit_acc": 1.0, "k": 3}


def test_evaluate_small(committed):
    from unlearnkit.tinyworld.evaluate import evaluate

    res = evaluate(k=2, steps=10, shard_sets=())
    for key in (
        "digit_acc", "style_acc", "judge_fid", "judge_digit_acc_real", "judge_style_acc_real", "base",
    ):
        assert key in res
    assert res["judge_digit_acc_real"] >= 0.97 and res["digit_acc"] >= 0.8
    with pytest.raises(ValueError, match="k"):
        evaluate(k=1)


def test_eval_rejects_unknown_shard_set():
    with pytest.raises(ValueError, match="shard-sets"):
        main(["tinyworld", "eval", "--shard-sets", "colour"])
