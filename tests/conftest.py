"""Shared test settings: one CPU thread (2-core machines run torch 30-100x slower with 2), offline hubs,
and the fixture modules in tests/fixtures/ (tiny text encoders, tiny CLIP models, committed weights)."""
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

_FIXTURES = str(Path(__file__).resolve().parent / "fixtures")
if _FIXTURES not in sys.path:  # tests/ has no packages: fixture modules are imported by name
    sys.path.insert(0, _FIXTURES)

pytest_plugins = ["text_encoder_fixtures", "clip_model_fixtures", "tiny_world_fixtures"]
