"""Every name a bench script imports (at the top or inside a function) exists: a refactor that moves a module
breaks a bench only when it runs, minutes in, unless this catches it."""
from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = sorted((ROOT / "bench").glob("*.py"))
HOSTS = ("comfy", "folder_paths")  # imported only inside a ComfyUI process
SEARCH = [ROOT, ROOT / "bench", ROOT / "tests" / "comfy", ROOT / "tests" / "fixtures"]  # as the scripts set


def absolute_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every ``from module import names`` in the file."""
    return [(node.lineno, node.module, [a.name for a in node.names])
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0]


def missing(module: str, name: str) -> bool:
    found = importlib.import_module(module)
    if name == "*" or hasattr(found, name):
        return False
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return True
    return False


@pytest.mark.parametrize("path", BENCH, ids=[p.name for p in BENCH])
def test_bench_imports_resolve(path, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(p) for p in SEARCH] + sys.path)
    broken = []
    for line, module, names in absolute_imports(path):
        if module.split(".")[0] in HOSTS:
            continue
        try:
            broken += [f"{path.name}:{line} {module}.{n}" for n in names if missing(module, n)]
        except ModuleNotFoundError as e:
            broken.append(f"{path.name}:{line} {module} ({e})")
    assert not broken, broken
