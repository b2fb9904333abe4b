"""tests/frontend: what a user sees of the pack in the ComfyUI web frontend, checked on the saved files (the
browser measurements behind the rules are in data/, made by bench/comfy_frontend.py)."""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # test modules here import workflow_layout (tests/ has no packages)
    sys.path.insert(0, _HERE)
