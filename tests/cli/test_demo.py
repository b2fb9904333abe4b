import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def test_demo_writes_grid_and_summary(tmp_path, committed):
    from PIL import Image

    from unlearnkit.cli import main

    assert main(["demo", "--out", str(tmp_path), "--per-cell", "1", "--steps", "10"]) == 0
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == ((5 * 17 + 1) * 4, (10 * 17 + 1) * 4)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 50 and summary["judge_digit_acc"] > 0.7
    assert "digits correct" in (tmp_path / "summary.txt").read_text()
