"""Small PIL charts (no matplotlib dependency): line panels and scatter plots returned as images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw, ImageFont

PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


@dataclass(frozen=True)
class Frame:
    """Maps data coordinates into a pixel box (left, top, right, bottom)."""

    box: tuple[int, int, int, int]
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def __call__(self, x: float, y: float) -> tuple[float, float]:
        left, top, right, bottom = self.box
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        fx = (x - x0) / ((x1 - x0) or 1.0)
        fy = (y - y0) / ((y1 - y0) or 1.0)
        return left + fx * (right - left), bottom - fy * (bottom - top)


def draw_axes(draw: ImageDraw.ImageDraw, frame: Frame, title: str, x_label: str, y_label: str,
              pad: int = 0) -> None:
    """Frame, title, labels and ticks; ``pad`` px of room above and below the data (a line at the range's
    end is not drawn on the frame)."""
    left, top, right, bottom = frame.box
    f = font(12)
    draw.rectangle((left, top - pad, right, bottom + pad), outline=(0, 0, 0))
    draw.text((left, top - pad - 18), title, fill=(0, 0, 0), font=f)
    draw.text(((left + right) // 2 - 30, bottom + pad + 18), x_label, fill=(0, 0, 0), font=f)
    draw.text((left - 54, (top + bottom) // 2 - 22), y_label, fill=(0, 0, 0), font=font(10))
    for frac in (0.0, 0.5, 1.0):
        xv = frame.x_range[0] + frac * (frame.x_range[1] - frame.x_range[0])
        yv = frame.y_range[0] + frac * (frame.y_range[1] - frame.y_range[0])
        px, _ = frame(xv, frame.y_range[0])
        _, py = frame(frame.x_range[0], yv)
        draw.text((px - 10, bottom + pad + 3), f"{xv:.3g}", fill=(60, 60, 60), font=font(10))
        draw.text((left - 36, py - 6), f"{yv:.3g}", fill=(60, 60, 60), font=font(10))


def line_panels(
    series: Sequence[Sequence[Sequence[float]]], labels: Sequence[str], titles: Sequence[str], x_label: str,
    y_label: str, y_range: tuple[float, float] = (0.0, 1.0), panel_size: tuple[int, int] = (320, 200),
    columns: int | None = None,
) -> Image.Image:
    """One panel per entry of ``series`` (``columns`` per row; default: one row); each panel holds one line
    per label: series[p][k][step]."""
    pw, ph = panel_size
    margin_l, margin_t, margin_b, legend_w = 56, 28, 40, 140
    cols = max(1, min(columns or len(series), len(series)))
    rows = -(-len(series) // cols)
    width = margin_l + cols * (pw + margin_l) + legend_w
    height = rows * (margin_t + ph + margin_b)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for p, panel in enumerate(series):
        row, col = divmod(p, cols)
        left, top = margin_l + col * (pw + margin_l), row * (margin_t + ph + margin_b) + margin_t
        steps = max((len(line) for line in panel), default=1)
        pad = 6  # a weight of exactly 0 or 1 is drawn inside the frame, not on it
        frame = Frame((left, top + pad, left + pw, top + ph - pad), (0, max(steps - 1, 1)), y_range)
        draw_axes(draw, frame, titles[p], x_label, y_label, pad)
        for k, line in enumerate(panel):
            pts = [frame(i, v) for i, v in enumerate(line)]
            if len(pts) > 1:
                draw.line(pts, fill=colour(k), width=2)
            elif pts:
                draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour(k))
    lx = width - legend_w + 10
    for k, label in enumerate(labels):
        y = margin_t + 4 + 16 * k
        draw.rectangle([lx, y + 3, lx + 12, y + 11], fill=colour(k))
        draw.text((lx + 18, y), label[:18], fill=(0, 0, 0), font=font(12))
    return img


def image_grid(images: torch.Tensor, rows: int, scale: int = 4):
    """(rows·cols, 3, H, W) in [-1, 1] -> a PIL image, 1 px gaps, nearest-neighbour upscaled."""
    n, _, h, w = images.shape
    if n % rows:
        raise ValueError(f"images: {n} images do not fill {rows} rows")
    cols = n // rows
    canvas = torch.full((3, rows * (h + 1) + 1, cols * (w + 1) + 1), 0.5)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = (
            img * 0.5 + 0.5
        )
    arr = (canvas.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
    pil = Image.fromarray(arr)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
