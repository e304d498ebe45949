"""Evaluation: run enhancement methods over data sets, measure them, and write a comparison report.

:func:`evaluate` runs every method (:mod:`scl_lle.evaluation.methods`) on every image of the data sets
(:mod:`scl_lle.evaluation.datasets`), scores the outputs with the metric objects of
:mod:`scl_lle.evaluation.scores` (and mIoU of :mod:`scl_lle.evaluation.segmentation` on segmentation sets), times
the methods and measures their memory (:mod:`scl_lle.evaluation.profiling`), and writes ``report.md``,
``summary.md``, ``results.json``, one ``<dataset>.csv`` per data set, comparison grids (``grid_<subset>.png``) and a
bar chart (``metrics.png``) into an output folder (:mod:`scl_lle.evaluation.report`). ``scl-lle evaluate`` (its
parser) is :mod:`scl_lle.cli.evaluate`.

Every method maps a float tensor ``(1, 3, H, W)`` in [0, 1] to the same shape, on the evaluation device.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .datasets import (
    Sample,
    Subset,
    UnknownNameError,
    brightness_split,
    load_registry,
    load_registry_segmenter,
    subsets_of,
)
from .methods import Method, describe_method, get_method, label_and_spec
from .metrics import Metric
from .niqe import NIQEParams, NIQEParamsNotFoundError, load_niqe_params
from .profiling import MethodStats, PeakMemory, device_name, timed_call, versions
from .report import bar_chart, save_subset_grid, summary_table, thumbnail, write_csvs, write_report, write_results
from .scores import IMAGE_METRICS, image_metrics
from .segmentation import MeanIoU, class_names, colour_labels, iou_from_confusion

__all__ = ["evaluate"]

#: Images per subset shown in its comparison grid (spread evenly over the subset).
_GRID_ROWS = 3


def evaluate(
    methods: Sequence[str],
    datasets: Sequence[str],
    output: str | os.PathLike[str],
    device: str | torch.device = "auto",
    registry: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
    progress: bool = True,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Run ``methods`` on ``datasets`` and write the comparison report into the folder ``output``.

    Args:
        methods: method names or specs (see :func:`~scl_lle.evaluation.methods.get_method`), e.g.
            ``["identity", "clahe", "zero-dce"]``; ``LABEL=SPEC`` names a spec's column.
        datasets: data set names of the registry (see :func:`~scl_lle.evaluation.datasets.list_datasets`).
        output: folder (created) for ``report.md``, ``summary.md``, ``results.json``, ``<dataset>.csv``,
            ``grid_*.png``, ``metrics.png``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        registry: data set / method registry YAML (default :data:`~scl_lle.evaluation.datasets.DEFAULT_REGISTRY`).
        max_images: evaluate at most this many images (the first, by name) of each data set.
        progress: show a tqdm progress bar.
        command: the command line to record in the report (default: a Python call).

    Returns:
        The ``results.json`` content as a dict (NaN where a value could not be computed).

    Each method runs on every image of every set; a failure of one method on one image (or of one metric) is
    recorded in the CSV, ``results.json`` and the report, and the evaluation goes on.
    """
    from tqdm.auto import tqdm

    start_wall = time.perf_counter()
    run = _prepare(methods, datasets, output, device, registry, max_images)
    _warm_up(run)
    total = sum(s.count for s in run.subsets) * len(run.methods)
    with tqdm(total=total, desc="evaluate", unit="run", disable=not progress, dynamic_ncols=True) as bar:
        for sub in run.subsets:
            bar.set_postfix_str(sub.name)
            _evaluate_subset(run, sub, bar.update)
    write_csvs(run.out_dir, run.csv_rows)
    for m in run.methods:
        description = describe_method(run.specs[m], run.registry)
        run.results["methods"][m] = {"description": description, **run.stats[m].summary()}
    run.results["meta"] = _meta(run, datasets, output, device, max_images, command)
    _write_outputs(run, start_wall)
    return run.results


