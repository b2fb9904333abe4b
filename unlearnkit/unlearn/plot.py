"""Importance vs alignment plot of SLUG's candidate layers (arXiv 2407.11867 Fig. 2), PIL only.

Grey dots: all candidate layers; blue lines and dots: the Pareto front of each tower (block stack);
red disc: the chosen layer, labelled. Axes are log-scaled like the paper's figure (``log=False`` for linear).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..plots import Frame, font
from .pareto import LayerScores, stack_of

logger = logging.getLogger(__name__)

Color = tuple[int, int, int]


@dataclass(frozen=True)
class PlotStyle:
    """Canvas size, margins (left, top, right, bottom), colours, marker radii and axis scale."""

    width: int = 640
    height: int = 480
    margins: tuple[int, int, int, int] = (80, 36, 24, 56)
    background: Color = (255, 255, 255)
    ink: Color = (0, 0, 0)
    point: Color = (150, 150, 150)
    front: Color = (31, 119, 180)
    highlight: Color = (214, 39, 40)
    point_radius: int = 3
    highlight_radius: int = 7
    log: bool = True

    def __post_init__(self) -> None:
        left, top, right, bottom = self.margins
        if self.width - left - right < 20 or self.height - top - bottom < 20:
            raise ValueError(
                f"width/height: {self.width}x{self.height} leaves no room inside margins {self.margins}"
            )


def _axis(values: np.ndarray, log: bool) -> tuple[np.ndarray, float, float]:
    """Values in axis units (log10 if ``log``), and padded (lo, hi) bounds."""
    if log:
        positive = values[values > 0]
        floor = positive.min() / 10 if positive.size else 1e-6
        values = np.log10(np.maximum(values, floor))
    lo, hi = float(values.min()), float(values.max())
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    return values, lo - pad, hi + pad


def frame(
    importance: Sequence[float], alignment: Sequence[float], style: PlotStyle
) -> tuple[Frame, np.ndarray]:
    """The pixel frame (x = alignment, y = importance, in log10 units if style.log) and the (N, 2) data
    points."""
    left, top, right, bottom = style.margins
    xs, x0, x1 = _axis(np.asarray(alignment, dtype=np.float64), style.log)
    ys, y0, y1 = _axis(np.asarray(importance, dtype=np.float64), style.log)
    box = (left, top, style.width - right, style.height - bottom)
    return Frame(box, (x0, x1), (y0, y1)), np.stack([xs, ys], axis=1)


def positions(importance: Sequence[float], alignment: Sequence[float], style: PlotStyle) -> np.ndarray:
    """Pixel (x, y) of each layer: x = alignment, y = importance (up); (N, 2) floats."""
    fr, points = frame(importance, alignment, style)
    return np.array([fr(x, y) for x, y in points], dtype=np.float64).reshape(-1, 2)


def _ticks(lo: float, hi: float, log: bool) -> list[tuple[float, str]]:
    if log:
        return [(float(e), f"1e{e}") for e in range(math.ceil(lo), math.floor(hi) + 1)] or [
            ((lo + hi) / 2, f"{10 ** ((lo + hi) / 2):.2g}")
        ]
    return [(float(v), f"{v:.2g}") for v in np.linspace(lo, hi, 5)]


def _dot(draw: ImageDraw.ImageDraw, xy: np.ndarray, r: int, color: Color) -> None:
    x, y = float(xy[0]), float(xy[1])
    draw.ellipse([x - r, y - r, x + r, y + r], fill=color)


def _draw_axes(
    draw: ImageDraw.ImageDraw, fr: Frame, style: PlotStyle, text_font: ImageFont.ImageFont
) -> None:
    left, top, right, bottom = fr.box
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=style.ink, width=1)
    for value, text in _ticks(*fr.x_range, style.log):
        x, _ = fr(value, fr.y_range[0])
        draw.line([(x, bottom), (x, bottom + 4)], fill=style.ink)
        draw.text((x, bottom + 6), text, fill=style.ink, font=text_font, anchor="ma")
    for value, text in _ticks(*fr.y_range, style.log):
        _, y = fr(fr.x_range[0], value)
        draw.line([(left - 4, y), (left, y)], fill=style.ink)
        draw.text((left - 6, y), text, fill=style.ink, font=text_font, anchor="rm")
    draw.text(((left + right) / 2, style.height - 6), "gradient alignment |cos(g_forget, g_retain)|",
              fill=style.ink, font=text_font, anchor="md")
    draw.text((left, top / 2), "layer importance ||g_forget|| / ||theta||  (blue: Pareto front, red: chosen)",
              fill=style.ink, font=text_font, anchor="lm")


def _front_per_stack(scores: LayerScores) -> list[np.ndarray]:
    """Front indices grouped by block stack (SLUG ranks each tower's layers separately)."""
    groups: dict[str, list[int]] = {}
    for i in scores.front.tolist():
        groups.setdefault(stack_of(scores.names[i]), []).append(i)
    return [np.array(g) for g in groups.values()]


def plot_layers(
    scores: LayerScores, chosen: str | None = None, style: PlotStyle | None = None
) -> Image.Image:
    """RGB image of importance vs alignment with the Pareto front and ``chosen`` highlighted."""
    style = style or PlotStyle()
    image = Image.new("RGB", (style.width, style.height), style.background)
    draw = ImageDraw.Draw(image)
    text_font = font(12)
    _draw_axes(draw, frame(scores.importance, scores.alignment, style)[0], style, text_font)
    xy = positions(scores.importance, scores.alignment, style)  # (N, 2) pixels
    for i in range(len(scores.names)):
        _dot(draw, xy[i], style.point_radius, style.point)
    for members in _front_per_stack(scores):  # one front per block stack (tower)
        front = xy[members[np.argsort(scores.alignment[members], kind="stable")]]
        if len(front) > 1:
            draw.line([tuple(p) for p in front.tolist()], fill=style.front, width=2)
        for p in front:
            _dot(draw, p, style.point_radius + 1, style.front)
    if chosen is not None:
        i = scores.index(chosen)
        _dot(draw, xy[i], style.highlight_radius, style.highlight)
        x, y = xy[i]
        anchor = "rb" if x > style.width / 2 else "lb"
        dx = -style.highlight_radius - 2 if anchor == "rb" else style.highlight_radius + 2
        draw.text((x + dx, y - style.highlight_radius), chosen, fill=style.ink, font=text_font, anchor=anchor)
    return image


def plot_array(scores: LayerScores, chosen: str | None = None, style: PlotStyle | None = None) -> np.ndarray:
    """The plot as an (H, W, 3) uint8 array (e.g. for a ComfyUI IMAGE: divide by 255, add a batch axis)."""
    return np.array(plot_layers(scores, chosen, style), dtype=np.uint8)  # a writable copy (torch.from_numpy)
