"""The report of an evaluation, and pictures for people (used by training too).

- Pictures, written atomically as PNG: before/after grids (:func:`thumbnail`, :func:`save_grid`,
  :func:`save_subset_grid`), training curves (:func:`plot_curves`), the metrics' bar chart (:func:`bar_chart`).
- Text: ``report.md`` (:func:`write_report`), ``summary.md`` (:func:`summary_table`), ``results.json``
  (:func:`write_results`) and one CSV per data set (:func:`write_csvs`) from the results of
  :func:`scl_lle.evaluation.runner.evaluate`. Metric titles and their ↑/↓ come from :mod:`scl_lle.evaluation.scores`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..io.files import atomic_write
from .scores import EXPOSURE_PATCH, IMAGE_METRICS, metric_class, title

if TYPE_CHECKING:
    from .datasets import Subset

__all__ = [
    "CELL",
    "CSV_COLUMNS",
    "bar_chart",
    "plot_curves",
    "save_grid",
    "save_subset_grid",
    "summary_table",
    "thumbnail",
    "write_csvs",
    "write_report",
    "write_results",
]


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


def save_subset_grid(
    folder: Path, sub: Subset, methods: Sequence[str], rows: Sequence[tuple[str, Sequence[Image.Image | None]]]
) -> str:
    """Write the comparison grid of subset ``sub`` (columns: input, ``methods``, then the reference, the
    undarkened frame / labels) into ``folder``; returns the file name (``grid_<subset>.png``)."""
    columns = ["input", *methods]
    if sub.kind == "paired":
        columns.append("reference")
    elif sub.kind == "segmentation":
        columns.append("undarkened / labels" if sub.extra.get("exposure", 1.0) != 1.0 else "labels")
    name = f"grid_{re.sub(r'[^A-Za-z0-9_.-]+', '_', sub.name)}.png"
    save_grid(folder / name, columns, rows, f"{sub.name}: {sub.description}"[:150])
    return name


def _panel_title(key: str, label: str) -> str:
    better = metric_class(key).higher_is_better
    return label if better is None else f"{label} ({'higher' if better else 'lower'} is better)"


def bar_chart(path: Path, results: dict[str, Any], methods: list[str]) -> str | None:
    """Grouped bar chart of the main metrics (one panel per metric, sub-sets on x, one bar per method); returns
    a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no bar chart (pip install matplotlib)"
    subsets = {s: r for d in results["datasets"].values() for s, r in d["subsets"].items()}
    panels = [("niqe", "NIQE"), ("brightness", "mean brightness"), ("loe", "LOE")]
    if any(r["kind"] == "segmentation" for r in subsets.values()):
        panels.append(("miou", "mIoU, ESPNet-CamVid"))
    if any(r["kind"] == "paired" for r in subsets.values()):
        panels.append(("psnr", "PSNR dB, paired sets"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 1.2 * len(subsets) + 3), 3.2 * len(panels)))
    axes = np.atleast_1d(axes)
    colours = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes, panels, strict=True):
        names = [
            s for s, r in subsets.items() if any(not math.isnan(v.get(key, math.nan)) for v in r["methods"].values())
        ]
        xs = np.arange(len(names))
        width = 0.8 / max(1, len(methods))
        for k, m in enumerate(methods):
            vals = [subsets[s]["methods"].get(m, {}).get(key, math.nan) for s in names]
            ax.bar(xs + (k - (len(methods) - 1) / 2) * width, vals, width, label=m, color=colours(k % 10))
        if len(names) == 1:  # keep a lone group from stretching over the whole panel
            ax.set_xlim(-1.5, 1.5)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=15, ha="right", fontsize=9)
        ax.set_title(_panel_title(key, label), fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(ncol=min(len(methods), 7), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# ------------------------------------------------------------------------------------------------------ text


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _title(key: str) -> str:
    """:func:`~scl_lle.evaluation.scores.title` for a Markdown table cell."""
    return title(key).replace("|", "\\|")


def _report_head(results: dict[str, Any], methods: list[str]) -> list[str]:
    """The report's header (command, machine, what the metrics are, notes) and its speed and memory table."""
    meta = results["meta"]
    lines = [
        "# scl-lle evaluation report",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}; wall time {meta['wall_seconds']:.0f} s",
        f"- device: {meta['device']} ({meta['device_name']}); torch threads {meta['threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- registry: `{meta['registry']}`",
        "",
        "Metrics are means over the images of a set. NIQE: MATLAB-compatible (lower is better); LOE: lightness "
        "order error against the input (lower is better); brightness: mean of RGB in [0, 1]; exp. error: mean "
        f"|{EXPOSURE_PATCH}x{EXPOSURE_PATCH} patch brightness − 0.5| (Zero-DCE's exposure measure); colourfulness: "
        "Hasler & Süsstrunk. PSNR/SSIM against the reference (paired sets). mIoU: ESPNet-CamVid over the 11 "
        "classes, void ignored, from one confusion matrix over all frames of the set. `identity` is the raw input.",
        "",
    ]
    if meta.get("notes"):
        lines += [f"> {n}" for n in meta["notes"]] + [""]
    lines += ["## Speed and memory", "", f"Peak memory: {meta['memory_method']}.", ""]
    lines += [
        "| method | s / megapixel | peak memory (MiB) | images | failures | description |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        s = results["methods"][m]
        lines.append(
            f"| {m} | {_fmt(s['seconds_per_megapixel'], 4)} | {_fmt(s['peak_memory_mib'], 1)} | {s['images']} | "
            f"{s['failures']} | {s['description']} |"
        )
    return [*lines, ""]


def _subset_section(sub: str, r: dict[str, Any], methods: list[str]) -> list[str]:
    """The report's section of one subset: its metrics table, per-class IoU, grid."""
    lines = [f"## {sub}", "", f"{r['description']} — {r['images']} images.", ""]
    keys = [k for k, (cls, _) in IMAGE_METRICS.items() if cls.against != "reference" or r["kind"] == "paired"]
    keys += ["miou"] if r["kind"] == "segmentation" else []
    lines.append("| method | " + " | ".join(_title(k) for k in keys) + " | failed |")
    lines.append("|---" * (len(keys) + 2) + "|")
    digits = {"niqe": 3, "loe": 1, "psnr": 2, "colourfulness": 1}
    for m in methods:
        v = r["methods"].get(m, {})
        cells = [_fmt(v.get(k), digits.get(k, 3)) for k in keys]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {v.get('failed', 0)} |")
    lines.append("")
    if r["kind"] == "segmentation":
        classes = r["classes"]
        lines += ["Per-class IoU:", ""]
        lines.append("| method | " + " | ".join(classes) + " |")
        lines.append("|---" * (len(classes) + 1) + "|")
        for m in methods:
            ious = r["methods"].get(m, {}).get("iou_per_class", [math.nan] * len(classes))
            lines.append(f"| {m} | " + " | ".join(_fmt(x, 2) for x in ious) + " |")
        lines.append("")
    if r.get("grid"):
        lines += [f"![{sub}]({r['grid']})", ""]
    return lines


def write_report(path: Path, results: dict[str, Any], methods: list[str]) -> None:
    """Write ``report.md``: header, speed and memory, one section per subset, bar chart, failures."""
    lines = _report_head(results, methods)
    for d in results["datasets"].values():
        for sub, r in d["subsets"].items():
            lines += _subset_section(sub, r, methods)
    if results.get("chart"):
        lines += ["## Bar chart", "", f"![metrics]({results['chart']})", ""]
    failures = results["failures"]
    lines += ["## Failures", ""]
    if not failures:
        lines.append("None.")
    for f in failures[:200]:
        lines.append(f"- {f['subset']} / {f['image']} / {f['method']}: {f['error']}")
    if len(failures) > 200:
        lines.append(f"- ... and {len(failures) - 200} more (results.json)")
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


#: The headline metrics of :func:`summary_table` per kind of subset.
_SUMMARY_KEYS = {
    "noref": ("niqe", "brightness"),
    "paired": ("psnr", "ssim"),
    "segmentation": ("miou",),
}


def summary_table(results: dict[str, Any]) -> str:
    """A compact Markdown table of the headline metrics (rows: subset and metric; columns: methods).

    Args:
        results: what :func:`~scl_lle.evaluation.runner.evaluate` returns (or its ``results.json``).

    Returns:
        Markdown text (also written as ``summary.md``), with the command that produced it.
    """
    methods = list(results["meta"]["methods"])
    lines = [
        "| data set | metric | " + " | ".join(methods) + " |",
        "|---|---" + "|---" * len(methods) + "|",
    ]
    digits = {"niqe": 2, "psnr": 2}
    for d in results["datasets"].values():
        for sub, r in d["subsets"].items():
            keys = _SUMMARY_KEYS.get(r["kind"], ()) + (("brightness_change",) if "split_of" in r else ())
            for key in keys:
                cells = [_fmt(r["methods"].get(m, {}).get(key), digits.get(key, 3)) for m in methods]
                lines.append(f"| {sub} | {_title(key)} | " + " | ".join(cells) + " |")
    meta = results["meta"]
    lines += ["", f"Produced by `{meta['command']}` on {meta['device_name']} ({meta['date'][:10]}).", ""]
    return "\n".join(lines)


#: Columns of the per-image CSVs (then ``error``).
CSV_COLUMNS = (
    *("subset", "image", "method", "input_brightness", *IMAGE_METRICS, "pixel_accuracy", "image_miou"),
    *("seconds", "megapixels"),
)


def write_csvs(folder: Path, rows_by_dataset: dict[str, list[dict[str, Any]]]) -> None:
    """Write ``<dataset>.csv`` per data set: one row per image and method (:data:`CSV_COLUMNS`, ``error``)."""
    for dataset, rows in rows_by_dataset.items():
        with (folder / f"{dataset}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[*CSV_COLUMNS, "error"], extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write ``results.json`` (NaN and infinities as ``null``)."""
    path.write_text(json.dumps(_json_safe(results), indent=1), encoding="utf-8")
