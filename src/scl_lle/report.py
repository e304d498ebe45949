"""Pictures for people: before/after grids and curves, written atomically as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .atomic import atomic_write

__all__ = ["image_grid", "plot_curves"]


def _to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3, H, W)`` tensor or ``(H, W, 3)`` array in [0, 1] (or uint8) → ``(H, W, 3)`` uint8."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return image


def image_grid(
    columns: Sequence[torch.Tensor | Sequence[Any]],
    titles: Sequence[str],
    path: str | os.PathLike[str],
    *,
    cell: int = 256,
    row_titles: Sequence[str] | None = None,
) -> Path:
    """Write a grid: one column per entry of ``columns`` (each ``(N, 3, H, W)`` in [0, 1], or a list of images),
    one row per image, each cell fitted into ``cell`` x ``cell`` pixels, with ``titles`` above the columns."""
    columns = [list(column) for column in columns]
    rows = max(len(column) for column in columns)
    font = ImageFont.load_default()
    header, left = 18, (110 if row_titles else 0)
    first = _to_uint8(columns[0][0])
    aspect = first.shape[0] / first.shape[1]
    width, height = cell, max(1, round(cell * aspect))
    canvas = Image.new("RGB", (left + width * len(columns), header + height * rows), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (title, column) in enumerate(zip(titles, columns, strict=True)):
        draw.text((left + c * width + 4, 3), str(title)[:40], fill="black", font=font)
        for r, image in enumerate(column):
            tile = Image.fromarray(_to_uint8(image))
            ratio = min(width / tile.width, height / tile.height)
            size = (max(1, round(tile.width * ratio)), max(1, round(tile.height * ratio)))
            tile = tile.resize(size, Image.Resampling.LANCZOS if ratio < 1 else Image.Resampling.NEAREST)
            canvas.paste(tile, (left + c * width + (width - tile.width) // 2, header + r * height))
    for r, title in enumerate(row_titles or []):
        draw.text((4, header + r * height + 4), str(title)[:18], fill="black", font=font)
    path = Path(path)
    with atomic_write(path) as temporary:
        canvas.save(temporary, format="PNG")
    return path


def plot_curves(
    rows: Sequence[dict[str, float]],
    keys: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    x: str = "step",
) -> Path:
    """Plot ``keys`` of logged ``rows`` against ``x``, one panel per key (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in row for row in rows)]
    ncols = min(3, max(1, len(keys)))
    nrows = max(1, -(-len(keys) // ncols))
    figure, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    for axis, key in zip(axes.flat, keys, strict=False):
        points = [(row[x], row[key]) for row in rows if key in row and x in row]
        axis.plot(*zip(*points, strict=True), linewidth=1)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel(x, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    with atomic_write(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    return path
