"""The report's building blocks: a panel (one picture or text, its caption, its judged numbers), a section,
and the pictures — image grids with labels, scaled up nearest-neighbour (the tiny world is 16 px), bars."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ...plots import colour, font

INK, MUTED, GRID = (20, 20, 20), (90, 90, 90), (200, 200, 200)


@dataclass
class Panel:
    """One figure of the report: what it shows (caption, with the judge's numbers in words) and the "
    "numbers."""

    title: str
    caption: str
    image: str | None = None  # PNG file name inside the report folder
    numbers: dict = field(default_factory=dict)
    text: str | None = None  # preformatted text shown under the picture (records, refusals, prompts)


@dataclass
class Section:
    key: str
    title: str
    intro: str
    panels: list[Panel] = field(default_factory=list)
    seconds: float = 0.0

    def numbers(self) -> dict:
        return {p.title: p.numbers for p in self.panels}


def to_pil(image: torch.Tensor, scale: int) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image scaled up ``scale`` times, nearest-neighbour (pixels stay sharp)."""
    arr = ((image.detach().float().clamp(-1, 1) * 0.5 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr, "RGB")
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _text_width(text: str, size: int) -> int:
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font(size))
    return int(box[2] - box[0])


def labelled_grid(rows: Sequence[torch.Tensor], row_labels: Sequence[str], col_labels: Sequence[str] = (),
                  notes: Sequence[Sequence[str]] | None = None, scale: int = 5, gap: int = 6,
                  label_size: int = 15) -> Image.Image:
    """Rows of images (each (n, 3, 16, 16) in [-1, 1]) with a label left of each row, optional column labels
    above and a note under every image (e.g. what the judge saw)."""
    if len(rows) != len(row_labels):
        raise ValueError(f"row_labels: expected {len(rows)}, got {len(row_labels)}")
    cols = max(len(r) for r in rows)
    cell = rows[0].shape[-1] * scale
    note_h = label_size + 6 if notes else 0
    left = max(_text_width(t, label_size) for t in row_labels) + 16
    top = label_size + 10 if col_labels else 6
    width = left + cols * (cell + gap) + gap
    height = top + len(rows) * (cell + note_h + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(col_labels):
        x = left + c * (cell + gap) + cell // 2
        draw.text((x, 4), label, fill=MUTED, font=font(label_size - 2), anchor="ma")
    for r, (images, label) in enumerate(zip(rows, row_labels)):
        y = top + r * (cell + note_h + gap)
        draw.text((8, y + cell // 2), label, fill=INK, font=font(label_size), anchor="lm")
        for c, image in enumerate(images):
            x = left + c * (cell + gap)
            canvas.paste(to_pil(image, scale), (x, y))
            if notes:
                draw.text((x + cell // 2, y + cell + 3), notes[r][c], fill=MUTED, font=font(label_size - 3),
                          anchor="ma")
    return canvas


def bar_chart(values: dict[str, float], title: str, y_label: str, size: tuple[int, int] = (520, 320),
              y_max: float = 1.0) -> Image.Image:
    """Vertical bars with their values written on top (values in [0, y_max])."""
    width, height = size
    left, top, right, bottom = 64, 40, 20, 48
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 10), title, fill=INK, font=font(15))
    plot_h = height - top - bottom
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - frac)
        draw.line([(left, y), (width - right, y)], fill=GRID)
        draw.text((left - 8, y), f"{frac * y_max:.2g}", fill=MUTED, font=font(12), anchor="rm")
    draw.text((left - 8, top - 14), y_label, fill=MUTED, font=font(12), anchor="rm")
    slot = (width - left - right) / max(len(values), 1)
    for i, (label, value) in enumerate(values.items()):
        x0 = left + i * slot + slot * 0.2
        x1 = left + (i + 1) * slot - slot * 0.2
        y = top + plot_h * (1 - min(max(value, 0.0), y_max) / y_max)
        draw.rectangle([x0, y, x1, top + plot_h], fill=colour(i))
        draw.text(((x0 + x1) / 2, y - 4), f"{value:.2f}", fill=INK, font=font(14), anchor="md")
        draw.text(((x0 + x1) / 2, top + plot_h + 8), label, fill=INK, font=font(13), anchor="ma")
    return image


def tile(images: Sequence[Image.Image], columns: int, gap: int = 8) -> Image.Image:
    """Images in a grid of ``columns`` (e.g. attribution panels 2x2 instead of one long row)."""
    rows = -(-len(images) // columns)
    w, h = max(i.width for i in images), max(i.height for i in images)
    canvas = Image.new("RGB", (columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap), "white")
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        canvas.paste(image, (c * (w + gap), r * (h + gap)))
    return canvas


def save(image: Image.Image, out: Path, name: str) -> str:
    """Write ``name`` (PNG) into the report folder; returns the file name for the panel."""
    out.mkdir(parents=True, exist_ok=True)
    image.save(out / name, format="PNG", optimize=True)
    return name


def rate(hits: torch.Tensor) -> float:
    """Share of True in a boolean tensor, rounded for the report."""
    return round(float(hits.float().mean()), 3) if hits.numel() else float("nan")
