"""``python -m unlearnkit install-webui WEBUI_DIR``: put the AUTOMATIC1111 / Forge extension into a webui.

Links ``extensions/sd-webui-unlearnkit`` of this checkout into ``WEBUI_DIR/extensions/`` (the panel's
script then finds the core through the link), or with ``--copy`` copies it together with the core
package (for systems without symlinks; re-run after updating). Creates the panel's model folders
``models/UnlearnKit/{gates,text_encoders,slug_patches}``. Restart the webui afterwards.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

EXTENSION = "sd-webui-unlearnkit"
CORE = Path(__file__).resolve().parents[1]  # the unlearnkit package
SOURCE = CORE.parent / "extensions" / EXTENSION
WEBUI_MARKERS = ("webui.py", "launch.py")
MODEL_FOLDERS = ("UnlearnKit/gates", "UnlearnKit/text_encoders", "UnlearnKit/slug_patches")
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "weights", ".*")


def check_webui(webui: Path) -> None:
    """Raise ValueError unless ``webui`` looks like an AUTOMATIC1111 / Forge folder."""
    if not webui.is_dir():
        raise ValueError(f"WEBUI_DIR: {str(webui)!r} is not a folder")
    if not any((webui / m).is_file() for m in WEBUI_MARKERS):
        raise ValueError(
            f"WEBUI_DIR: {str(webui)!r} has none of {list(WEBUI_MARKERS)}; give the webui's top folder"
        )


def remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def install(webui: str | os.PathLike, copy: bool = False, force: bool = False, source: Path = SOURCE) -> Path:
    """Install the extension into ``webui``; returns the extension's path there."""
    webui = Path(webui).resolve()
    check_webui(webui)
    if not (source / "scripts").is_dir():
        raise ValueError(
            f"extension source {str(source)!r} is missing; install-webui needs an UnlearnKit checkout"
        )
    target = webui / "extensions" / EXTENSION
    if target.is_symlink() and not copy and target.resolve() == source.resolve():
        log.info("already linked: %s -> %s", target, source)
    else:
        if target.exists() or target.is_symlink():
            if not force:
                raise FileExistsError(f"{str(target)!r} already exists; pass --force to replace it")
            remove(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copytree(source, target, ignore=COPY_IGNORE)
            shutil.copytree(
                CORE, target / "unlearnkit", ignore=COPY_IGNORE
            )  # the script finds it next to itself
        else:
            target.symlink_to(source, target_is_directory=True)
        log.info("%s %s -> %s", "copied" if copy else "linked", source, target)
    for folder in MODEL_FOLDERS:
        (webui / "models" / folder).mkdir(parents=True, exist_ok=True)
    return target


def run(args: argparse.Namespace) -> int:
    target = install(args.webui, copy=args.copy, force=args.force)
    print(
        f"UnlearnKit extension installed at {target}. Restart the webui; put gate files, erased text "
        "encoders "
        f"and SLUG patches under {Path(args.webui).resolve() / 'models' / 'UnlearnKit'}."
    )
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "install-webui", help="install the AUTOMATIC1111 / Forge extension into a webui folder"
    )
    p.add_argument("webui", help="the webui's top folder (holds webui.py / launch.py and extensions/)")
    p.add_argument(
        "--copy", action="store_true", help="copy instead of linking (also copies the core package)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing extensions/sd-webui-unlearnkit")
    p.set_defaults(func=run)
