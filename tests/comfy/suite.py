"""One ComfyUI process per engine for every node test module (engine start-up dominates their time).

Each module in SUITE defines ``suite_graphs(world) -> {name: prompt}``, optionally ``build_world(root) ->
dict``
(files its graphs read; ``world["folders"]`` is "name=path;…" for model folders the combo widgets must list),
and binds ``world, comfy_run = suite_fixtures(__name__)``. Worlds are built once per session. The first
module to ask runs every module's graphs, in SUITE order (graphs may rely on files earlier ones wrote), in
one child per engine; each module then sees only its own results, under its own graph names.
``UNLEARNKIT_COMFY_SUITE=test_compose,test_compose_gates`` (comma-separated) runs only those modules' graphs
(in SUITE order; include the modules whose files yours read); the others' tests then fail with a message.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest
from comfy_harness import EngineRun, run_graphs

HERE = Path(__file__).resolve().parent
SUITE = ("test_compose", "test_compose_clones", "test_compose_gates", "test_compose_gate_files",
         "test_compose_evaluate", "test_compose_engine", "test_tinyworld", "test_compose_workflows",
         "test_erase_nodes", "test_erase_concept", "test_unlearn_nodes",
         "test_unlearn_sd_nodes")
SEPARATOR = "."
SELECT_ENV = "UNLEARNKIT_COMFY_SUITE"
FOLDERS_ENV = "UNLEARNKIT_TEST_MODEL_FOLDERS"  # read by the fixture pack (fixture_nodes/clip_fixtures.py)
_WORLDS: dict[str, dict] = {}
_RUNS: dict[str, EngineRun] = {}


def _module(name: str):
    """The test module ``name`` of this folder as pytest imported it (possibly as tests.comfy.<name>)."""
    path = HERE / f"{name}.py"
    found = [m for m in list(sys.modules.values())
             if getattr(m, "__file__", None) and Path(m.__file__).resolve() == path]
    return found[0] if found else importlib.import_module(name)


def world(name: str, tmp_path_factory: pytest.TempPathFactory, engine: str) -> dict:
    """The files module ``name``'s graphs read ({} when it builds none); one per engine when the module sets
    ``WORLD_PER_ENGINE`` (its graphs write files there that the other engine's run must not find)."""
    name = name.rpartition(".")[2]
    key = f"{name}-{engine}" if getattr(_module(name), "WORLD_PER_ENGINE", False) else name
    if key not in _WORLDS:
        build = getattr(_module(name), "build_world", None)
        _WORLDS[key] = build(Path(tmp_path_factory.mktemp(f"{key}_files"))) if build else {}
    return _WORLDS[key]


def members() -> tuple[str, ...]:
    """The SUITE modules whose graphs run: all, or those named by $UNLEARNKIT_COMFY_SUITE."""
    wanted = [m.strip() for m in os.environ.get(SELECT_ENV, "").split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(SUITE))
    if unknown:
        raise pytest.UsageError(f"{SELECT_ENV}: unknown {unknown}; known: {list(SUITE)}")
    return tuple(m for m in SUITE if m in wanted) if wanted else SUITE


def _run_suite(engine: str, tmp_path_factory: pytest.TempPathFactory) -> EngineRun:
    graphs, folders = {}, []
    for member in members():
        member_world = world(member, tmp_path_factory, engine)
        folders.append(member_world.get("folders", ""))
        graphs.update(
            {f"{member}{SEPARATOR}{k}": v for k, v in _module(member).suite_graphs(member_world).items()}
        )
    old = os.environ.get(FOLDERS_ENV)
    os.environ[FOLDERS_ENV] = ";".join(f for f in folders if f)
    try:
        return run_graphs(engine, graphs, tmp_path_factory.mktemp(f"suite-{engine}"))
    finally:
        os.environ.pop(FOLDERS_ENV) if old is None else os.environ.__setitem__(FOLDERS_ENV, old)


def module_run(engine: str, name: str, tmp_path_factory: pytest.TempPathFactory) -> EngineRun:
    """Module ``name``'s view of the shared run: its results by its own graph names."""
    if engine not in _RUNS:
        _RUNS[engine] = _run_suite(engine, tmp_path_factory)
    if name.rpartition(".")[2] not in members():
        raise RuntimeError(f"{name}: its graphs did not run; add it to ${SELECT_ENV} or unset it")
    whole, prefix = _RUNS[engine], name.rpartition(".")[2] + SEPARATOR
    mine = {k[len(prefix):]: v for k, v in whole.results.items() if k.startswith(prefix)}
    return EngineRun(whole.engine, whole.version, mine, whole.log)


def suite_fixtures(name: str):
    """The module's ``world`` and ``comfy_run`` fixtures (bind both at module level)."""
    if name.rpartition(".")[2] not in SUITE:
        raise ValueError(f"{name}: add it to suite.SUITE")

    @pytest.fixture(scope="module", name="world")
    def world_fixture(comfy_engine: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
        return world(name, tmp_path_factory, comfy_engine)

    @pytest.fixture(scope="module", name="comfy_run")
    def comfy_run(comfy_engine: str, tmp_path_factory: pytest.TempPathFactory) -> EngineRun:
        return module_run(comfy_engine, name, tmp_path_factory)

    return world_fixture, comfy_run
