"""The tree passes ruff (config in pyproject.toml: lines within 110 characters included); ruff is a test
requirement, so a missing ruff fails here rather than skipping the check."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes():
    command = [sys.executable, "-m", "ruff", "check", str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
