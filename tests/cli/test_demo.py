"""The main job: ``python -m unlearnkit demo`` writes an illustrated report (index.html, PNG panels,
summary.json) of every capability on the committed tiny-world weights."""
import html as html_text
import json
import os
import re

os.environ.setdefault("OMP_NUM_THREADS", "1")

QUICK = ["--steps", "6", "--attack-prompts", "1", "--attack-steps", "2", "--scale", "3", "--no-progress"]


def test_demo_writes_the_report_with_every_section(tmp_path, committed):
    from unlearnkit.cli import main

    assert main(["demo", "--out", str(tmp_path), *QUICK]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["sections"]) == ["compose", "erase", "unlearn", "side_by_side"]
    assert set(summary["glance"]) == {"Compose", "Erase", "Unlearn", "Side by side"}
    html = (tmp_path / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 10 and all((tmp_path / name).is_file() for name in images)
    captions = [html_text.unescape(c) for c in re.findall(r"<figcaption>(.*?)</figcaption>", html, re.S)]
    assert len(captions) >= 11 and all(re.search(r"\d", c) for c in captions)  # every panel states a number
    compose, unlearn = summary["sections"]["compose"]["panels"], summary["sections"]["unlearn"]["panels"]
    rights = next(v for k, v in compose.items() if k.startswith("Rights"))
    assert rights["refused"] is True and "inverted" not in rights["allowed"]
    forget = next(v for k, v in compose.items() if k.startswith("Forgetting"))
    assert forget["remaining"] == ["slanted", "inverted", "outlined"]
    layer = next(v for k, v in unlearn.items() if k.startswith("Which layer"))
    assert layer["patch_bytes"] < 20_000 and layer["patch_numbers"] > 0
    asr = summary["sections"]["side_by_side"]["panels"]["Attack success rate, same attack budget"]["asr"]
    assert set(asr) == {"ESD", "AdvUnlearn", "exact forgetting"} and all(0 <= v <= 1 for v in asr.values())


def test_demo_refuses_bad_settings_with_exit_code_2(tmp_path, capsys):
    from unlearnkit.cli import main

    assert main(["demo", "--out", str(tmp_path), "--attack-prompts", "11"]) == 2
    assert "attack-prompts" in capsys.readouterr().err
