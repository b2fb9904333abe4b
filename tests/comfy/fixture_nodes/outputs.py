"""TEST FIXTURE, not part of UnlearnKit: where the fixture nodes write what the tests read back."""
from __future__ import annotations

import os
from pathlib import Path

CATEGORY = "UnlearnKitTest"
OUT_ENV = "UNLEARNKIT_TEST_OUT"


def out_path(key: str, suffix: str) -> Path:
    """<$UNLEARNKIT_TEST_OUT>/<key><suffix>, its folder created."""
    out = Path(os.environ[OUT_ENV])
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{key}{suffix}"


class OutputNode:
    """Base of the fixture nodes that only write files: no outputs, always run, FUNCTION ``write``."""

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "write"
    CATEGORY = CATEGORY


def written(key: str) -> dict:
    """What an OutputNode returns: its key in the UI message."""
    return {"ui": {"unlearnkit_test": [key]}}
