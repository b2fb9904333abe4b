"""Test modules here import their helpers (webui_standin, tiny_models, a1111_host) by name (tests/ has no
packages). When the real-AUTOMATIC1111 tests are collected, their slow inputs start building at once in
background threads — the webui's venv (a download) and the panel's trained files (one CPU thread) — so they
overlap the tests that run before them."""
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: start only for tests that will run
def pytest_collection_modifyitems(session, config, items):
    if not any(item.path.name == "test_a1111_real.py" for item in items):
        return
    import a1111_host

    if a1111_host.available():
        a1111_host.start_venv()
        a1111_host.start_panel_files()
