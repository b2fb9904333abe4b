"""tests/fixtures/venvs.py, the cached host venvs: keyed by their requirements, built with uv (on pip's
index) or pip, once per key even when asked from two threads."""
import sys
import threading
import time
from pathlib import Path

import pytest
import venvs


def test_commands_and_keys():
    uv = venvs.create_commands(Path("/v"), ["a==1"], False, ("--no-deps",), "uv")
    assert uv[0][:4] == [sys.executable, "-m", "uv", "venv"] and "--seed" in uv[0]  # pip inside, for freeze
    assert uv[1][-2:] == ["--no-deps", "a==1"] and "/v/bin/python" in uv[1]
    pip = venvs.create_commands(Path("/v"), ["a==1"], True, (), "pip")
    assert "--system-site-packages" in pip[0] and pip[1][:3] == ["/v/bin/python", "-m", "pip"]
    with pytest.raises(ValueError, match="installer: expected 'pip' or 'uv', got 'conda'"):
        venvs.create_commands(Path("/v"), [], False, (), "conda")
    assert venvs.venv_path("x", ["a==1"]) != venvs.venv_path("x", ["a==2"]) == venvs.venv_path("x", ["a==2"])


def test_uv_uses_the_index_pip_is_told_to_use(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.delenv("UV_INDEX_URL", raising=False)
    assert venvs.installer_env()["UV_INDEX_URL"] == "https://mirror.example/simple"
    monkeypatch.setenv("UV_INDEX_URL", "https://other.example/simple")
    assert venvs.installer_env()["UV_INDEX_URL"] == "https://other.example/simple"


def test_a_background_build_runs_once_per_key_and_hands_on_its_error():
    calls = []

    def make():
        calls.append(threading.current_thread().name)
        time.sleep(0.2)
        return Path("/built")

    key = ("test", time.monotonic())
    first, second = venvs.in_background(key, make), venvs.in_background(key, make)
    assert first is second and first.result(timeout=10) == Path("/built") and len(calls) == 1
    failing = venvs.in_background(("test", "fails"), lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=10)
