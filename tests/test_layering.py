"""The layering ARCHITECTURE.md describes, checked on the source: who may import whom, and no import cycles.

Every import statement counts, also those inside functions: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOSTS = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "execution", "server", "modules",
         "modules_forge", "backend", "ldm", "sgm", "k_diffusion", "gradio", "launch"}
CAPABILITIES = ("compose", "erase", "unlearn", "textencoders")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved; ``from x import y`` gives
    x.y)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield stem
            yield from (f"{stem}.{alias.name}" for alias in node.names)


def sources(*folders: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for folder in folders for p in (root / folder).rglob("*.py"))


def graph(paths: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    names = {module_name(p, root) for p in paths}
    def edges(name: str, path: Path) -> set[str]:
        # a package's __init__ importing its submodules is how packages work: a child -> ancestor edge is not
        # a cycle
        return {
            m for m in imports_of(path, root) if m in names and m != name and not name.startswith(m + ".")
        }

    return {module_name(p, root): edges(module_name(p, root), p) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def offending(paths: list[Path], forbidden) -> dict[str, list[str]]:
    bad = {module_name(p): sorted({m for m in imports_of(p) if forbidden(m)}) for p in paths}
    return {k: v for k, v in bad.items() if v}


def test_the_core_never_imports_a_host():
    assert offending(sources("unlearnkit"), lambda m: m.split(".")[0] in HOSTS) == {}


def test_capabilities_never_import_the_tiny_world_or_the_command_line():
    paths = sources(*(f"unlearnkit/{c}" for c in CAPABILITIES))
    assert offending(paths, lambda m: m.startswith(("unlearnkit.tinyworld", "unlearnkit.cli"))) == {}


def test_the_tiny_worlds_models_never_import_a_capability():
    paths = [p for p in sources("unlearnkit/tinyworld") if "tasks" not in p.parts]
    capability = tuple(f"unlearnkit.{c}" for c in (*CAPABILITIES, "cli", "webui"))
    assert offending(paths, lambda m: m.startswith(capability)) == {}


def test_only_the_command_line_imports_the_command_line():
    paths = [
        p for p in sources("unlearnkit") if "cli" not in p.relative_to(ROOT).parts and p.name != "__main__.py"
    ]
    assert offending(paths, lambda m: m.startswith("unlearnkit.cli")) == {}


def test_no_import_cycles_in_the_core_or_the_nodes():
    for folder in ("unlearnkit", "nodes"):
        assert cycles(graph(sources(folder))) == [], folder


def test_the_checker_sees_a_cycle_through_a_lazy_relative_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from . import a\n")
    assert "pkg.b.g" in set(imports_of(pkg / "a.py", tmp_path))
    assert cycles(graph(sources("pkg", root=tmp_path), tmp_path)) == [["pkg.a", "pkg.b"]]
