"""Install what UnlearnKit needs and is missing; never replaces the host's torch.

Run by ComfyUI-Manager (as ``python install.py`` in the pack folder), by hand, and by the
README's two set-up commands. Idempotent: a second run installs nothing and says so.

    python install.py          # runtime requirements (requirements.txt)
    python install.py --test   # + test requirements and an editable install of the core
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def test_requirements() -> list[str]:
    """The ``test`` extra of pyproject.toml (the one list of what the suite needs)."""
    import tomllib  # Python 3.11+, which the test suite needs

    with open(ROOT / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["optional-dependencies"]["test"])


def _requirement_cls():
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - pip always vendors it
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def read_requirements(path: Path) -> list[str]:
    """Requirement lines of a requirements file, comments and blanks dropped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def missing(requirements: list[str]) -> list[str]:
    """The requirements not satisfied by what is installed now."""
    requirement = _requirement_cls()
    out = []
    for spec in requirements:
        req = requirement(spec)
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            out.append(spec)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            out.append(spec)
    return out


def torch_requirements() -> list[str]:
    """torch (+ a torchvision built for it) only when absent; an installed torch is kept as is."""
    try:
        torch_version = md.version("torch")
    except md.PackageNotFoundError:
        return ["torch", "torchvision"]
    try:
        md.version("torchvision")
        return []
    except md.PackageNotFoundError:
        # pin torchvision's torch to the installed one so pip cannot swap the host's build
        return ["torchvision", f"torch=={torch_version}"]


def core_installed_from_here() -> bool:
    """True when an installed 'unlearnkit' (editable) resolves to this folder's copy of the core."""
    try:
        md.version("unlearnkit")
    except md.PackageNotFoundError:
        return False
    code = "import unlearnkit, sys; sys.stdout.write(unlearnkit.__file__)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    return found.returncode == 0 and Path(found.stdout).resolve().is_relative_to(ROOT)


def pip_install(specs: list[str], *extra: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", *extra, *specs]
    print("[unlearnkit install]", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--test", action="store_true", help="also install test requirements and the core (editable)"
    )
    args = parser.parse_args(argv)

    todo = torch_requirements() + missing(read_requirements(ROOT / "requirements.txt"))
    if args.test:
        todo += missing(test_requirements())
    if todo:
        pip_install(todo)
        print(f"[unlearnkit install] installed: {', '.join(todo)}")
    else:
        print("[unlearnkit install] all requirements already satisfied; nothing installed")

    if args.test:
        if core_installed_from_here():
            print("[unlearnkit install] core package 'unlearnkit' already installed from this folder")
        else:
            pip_install(["-e", str(ROOT)], "--no-deps", "--no-build-isolation")
            print("[unlearnkit install] installed the core package 'unlearnkit' from this folder (editable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