@dataclass
class _Run:
    """What one :func:`evaluate` call works with: fixed before the first image, but the results."""

    specs: dict[str, str]  # label -> method spec, in the order given
    fns: dict[str, Method]  # label -> method
    device: torch.device
    registry: dict[str, Any]
    subsets: list[Subset]
    segmenter: Any  # a scl_lle.models.segmenter.Segmenter when a set is a segmentation set, else None
    out_dir: Path
    niqe_params: NIQEParams | None  # None: NIQE not computed
    notes: list[str]
    memory: PeakMemory
    stats: dict[str, MethodStats] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=lambda: {"datasets": {}, "methods": {}, "failures": []})
    csv_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # data set -> per-image rows

    @property
    def methods(self) -> list[str]:
        return list(self.specs)

    @property
    def grid_methods(self) -> list[str]:
        """The methods shown in the grids (``identity`` is the input column already)."""
        return [m for m in self.specs if m != "identity"]

    def fail(self, sub: Subset, sample: Sample, method: str, error: str) -> None:
        self.results["failures"].append({"subset": sub.name, "image": sample.name, "method": method, "error": error})


def _prepare(
    methods: Sequence[str],
    datasets: Sequence[str],
    output: str | os.PathLike[str],
    device: str | torch.device,
    registry: str | os.PathLike[str] | None,
    max_images: int | None,
) -> _Run:
    """Check the names, create the output folder, build the methods, subsets, segmenter and NIQE model."""
    from ..engine.backends import resolve_device

    if not methods:
        raise ValueError("no methods given")
    if not datasets:
        raise ValueError("no data sets given")
    specs = dict(label_and_spec(m) for m in methods)
    dev = resolve_device(device)
    reg = load_registry(registry)
    unknown = [d for d in datasets if d not in reg["datasets"]]
    if unknown:
        raise UnknownNameError(f"unknown data set(s) {', '.join(unknown)}; known: {', '.join(reg['datasets'])}")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    try:
        niqe_params: NIQEParams | None = load_niqe_params()
    except NIQEParamsNotFoundError:
        niqe_params = None
        notes.append("NIQE not computed: the pristine model niqe_pris_params.npz was not found (see niqe.py).")
    fns = {m: get_method(spec, dev, reg) for m, spec in specs.items()}
    base = Path(reg["path"]).parent
    subsets = [s for d in datasets for s in subsets_of(d, reg["datasets"][d], base, max_images)]
    segmenter = load_registry_segmenter(reg, dev) if any(s.kind == "segmentation" for s in subsets) else None
    run = _Run(specs, fns, dev, reg, subsets, segmenter, out_dir, niqe_params, notes, PeakMemory(dev))
    run.stats = {m: MethodStats() for m in specs}
    return run


def _warm_up(run: _Run) -> None:
    """First calls (kernel selection, lazy initialisation) on a 64x64 image, not timed; failures become notes."""
    warm = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(run.device)
    for m, fn in run.fns.items():
        try:
            fn(warm)
        except Exception as err:
            run.notes.append(f"method {m} failed on a 64x64 warm-up image: {err}")


