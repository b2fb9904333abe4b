"""Forget / retain images from a folder: every image file, its caption from a same-named .txt or its file
name."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


def caption_for(path: Path) -> str:
    """The sidecar caption (``cat_01.txt`` next to ``cat_01.png``, as LoRA datasets have it), else the name in
    words."""
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8").strip()
        if text:
            return text
    words = re.sub(r"[_\-.]+", " ", path.stem)
    return re.sub(r"\s*\d+$", "", words).strip() or path.stem


def load_image_folder(folder: str | os.PathLike, what: str) -> tuple[list, list[str]]:
    """(RGB PIL images, captions) of every image in ``folder`` (sorted by name); a clear error if none."""
    from PIL import Image, UnidentifiedImageError

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{what}: folder {str(root)!r} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{what}: no images ({', '.join(IMAGE_SUFFIXES)}) in {str(root)!r}")
    images, captions = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{what}: {str(path)!r} is not a readable image: {exc}") from exc
        captions.append(caption_for(path))
    logger.info("%s: %d images from %s", what, len(images), root)
    return images, captions
