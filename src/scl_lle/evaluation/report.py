"""Pictures for people: before/after grids and curves, written atomically as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..io.files import atomic_write

__all__ = ["CELL", "plot_curves", "save_grid", "thumbnail"]


#: Size of one grid cell, (width, height) in pixels.
CELL = (224, 168)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def thumbnail(image: torch.Tensor | np.ndarray, cell: tuple[int, int] = CELL) -> Image.Image:
    """A letterboxed grid cell of ``image``: a tensor ``(3, H, W)`` / ``(1, 3, H, W)`` in [0, 1] or an
    ``(H, W, 3)`` uint8 array. Small images are enlarged with nearest neighbours, large ones shrunk smoothly."""
    if isinstance(image, torch.Tensor):
        tensor = image[0] if image.ndim == 4 else image
        image = (tensor.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    picture = Image.fromarray(image)
    ratio = min(cell[0] / picture.width, cell[1] / picture.height)
    size = (max(1, round(picture.width * ratio)), max(1, round(picture.height * ratio)))
    picture = picture.resize(size, Image.Resampling.BILINEAR if ratio < 1 else Image.Resampling.NEAREST)
    canvas = Image.new("RGB", cell, (40, 40, 40))
    canvas.paste(picture, ((cell[0] - picture.width) // 2, (cell[1] - picture.height) // 2))
    return canvas


def save_grid(
    path: str | os.PathLike[str],
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[Image.Image | None]]],
    title: str,
) -> Path:
    """Write a grid PNG atomically: a title line, column labels, then labelled rows of cells (``None`` = blank).

    Cells are :func:`thumbnail` images, all of one size.
    """
    cells = [cell for _, row in rows for cell in row if cell is not None]
    width_cell, height_cell = cells[0].size if cells else CELL
    pad, head, title_h = 4, 26, 26
    grid = Image.new(
        "RGB",
        (pad + len(columns) * (width_cell + pad), title_h + head + len(rows) * (height_cell + pad) + pad),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(grid)
    font, small = _font(16), _font(12)
    draw.text((pad, 4), title, fill=(0, 0, 0), font=font)
    for j, label in enumerate(columns):
        draw.text((pad + j * (width_cell + pad) + 2, title_h + 4), label, fill=(0, 0, 0), font=font)
    for i, (row_label, row) in enumerate(rows):
        y = title_h + head + i * (height_cell + pad)
        for j, cell in enumerate(row):
            if cell is not None:
                grid.paste(cell, (pad + j * (width_cell + pad), y))
        if row_label:
            box = draw.textbbox((pad + 3, y + 3), row_label, font=small)
            draw.rectangle(box, fill=(0, 0, 0))
            draw.text((pad + 3, y + 3), row_label, fill=(255, 255, 255), font=small)
    path = Path(path)
    with atomic_write(path) as temporary:
        grid.save(temporary, format="PNG")
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