@dataclass
class _Scores:
    """A method's scores on one subset: per-image metric objects, mIoU (segmentation sets), failed images."""

    metrics: dict[str, Metric]
    iou: MeanIoU | None = None
    failed: int = 0

    def measure(
        self, out: torch.Tensor, inp: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[dict[str, float], list[str]]:
        """Score ``out`` (of input ``inp``; ``target``: the reference of a paired set) -> values by key, errors.

        A metric that fails on the image counts as NaN (so its mean is NaN) and adds an error.
        """
        values: dict[str, float] = {}
        errors: list[str] = []
        for key, metric in self.metrics.items():
            if metric.against == "reference" and target is None:
                continue
            second = {None: (), "input": (inp,), "reference": (target,)}[metric.against]
            try:
                values[key] = float(metric.update(out, *second)[0])
            except Exception as err:  # one metric failing on one image is recorded, not fatal
                metric.add_nan()
                values[key] = math.nan
                errors.append(f"{key}: {err}")
        return values, errors

    def summary(self) -> dict[str, Any]:
        """The subset's entry of this method in ``results.json``: means, failures, mIoU and per-class IoU."""
        summary: dict[str, Any] = {k: float(m.compute()) for k, m in self.metrics.items() if m.count}
        summary["failed"] = self.failed
        if self.iou is not None:
            summary["miou"] = self.iou.compute()
            summary["iou_per_class"] = self.iou.per_class()
            summary["confusion"] = self.iou.confusion.tolist()
        return summary


def _evaluate_subset(run: _Run, sub: Subset, advance: Callable[[int], Any]) -> None:
    """Every method on every image of ``sub``; stores the subset's summary (and grid) in ``run.results``."""
    iou = sub.kind == "segmentation"
    scores = {
        m: _Scores(image_metrics(run.niqe_params), MeanIoU(run.segmenter.num_classes, sub.void) if iou else None)
        for m in run.methods
    }
    picks = set(np.linspace(0, sub.count - 1, min(_GRID_ROWS, sub.count)).round().astype(int).tolist())
    grid_rows: list[tuple[str, list[Image.Image | None]]] = []
    rows = run.csv_rows.setdefault(sub.dataset, [])
    for index, sample in enumerate(sub.load()):
        inp = sample.image.to(run.device)
        target = sample.target.to(run.device) if sample.target is not None else None
        thumbs: dict[str, Image.Image] = {}
        label_thumbs: dict[str, Image.Image] = {}
        for m in run.methods:
            out, pred = _run_method(run, sub, sample, m, inp, target, scores[m], rows)
            advance(1)
            if index in picks and out is not None:
                thumbs[m] = thumbnail(out)
                if pred is not None:
                    label_thumbs[m] = thumbnail(colour_labels(pred))
        if index in picks:
            grid_rows += _grid_rows(run, sub, sample, inp, thumbs, label_thumbs)
    _store_subset(run, sub, scores, grid_rows, [r for r in rows if r["subset"] == sub.name])


def _run_method(
    run: _Run,
    sub: Subset,
    sample: Sample,
    m: str,
    inp: torch.Tensor,
    target: torch.Tensor | None,
    scores: _Scores,
    rows: list[dict[str, Any]],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Method ``m`` on one image: its time and memory, the scores of its output, one CSV row in ``rows``.

    Returns the output ``(1, 3, H, W)`` and its predicted label map ``(H, W)`` (``None`` when the method failed,
    or for the labels, when there are none).
    """
    megapixels = inp.shape[-2] * inp.shape[-1] / 1e6
    row: dict[str, Any] = {"subset": sub.name, "image": sample.name, "method": m, "megapixels": megapixels}
    row["input_brightness"] = float(sample.image.mean())
    rows.append(row)
    try:
        out, seconds, peak = timed_call(run.fns[m], inp, run.memory)
        if out.shape != inp.shape:
            raise ValueError(f"method returned shape {tuple(out.shape)} for input {tuple(inp.shape)}")
        if not torch.isfinite(out).all():
            raise ValueError("method returned NaN or infinite values")
        out = out.clamp(0, 1).to(run.device, torch.float32)
    except Exception as err:
        scores.failed += 1
        run.stats[m].failures += 1
        row["error"] = f"{type(err).__name__}: {err}"
        run.fail(sub, sample, m, row["error"])
        return None, None
    run.stats[m].add(seconds, megapixels, peak)
    row["seconds"] = seconds
    values, errors = scores.measure(out, inp, target)
    pred = None
    if scores.iou is not None and sample.labels is not None:
        try:
            pred = run.segmenter.predict(out)[0].cpu()
            cm = scores.iou.update(pred, sample.labels)
            values["pixel_accuracy"] = float(cm.diagonal().sum()) / max(1, int(cm.sum()))
            values["image_miou"] = iou_from_confusion(cm, sub.void)[0]
        except Exception as err:
            pred = None
            errors.append(f"segmentation: {err}")
    row.update(values)
    if errors:
        row["error"] = "; ".join(errors)
        for error in errors:
            run.fail(sub, sample, m, error)
    return out, pred


def _grid_rows(
    run: _Run,
    sub: Subset,
    sample: Sample,
    inp: torch.Tensor,
    thumbs: dict[str, Image.Image],
    label_thumbs: dict[str, Image.Image],
) -> list[tuple[str, list[Image.Image | None]]]:
    """The grid rows of one image: input, outputs, reference / undarkened frame; then, on segmentation sets, the
    label maps predicted on the input and on each output, and the true labels."""
    extra: Image.Image | None = None
    if sample.target is not None:
        extra = thumbnail(sample.target)
    elif sample.original is not None and sub.extra.get("exposure") != 1.0:
        extra = thumbnail(sample.original)
    cells = [thumbnail(sample.image)] + [thumbs.get(m) for m in run.grid_methods]
    cells += [extra] if extra is not None or sample.labels is not None or sample.target is not None else []
    rows = [(sample.name, cells)]
    if sample.labels is not None and run.segmenter is not None:
        first = label_thumbs.get("identity")
        if first is None:
            try:
                first = thumbnail(colour_labels(run.segmenter.predict(inp)[0]))
            except Exception:
                first = None
        label_cells = [first] + [label_thumbs.get(m) for m in run.grid_methods]
        label_cells.append(thumbnail(colour_labels(sample.labels)))
        rows.append(("segmentation", label_cells))
    return rows


def _store_subset(
    run: _Run,
    sub: Subset,
    scores: dict[str, _Scores],
    grid_rows: list[tuple[str, list[Image.Image | None]]],
    rows: list[dict[str, Any]],
) -> None:
    """Summarise ``sub`` into ``run.results`` (with its dark/lit split from its per-image ``rows``); save its grid."""
    entry: dict[str, Any] = {
        "kind": sub.kind,
        "description": sub.description,
        "images": sub.count,
        "methods": {m: scores[m].summary() for m in run.methods},
        **({"darkening": sub.extra} if sub.extra else {}),
    }
    if sub.kind == "segmentation":
        entry["classes"] = class_names(run.segmenter.spec.class_names, sub.void)
    if grid_rows:
        entry["grid"] = save_subset_grid(run.out_dir, sub, run.grid_methods, grid_rows)
    subsets = run.results["datasets"].setdefault(sub.dataset, {"subsets": {}})["subsets"]
    subsets[sub.name] = entry
    if sub.split_at is not None:
        subsets.update(brightness_split(sub, rows, run.methods, list(IMAGE_METRICS)))


def _meta(
    run: _Run,
    datasets: Sequence[str],
    output: str | os.PathLike[str],
    device: str | torch.device,
    max_images: int | None,
    command: str | None,
) -> dict[str, Any]:
    """The ``meta`` entry of the results: command, date, machine, versions, settings, notes."""
    return {
        "command": command
        or f"scl_lle.evaluation.runner.evaluate(methods={run.methods!r}, datasets={list(datasets)!r}, "
        f"output={str(output)!r}, device={str(device)!r}, max_images={max_images!r})",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(run.device),
        "device_name": device_name(run.device),
        "threads": torch.get_num_threads(),
        "versions": versions(),
        "registry": str(run.registry["path"]),
        "memory_method": run.memory.method,
        "methods": run.methods,
        "datasets": list(datasets),
        "max_images": max_images,
        "notes": run.notes,
    }


def _write_outputs(run: _Run, start_wall: float) -> None:
    """Write the bar chart, ``report.md``, ``summary.md`` and ``results.json``."""
    note = bar_chart(run.out_dir / "metrics.png", run.results, run.methods)
    if note:
        run.notes.append(note)
    else:
        run.results["chart"] = "metrics.png"
    run.results["meta"]["wall_seconds"] = time.perf_counter() - start_wall
    write_report(run.out_dir / "report.md", run.results, run.methods)
    (run.out_dir / "summary.md").write_text(summary_table(run.results), encoding="utf-8")
    write_results(run.out_dir / "results.json", run.results)
