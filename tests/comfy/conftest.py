"""Fixtures for tests that run graphs in real ComfyUI (see comfy_harness.py).

A test module defines a module-scoped ``comfy_graphs`` fixture ({name: API-format prompt}) and
asks for ``comfy_run``: all its graphs run in one ComfyUI process per engine, once per module.
``UNLEARNKIT_COMFY_ENGINES=comfy-0.3.75`` (comma-separated) limits the engines.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # test modules here import comfy_harness (tests/ has no packages)
    sys.path.insert(0, _HERE)

from comfy_harness import ENGINES, EngineRun, run_graphs  # noqa: E402


def selected_engines() -> list[str]:
    wanted = [e.strip() for e in os.environ.get("UNLEARNKIT_COMFY_ENGINES", "").split(",") if e.strip()]
    unknown = set(wanted) - set(ENGINES)
    if unknown:
        raise pytest.UsageError(
            f"UNLEARNKIT_COMFY_ENGINES: unknown {sorted(unknown)}; known: {list(ENGINES)}"
        )
    return wanted or list(ENGINES)


@pytest.fixture(scope="module", params=selected_engines())
def comfy_engine(request) -> str:
    """Name of the ComfyUI engine the module's tests run against ("comfy-2024-03", "comfy-0.3.75")."""
    return request.param


@pytest.fixture(scope="module")
def comfy_run(comfy_engine: str, comfy_graphs: dict, tmp_path_factory) -> EngineRun:
    """The module's ``comfy_graphs`` run in one ComfyUI process of ``comfy_engine``."""
    return run_graphs(comfy_engine, comfy_graphs, tmp_path_factory.mktemp(comfy_engine))
