"""Evaluation: run enhancement methods over data sets, measure them, and write a comparison report.

- Methods (a registry by name): the classical baselines of :mod:`scl_lle.evaluation.baselines` (``identity``, ``gamma``,
  ``histeq``, ``clahe``, ``lime``), parametrised specs (``gamma:2.2``, ``clahe:3.0``), DCE-Net weights
  (``dcenet:PATH``, a bare ``.pth`` / ``.safetensors`` path, named entries under ``methods:`` in the registry
  YAML such as ``scl-lle-release`` and ``zero-dce``) and the project's default model ``scl-lle`` when the
  package ships one. See :func:`list_methods`, :func:`get_method`.
- Data sets: a YAML registry (default ``configs/datasets.yaml``), kinds ``noref``, ``paired``,
  ``segmentation``. See :func:`load_registry`, :func:`list_datasets`.
- :func:`evaluate` writes ``report.md``, ``results.json``, one ``<dataset>.csv`` per data set, comparison grids
  (``grid_<subset>.png``) and a bar chart (``metrics.png``) into an output folder.
- ``scl-lle evaluate`` (its parser) is :mod:`scl_lle.cli.evaluate`.

Every method maps a float tensor ``(1, 3, H, W)`` in [0, 1] to the same shape, on the evaluation device.
"""

from __future__ import annotations

import csv
import datetime as _dt
import fnmatch
import json
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..engine.exposure import AUTO, OFF, Exposure, parse_exposure
from ..io.image import read_image
from ..train.config import ConfigError, expand_path
from . import baselines
from .report import save_grid, thumbnail

__all__ = [
    "CAMVID_CLASSES",
    "DEFAULT_REGISTRY",
    "Method",
    "RegistryError",
    "UnknownNameError",
    "confusion_matrix",
    "dataset_images",
    "evaluate",
    "get_method",
    "iou_from_confusion",
    "list_datasets",
    "list_methods",
    "load_image",
    "load_registry",
]

Method = Callable[[torch.Tensor], torch.Tensor]
"""An enhancement method: ``(1, 3, H, W)`` float in [0, 1] -> same shape, in [0, 1]."""

DEFAULT_REGISTRY = Path(__file__).resolve().parents[3] / "configs" / "datasets.yaml"
"""The registry of a source checkout (``configs/datasets.yaml``); installed copies pass ``registry=``."""

CAMVID_CLASSES = (
    "sky",
    "building",
    "pole",
    "road",
    "pavement",
    "tree",
    "sign",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
_CAMVID_PALETTE = np.array(
    [
        [128, 128, 128],
        [128, 0, 0],
        [192, 192, 128],
        [128, 64, 128],
        [60, 40, 222],
        [128, 128, 0],
        [192, 128, 128],
        [64, 64, 128],
        [64, 0, 128],
        [64, 64, 0],
        [0, 128, 192],
        [0, 0, 0],
    ],
    dtype=np.uint8,
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_EXPOSURE_PATCH = 16
_GRID_ROWS = 3

# ------------------------------------------------------------------------------------------------ registry


class RegistryError(ConfigError):
    """The registry YAML is missing, malformed, or refers to something that is not there."""


class UnknownNameError(KeyError):
    """An unknown method or data set name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _expand(value: str, where: str, base: Path) -> Path:
    """Expand a registry path (``${VAR}``, ``~``); relative paths are taken from ``base``, the registry's folder."""
    try:
        return expand_path(value, root=base, key=where)
    except ConfigError as error:
        raise RegistryError(str(error)) from None


def load_registry(registry: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the registry YAML (default :data:`DEFAULT_REGISTRY`) -> ``{"datasets", "methods", "segmenter",
    "path"}``. Paths are kept as written; they are expanded when used (so an unset variable only matters for
    the data sets actually evaluated)."""
    import yaml

    path = Path(registry) if registry is not None else DEFAULT_REGISTRY
    if not path.is_file():
        raise RegistryError(
            f"registry file not found: {path} (pass --registry / registry= with a datasets YAML, "
            "see configs/datasets.yaml in the source tree)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RegistryError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a mapping with 'datasets' (and optional 'methods', 'segmenter')")
    datasets = data.get("datasets") or {}
    methods = data.get("methods") or {}
    if not isinstance(datasets, dict) or not isinstance(methods, dict):
        raise RegistryError(f"{path}: 'datasets' and 'methods' must be mappings of name -> settings")
    for name, spec in datasets.items():
        if not isinstance(spec, dict) or spec.get("kind") not in ("noref", "paired", "segmentation"):
            raise RegistryError(f"{path}: data set {name!r} needs kind: noref, paired or segmentation")
    return {"datasets": datasets, "methods": methods, "segmenter": data.get("segmenter"), "path": path.resolve()}


def list_datasets(registry: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the data sets in the registry YAML."""
    return list(load_registry(registry)["datasets"])


def dataset_images(
    name: str, registry: str | os.PathLike[str] | None = None, max_images: int | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """The input images of registry data set ``name``, one at a time: ``(sample name, (1, 3, H, W) in [0, 1])``.

    The images that :func:`evaluate` feeds to the methods (low-light inputs of paired sets; for darkened
    segmentation sets, every darkening level in turn), on the CPU. ``max_images``: at most that many per set.
    Raises :class:`UnknownNameError` for a name the registry lacks.
    """
    reg = load_registry(registry)
    if name not in reg["datasets"]:
        raise UnknownNameError(f"unknown data set {name!r}; known: {', '.join(reg['datasets'])}")
    for subset in _subsets(name, reg["datasets"][name], Path(reg["path"]).parent, max_images):
        for sample in subset.load():
            yield sample.name, sample.image


# ------------------------------------------------------------------------------------------------- methods

#: The packaged default model without the finishing: the network's curves alone.
CURVES_ONLY = "scl-lle-curves"
_PARAMETRISED = {
    "gamma": ("gamma:G", "fixed gamma correction x ** (1/G)"),
    "clahe": ("clahe:CLIP", "CLAHE with clip limit CLIP (8x8 tiles)"),
}
_BUILTIN_HELP = {
    "identity": "the input unchanged (= raw)",
    "gamma": "adaptive gamma: mean luminance -> 0.45, never darkens",
    "histeq": "global histogram equalisation of the luminance",
    "clahe": "CLAHE on the luminance, 8x8 tiles, clip limit 2.0",
    "lime": "LIME: max-RGB illumination, structure-aware refinement, gamma 0.8",
}


def _shipped_default() -> bool:
    from ..models.hub import list_pretrained

    return bool(list_pretrained())


def list_methods(registry: str | os.PathLike[str] | None = None) -> list[str]:
    """Names accepted by :func:`get_method`: the baselines, the registry's named weights (when the registry is
    readable) and ``scl-lle`` when a default model ships. Specs (``gamma:2.2``, ``clahe:3``, ``dcenet:PATH``,
    a weights path) are accepted too."""
    names = list(baselines.BASELINES)
    try:
        names += [n for n in load_registry(registry)["methods"] if n not in names]
    except RegistryError:
        if registry is not None:
            raise
    if _shipped_default():
        names += ["scl-lle", CURVES_ONLY]
    return names


def _label_and_spec(method: str) -> tuple[str, str]:
    """``"LABEL=SPEC"`` -> ``(LABEL, SPEC)`` (a short column name for a long spec); ``"SPEC"`` -> ``(SPEC, SPEC)``."""
    label, sep, spec = method.strip().partition("=")
    if sep and label.strip() and spec.strip() and "/" not in label and ":" not in label:
        return label.strip(), spec.strip()
    return method.strip(), method.strip()


def _describe_method(name: str, registry: dict[str, Any] | None) -> str:
    if "@" in name:
        spec, setting = _split_exposure(name)
        if setting is not None:
            return f"{_describe_method(spec, registry)}, exposure {setting}"
    if name in _BUILTIN_HELP:
        return _BUILTIN_HELP[name]
    if registry and name in registry["methods"]:
        entry = registry["methods"][name] or {}
        return str(entry.get("description") or entry.get("weights") or "")
    if name.startswith("dcenet:") or name.endswith((".pth", ".safetensors")):
        return "DCE-Net weights " + name.removeprefix("dcenet:")
    kind = name.split(":", 1)[0]
    if kind in _PARAMETRISED:
        return _PARAMETRISED[kind][1].replace(_PARAMETRISED[kind][0].split(":")[1], name.split(":", 1)[1])
    if name == "scl-lle":
        return "the project's default model, finished as scl-lle enhance does"
    if name == CURVES_ONLY:
        return "the project's default model, its curves alone (--no-finish)"
    if name.startswith(FINISHED_PREFIX):
        return _describe_method(name.removeprefix(FINISHED_PREFIX), registry) + ", finished"
    return ""


def _dcenet_method(
    weights: str | os.PathLike[str] | None, device: torch.device, finish: bool = False, exposure: Exposure = OFF
) -> Method:
    from ..engine.enhancer import Enhancer

    # PyTorch whatever is installed: the documented metrics come from one implementation of the network.
    enhancer = Enhancer(weights=weights, device=device, finish=finish, backend="torch", exposure=exposure)

    def run(x: torch.Tensor) -> torch.Tensor:
        return enhancer(x)

    return run


def _on_device(fn: Callable[..., torch.Tensor], device: torch.device, **kwargs: Any) -> Method:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x.to(device), **kwargs)

    return run


def get_method(
    name_or_spec: str,
    device: str | torch.device = "cpu",
    registry: str | os.PathLike[str] | dict[str, Any] | None = None,
) -> Method:
    """The method ``name_or_spec`` as a callable ``(1, 3, H, W)`` in [0, 1] -> same shape, on ``device``.

    Accepted: a baseline name (``identity``, ``gamma``, ``histeq``, ``clahe``, ``lime``); ``gamma:G`` (fixed
    ``x ** (1/G)``); ``clahe:CLIP``; ``dcenet:PATH`` or a path to ``.pth`` / ``.safetensors`` weights; a name
    under ``methods:`` in the registry YAML; ``scl-lle`` (the packaged default model, finished as ``scl-lle
    enhance`` does, exposure auto); ``scl-lle-curves`` (its curves alone, exposure auto). Other DCE-Net methods
    run their curves alone at full strength, as released; ``finished:SPEC`` adds the finishing
    (:mod:`scl_lle.engine.finishing`) to any of them. ``SPEC@EXPOSURE`` sets the exposure of a DCE-Net method
    (:mod:`scl_lle.engine.exposure`): ``scl-lle@off`` (the network's curves at full strength), ``scl-lle@0.45``,
    ``zero-dce@auto``.
    Raises :class:`UnknownNameError` listing the known names.
    """
    from ..engine.enhancer import resolve_device

    dev = resolve_device(device)
    name = name_or_spec.strip()
    if name in baselines.BASELINES:
        return _on_device(baselines.BASELINES[name], dev)
    kind, _, arg = name.partition(":")
    if kind in _PARAMETRISED and arg:
        try:
            value = float(arg)
        except ValueError:
            raise UnknownNameError(f"method {name!r}: {kind} needs a number, as in {_PARAMETRISED[kind][0]}") from None
        if kind == "gamma":
            return _on_device(baselines.gamma_correction, dev, gamma=value)
        return _on_device(baselines.clahe, dev, clip_limit=value)
    name, exposure = _split_exposure(name)
    if name.startswith(FINISHED_PREFIX):
        weights = _dcenet_weights(name.removeprefix(FINISHED_PREFIX).strip(), registry)
        return _dcenet_method(weights, dev, finish=True, exposure=exposure or OFF)
    weights = _dcenet_weights(name, registry)
    default = AUTO if name in ("scl-lle", CURVES_ONLY) else OFF  # the packaged model as enhance runs it
    return _dcenet_method(weights, dev, finish=name == "scl-lle", exposure=exposure or default)


def _split_exposure(name: str) -> tuple[str, Exposure | None]:
    """``"SPEC@EXPOSURE"`` -> ``(SPEC, exposure)`` (``auto``, ``off`` or a number in (0, 1)); else ``(name, None)``."""
    spec, sep, setting = name.rpartition("@")
    if not sep or not spec.strip():
        return name, None
    try:
        return spec.strip(), parse_exposure(setting)
    except ValueError as error:
        raise UnknownNameError(f"method {name!r}: {error}") from None


#: ``finished:SPEC``: the DCE-Net method SPEC with the enhancer's finishing (:mod:`scl_lle.engine.finishing`).
FINISHED_PREFIX = "finished:"


def _dcenet_weights(name: str, registry: str | os.PathLike[str] | dict[str, Any] | None) -> Path | None:
    """The weights file of a DCE-Net method spec (``None``: the packaged default model); raises
    :class:`UnknownNameError` when ``name`` names no DCE-Net."""
    kind, _, arg = name.partition(":")
    if kind == "dcenet" and arg:
        return Path(arg).expanduser()
    if name.endswith((".pth", ".safetensors")) and Path(name).expanduser().is_file():
        return Path(name).expanduser()
    if name in ("scl-lle", CURVES_ONLY):
        return None
    reg: dict[str, Any] | None
    if isinstance(registry, dict):
        reg = registry
    else:
        try:
            reg = load_registry(registry)
        except RegistryError:
            if registry is not None:
                raise
            reg = None
    if reg is not None and name in reg["methods"]:
        entry = reg["methods"][name] or {}
        if "weights" not in entry:
            raise RegistryError(f"{reg['path']}: method {name!r} needs 'weights: PATH'")
        path = _expand(entry["weights"], f"method {name!r}", Path(reg["path"]).parent)
        if not path.is_file():
            raise RegistryError(f"method {name!r}: weights file not found: {path}")
        return path
    known = list(baselines.BASELINES) + (list(reg["methods"]) if reg else [])
    if _shipped_default():
        known += ["scl-lle", CURVES_ONLY]
    raise UnknownNameError(
        f"unknown method {name!r}; known: {', '.join(known)}; or a spec: gamma:G, clahe:CLIP, dcenet:PATH, "
        f"a .pth/.safetensors path, {FINISHED_PREFIX}SPEC"
    )


# ------------------------------------------------------------------------------------------ segmentation math


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Confusion matrix ``(C, C)`` int64 (rows: true class, columns: predicted) of label maps ``pred`` and
    ``target`` (same shape, integer class ids in ``0..C-1``). Pixels whose target is ``ignore_index`` are
    left out; so are target values outside ``0..C-1``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    p = pred.reshape(-1).long().cpu()
    t = target.reshape(-1).long().cpu()
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    idx = t[keep] * num_classes + p[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_from_confusion(confusion: torch.Tensor, ignore_index: int | None = None) -> tuple[float, list[float]]:
    """Per-class IoU ``tp / (tp + fp + fn)`` and their mean from a confusion matrix (rows true, cols predicted).

    The class ``ignore_index`` (void) gets no IoU and is not in the list: its row should be empty (void pixels
    ignored); predictions of void on a labelled pixel still count as misses of the true class. Classes absent
    from both truth and prediction get NaN and are left out of the mean (NaN if none is left).
    """
    m = confusion.to(torch.float64)
    classes = [c for c in range(m.shape[0]) if c != ignore_index]
    tp = m.diagonal()
    fn = m.sum(dim=1) - tp
    fp = m.sum(dim=0) - tp
    ious = []
    for c in classes:
        denom = float(tp[c] + fp[c] + fn[c])
        ious.append(float(tp[c]) / denom if denom > 0 else float("nan"))
    valid = [v for v in ious if not math.isnan(v)]
    return (sum(valid) / len(valid) if valid else float("nan")), ious


# ------------------------------------------------------------------------------------------------ data sets


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file -> ``(1, 3, H, W)`` float32 in [0, 1] (grey repeated to RGB, alpha dropped)."""
    pixels = read_image(path).pixels
    if pixels.dtype == np.uint8:
        arr = pixels.astype(np.float32) / 255.0
    elif pixels.dtype == np.uint16:
        arr = pixels.astype(np.float32) / 65535.0
    else:
        arr = np.clip(pixels.astype(np.float32), 0.0, 1.0)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr[:, :, :3])).permute(2, 0, 1).unsqueeze(0)


def _load_labels(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("L") if im.mode not in ("L", "P", "I") else im, dtype=np.int64))


@dataclass
class _Sample:
    name: str
    image: torch.Tensor  # (1, 3, H, W) in [0, 1], CPU
    target: torch.Tensor | None = None  # paired reference, same shape
    labels: torch.Tensor | None = None  # (H, W) int64
    original: torch.Tensor | None = None  # undarkened frame (for the grid)


@dataclass
class _Subset:
    """One evaluated set: a data set, or one darkness level of a darkened segmentation set."""

    dataset: str
    name: str
    kind: str
    description: str
    count: int
    load: Callable[[], Iterator[_Sample]]
    void: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    split_at: float | None = None  # also summarise inputs below / at or above this brightness


def _read_list(path: Path, root: Path, where: str) -> list[tuple[Path, Path]]:
    if not path.is_file():
        raise RegistryError(f"{where}: list file not found: {path}")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2:
            raise RegistryError(f"{where}: {path}: expected two paths per line, got {line!r}")
        rows.append((root / parts[0], root / parts[1]))
    return rows


def _subsets(name: str, spec: dict[str, Any], base: Path, max_images: int | None) -> list[_Subset]:
    where = f"data set {name!r}"
    kind = spec["kind"]
    description = str(spec.get("description", ""))

    def limit(items: list[Any]) -> list[Any]:
        return items[:max_images] if max_images is not None else items

    if kind == "noref":
        folder = _expand(spec.get("images", ""), where, base)
        if not folder.is_dir():
            raise RegistryError(f"{where}: image folder not found: {folder}")
        files = limit(sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES))
        if not files:
            raise RegistryError(f"{where}: no image files in {folder}")

        def load_noref() -> Iterator[_Sample]:
            for f in files:
                yield _Sample(f.name, load_image(f))

        split = spec.get("split_by_input_brightness")
        split_at = float(split) if split is not None else None
        return [_Subset(name, name, kind, description, len(files), load_noref, split_at=split_at)]

    root = _expand(spec.get("root", "."), where, base)
    if kind == "paired":
        pairs = limit(_read_list(_expand(spec.get("pairs", ""), where, base), root, where))

        def load_paired() -> Iterator[_Sample]:
            for low, high in pairs:
                x, y = load_image(low), load_image(high)
                h, w = min(x.shape[-2], y.shape[-2]), min(x.shape[-1], y.shape[-1])
                yield _Sample(low.name, x[..., :h, :w].contiguous(), target=y[..., :h, :w].contiguous())

        return [_Subset(name, name, kind, description, len(pairs), load_paired)]

    # segmentation
    pattern = spec.get("include", "*")
    frames = [
        (img, lab)
        for img, lab in _read_list(_expand(spec.get("list", ""), where, base), root, where)
        if fnmatch.fnmatch(img.name, pattern)
    ]
    frames = limit(frames)
    if not frames:
        raise RegistryError(f"{where}: no frames match include={pattern!r}")
    void = spec.get("void")
    dark = spec.get("darken")
    if not dark:

        def load_seg() -> Iterator[_Sample]:
            for img, lab in frames:
                yield _Sample(img.name, load_image(img), labels=_load_labels(lab))

        return [_Subset(name, name, kind, description, len(frames), load_seg, void)]

    gamma = float(dark.get("gamma", 1.0))
    seed = int(dark.get("seed", 0))
    noise = dark.get("noise")
    noise_t = (float(noise[0]), float(noise[1])) if noise else None
    out = []
    for exposure in dark.get("exposures", []):
        exposure = float(exposure)

        def load_dark(exposure: float = exposure) -> Iterator[_Sample]:
            for i, (img, lab) in enumerate(frames):
                original = load_image(img)
                if exposure == 1.0 and gamma == 1.0 and noise_t is None:
                    dark_img = original
                else:
                    generator = torch.Generator().manual_seed(seed + i)
                    dark_img = _darken(original, exposure, gamma, noise_t, generator)
                    dark_img = torch.round(dark_img * 255.0) / 255.0  # stored as an 8-bit image would be
                yield _Sample(img.name, dark_img, labels=_load_labels(lab), original=original)

        if exposure == 1.0 and gamma == 1.0 and noise_t is None:
            desc = f"{description}; undarkened (reference)"
        else:
            desc = f"{description}; darkened: exposure {exposure:g}, gamma {gamma:g}"
            desc += f", noise (shot, read) = {noise_t}" if noise_t else ", no noise"
            desc += f", seed {seed}, 8-bit"
        info = {"exposure": exposure, "gamma": gamma, "noise": noise_t, "seed": seed}
        out.append(_Subset(name, f"{name}@{exposure:g}", kind, desc, len(frames), load_dark, void, info))
    return out


def _darken(
    images: torch.Tensor,
    exposure: float,
    gamma: float,
    noise: tuple[float, float] | None,
    generator: torch.Generator,
) -> torch.Tensor:
    from ..train.data import darken

    return darken(images, exposure, gamma, noise=noise, generator=generator)


# ------------------------------------------------------------------------------------------------- measuring


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class _PeakMemory:
    """Peak memory of a block of code, in MiB, on the evaluation device.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory allocated
    before. CPU (Linux): peak resident set size (``VmHWM`` of ``/proc/self/status``, reset by writing 5 to
    ``/proc/self/clear_refs``) minus the RSS before; elsewhere the process's lifetime peak RSS
    (``ru_maxrss``), which only grows.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.method = "torch.cuda.max_memory_allocated (minus memory before)"
        self.resettable = False
        if not self.cuda:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.resettable = _rss_kib() is not None
            except OSError:
                self.resettable = False
            self.method = (
                "peak RSS during the call minus RSS before (Linux VmHWM, reset via /proc/self/clear_refs)"
                if self.resettable
                else "process peak RSS (ru_maxrss; not resettable here, an upper bound)"
            )

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif self.resettable:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self._before = _rss_kib() or 0

    def stop(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self._before) / 2**20
        if self.resettable:
            with open("/proc/self/status", encoding="ascii") as f:
                hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
            return max(0, hwm - self._before) / 1024
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@dataclass
class _MethodStats:
    seconds: float = 0.0
    megapixels: float = 0.0
    peak_mib: float = 0.0
    images: int = 0
    failures: int = 0


_METRIC_KEYS = ("niqe", "loe", "brightness", "exposure_error", "colourfulness", "psnr", "ssim")
_METRIC_TITLES = {
    "niqe": "NIQE↓",
    "loe": "LOE↓",
    "brightness": "brightness",
    "exposure_error": "exp. error↓",
    "colourfulness": "colourfulness",
    "psnr": "PSNR↑ (dB)",
    "ssim": "SSIM↑",
    "miou": "mIoU↑",
    "brightness_change": "\\|Δ brightness\\|",
}


def _image_metrics(
    out: torch.Tensor, inp: torch.Tensor, target: torch.Tensor | None, use_niqe: bool
) -> tuple[dict[str, float], list[str]]:
    from . import metrics as M

    values: dict[str, float] = {}
    errors: list[str] = []
    jobs: dict[str, Callable[[], torch.Tensor]] = {
        "loe": lambda: M.loe(out, inp),
        "brightness": lambda: M.mean_brightness(out),
        "exposure_error": lambda: M.exposure_error(out, 0.5, _EXPOSURE_PATCH),
        "colourfulness": lambda: M.colourfulness(out),
    }
    if use_niqe:
        jobs = {"niqe": lambda: M.niqe(out), **jobs}
    if target is not None:
        jobs["psnr"] = lambda: M.psnr(out, target)
        jobs["ssim"] = lambda: M.ssim(out, target)
    for key, job in jobs.items():
        try:
            values[key] = float(job()[0])
        except Exception as err:  # one metric failing on one image is recorded, not fatal
            values[key] = float("nan")
            errors.append(f"{key}: {err}")
    return values, errors


# -------------------------------------------------------------------------------------------------- pictures


def _colour_labels(labels: torch.Tensor) -> np.ndarray:
    lab = labels.cpu().numpy().clip(0, len(_CAMVID_PALETTE) - 1)
    return _CAMVID_PALETTE[lab]


def _bar_chart(path: Path, results: dict[str, Any], methods: list[str]) -> str | None:
    """Grouped bar chart of the main metrics (one panel per metric, sub-sets on x, one bar per method)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no bar chart (pip install matplotlib)"
    subsets = [(ds, sub) for ds, d in results["datasets"].items() for sub in d["subsets"]]
    panels = [("niqe", "NIQE (lower is better)"), ("brightness", "mean brightness"), ("loe", "LOE (lower is better)")]
    if any(results["datasets"][ds]["subsets"][s]["kind"] == "segmentation" for ds, s in subsets):
        panels.append(("miou", "mIoU, ESPNet-CamVid (higher is better)"))
    if any(results["datasets"][ds]["subsets"][s]["kind"] == "paired" for ds, s in subsets):
        panels.append(("psnr", "PSNR dB (paired sets)"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 1.2 * len(subsets) + 3), 3.2 * len(panels)))
    axes = np.atleast_1d(axes)
    colours = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes, panels, strict=True):
        names = [
            s
            for ds, s in subsets
            if any(
                not math.isnan(v.get(key, float("nan")))
                for v in results["datasets"][ds]["subsets"][s]["methods"].values()
            )
        ]
        xs = np.arange(len(names))
        width = 0.8 / max(1, len(methods))
        for k, m in enumerate(methods):
            vals = []
            for s in names:
                ds = next(d for d, sub in subsets if sub == s)
                vals.append(results["datasets"][ds]["subsets"][s]["methods"].get(m, {}).get(key, float("nan")))
            ax.bar(xs + (k - (len(methods) - 1) / 2) * width, vals, width, label=m, color=colours(k % 10))
        if len(names) == 1:  # keep a lone group from stretching over the whole panel
            ax.set_xlim(-1.5, 1.5)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=15, ha="right", fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].legend(ncol=min(len(methods), 7), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# ------------------------------------------------------------------------------------------------ reporting


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _write_report(path: Path, results: dict[str, Any], methods: list[str]) -> None:
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
        f"|{_EXPOSURE_PATCH}x{_EXPOSURE_PATCH} patch brightness − 0.5| (Zero-DCE's exposure measure); colourfulness: "
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
    lines.append("")
    for d in results["datasets"].values():
        for sub, r in d["subsets"].items():
            lines += [f"## {sub}", "", f"{r['description']} — {r['images']} images.", ""]
            keys = ["niqe", "loe", "brightness", "exposure_error", "colourfulness"]
            if r["kind"] == "paired":
                keys += ["psnr", "ssim"]
            if r["kind"] == "segmentation":
                keys += ["miou"]
            lines.append("| method | " + " | ".join(_METRIC_TITLES[k] for k in keys) + " | failed |")
            lines.append("|---" * (len(keys) + 2) + "|")
            for m in methods:
                v = r["methods"].get(m, {})
                digits = {"niqe": 3, "loe": 1, "psnr": 2, "colourfulness": 1}
                cells = [_fmt(v.get(k), digits.get(k, 3)) for k in keys]
                lines.append(f"| {m} | " + " | ".join(cells) + f" | {v.get('failed', 0)} |")
            lines.append("")
            if r["kind"] == "segmentation":
                classes = r["classes"]
                lines += ["Per-class IoU:", ""]
                lines.append("| method | " + " | ".join(classes) + " |")
                lines.append("|---" * (len(classes) + 1) + "|")
                for m in methods:
                    ious = r["methods"].get(m, {}).get("iou_per_class", [float("nan")] * len(classes))
                    lines.append(f"| {m} | " + " | ".join(_fmt(x, 2) for x in ious) + " |")
                lines.append("")
            if r.get("grid"):
                lines += [f"![{sub}]({r['grid']})", ""]
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


def _brightness_split(sub: _Subset, rows: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Summaries of ``sub``'s dark inputs (``NAME-dark``: input brightness below ``split_at``) and well-lit ones
    (``NAME-lit``), from its per-image rows; adds the mean absolute change of brightness (``brightness_change``),
    so that what a method does to photos that are already well lit is visible."""
    assert sub.split_at is not None
    out = {}
    for suffix, lit in (("dark", False), ("lit", True)):
        chosen = [r for r in rows if (r["input_brightness"] >= sub.split_at) == lit]
        images = len({r["image"] for r in chosen})
        word = "at or above" if lit else "below"
        entry: dict[str, Any] = {
            "kind": sub.kind,
            "description": f"{sub.description}: the {images} inputs with brightness {word} {sub.split_at:g}",
            "images": images,
            "split_of": sub.name,
            "methods": {},
        }
        for m in methods:
            mine = [r for r in chosen if r["method"] == m and "brightness" in r]
            summary: dict[str, Any] = {}
            for key in (*_METRIC_KEYS, "brightness_change"):
                if key == "brightness_change":
                    values = [abs(r["brightness"] - r["input_brightness"]) for r in mine]
                else:
                    values = [r[key] for r in mine if key in r and not math.isnan(r[key])]
                if values:
                    summary[key] = float(np.mean(values))
            summary["failed"] = sum(1 for r in chosen if r["method"] == m and "error" in r)
            entry["methods"][m] = summary
        out[f"{sub.name}-{suffix}"] = entry
    return out


#: The headline metrics of :func:`summary_table` per kind of subset.
_SUMMARY_KEYS = {
    "noref": ("niqe", "brightness"),
    "paired": ("psnr", "ssim"),
    "segmentation": ("miou",),
}


def summary_table(results: dict[str, Any]) -> str:
    """A compact Markdown table of the headline metrics (rows: subset and metric; columns: methods).

    Args:
        results: what :func:`evaluate` returns (or its ``results.json``).

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
                lines.append(f"| {sub} | {_METRIC_TITLES[key]} | " + " | ".join(cells) + " |")
    meta = results["meta"]
    lines += ["", f"Produced by `{meta['command']}` on {meta['device_name']} ({meta['date'][:10]}).", ""]
    return "\n".join(lines)


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


def _versions() -> dict[str, str]:
    import PIL

    from .. import __version__

    return {
        "scl-lle": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
        except OSError:
            pass
        return platform.processor() or "CPU"
    return device.type


# ---------------------------------------------------------------------------------------------------- evaluate


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
        methods: method names or specs (see :func:`get_method`), e.g. ``["identity", "clahe", "zero-dce"]``.
        datasets: data set names of the registry (see :func:`list_datasets`).
        output: folder (created) for ``report.md``, ``results.json``, ``<dataset>.csv``, ``grid_*.png``,
            ``metrics.png``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        registry: data set / method registry YAML (default :data:`DEFAULT_REGISTRY`).
        max_images: evaluate at most this many images (the first, by name) of each data set.
        progress: show a tqdm progress bar.
        command: the command line to record in the report (default: a Python call).

    Returns:
        The ``results.json`` content as a dict (NaN where a value could not be computed).

    Each method runs on every image of every set; a failure of one method on one image (or of one metric) is
    recorded in the CSV, ``results.json`` and the report, and the evaluation goes on.
    """
    from tqdm.auto import tqdm

    from ..engine.enhancer import resolve_device
    from .metrics import NIQEParamsNotFoundError, load_niqe_params

    start_wall = time.perf_counter()
    if not methods:
        raise ValueError("no methods given")
    if not datasets:
        raise ValueError("no data sets given")
    specs = dict(_label_and_spec(m) for m in methods)  # label -> method spec
    methods = list(specs)
    dev = resolve_device(device)
    reg = load_registry(registry)
    base = Path(reg["path"]).parent
    unknown = [d for d in datasets if d not in reg["datasets"]]
    if unknown:
        raise UnknownNameError(f"unknown data set(s) {', '.join(unknown)}; known: {', '.join(reg['datasets'])}")
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)

    notes: list[str] = []
    try:
        load_niqe_params()
        use_niqe = True
    except NIQEParamsNotFoundError:
        use_niqe = False
        notes.append("NIQE not computed: the pristine model niqe_pris_params.npz was not found (see metrics.py).")

    fns = {m: get_method(specs[m], dev, reg) for m in methods}
    subsets: list[_Subset] = []
    for d in datasets:
        subsets += _subsets(d, reg["datasets"][d], base, max_images)

    segmenter = None
    if any(s.kind == "segmentation" for s in subsets):
        from ..models.espnet import load_segmenter

        seg_spec = reg.get("segmenter") or {}
        if "name" not in seg_spec or "weights" not in seg_spec:
            raise RegistryError(f"{reg['path']}: segmentation sets need 'segmenter: {{name: ..., weights: ...}}'")
        weights = _expand(seg_spec["weights"], "segmenter", base)
        if not weights.is_file():
            raise RegistryError(f"segmenter weights not found: {weights}")
        segmenter = load_segmenter(seg_spec["name"], weights, device=dev)

    memory = _PeakMemory(dev)
    stats = {m: _MethodStats() for m in methods}
    warm = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(dev)
    for m, fn in fns.items():  # first calls (kernel selection, lazy init) are not timed
        try:
            fn(warm)
        except Exception as err:
            notes.append(f"method {m} failed on a 64x64 warm-up image: {err}")

    results: dict[str, Any] = {"datasets": {}, "methods": {}, "failures": []}
    total = sum(s.count for s in subsets) * len(methods)
    bar = tqdm(total=total, desc="evaluate", unit="run", disable=not progress, dynamic_ncols=True)
    grid_methods = [m for m in methods if m != "identity"]
    csv_rows: dict[str, list[dict[str, Any]]] = {}

    for sub in subsets:
        per_method: dict[str, dict[str, list[float]]] = {m: {k: [] for k in _METRIC_KEYS} for m in methods}
        failed = dict.fromkeys(methods, 0)
        n_classes = segmenter.num_classes if segmenter is not None else 0
        confusion = {m: torch.zeros(n_classes, n_classes, dtype=torch.int64) for m in methods}
        picks = set(np.linspace(0, sub.count - 1, min(_GRID_ROWS, sub.count)).round().astype(int).tolist())
        grid_rows: list[tuple[str, list[Image.Image | None]]] = []
        rows = csv_rows.setdefault(sub.dataset, [])
        bar.set_postfix_str(sub.name)
        for index, sample in enumerate(sub.load()):
            inp = sample.image.to(dev)
            target = sample.target.to(dev) if sample.target is not None else None
            mp = inp.shape[-2] * inp.shape[-1] / 1e6
            thumbs: dict[str, Image.Image] = {}
            label_thumbs: dict[str, Image.Image] = {}
            for m, fn in fns.items():
                row: dict[str, Any] = {
                    "subset": sub.name,
                    "image": sample.name,
                    "method": m,
                    "megapixels": mp,
                    "input_brightness": float(sample.image.mean()),
                }
                errors: list[str] = []
                try:
                    memory.start()
                    t0 = time.perf_counter()
                    out = fn(inp)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    seconds = time.perf_counter() - t0
                    peak = memory.stop()
                    if out.shape != inp.shape:
                        raise ValueError(f"method returned shape {tuple(out.shape)} for input {tuple(inp.shape)}")
                    if not torch.isfinite(out).all():
                        raise ValueError("method returned NaN or infinite values")
                    out = out.clamp(0, 1).to(dev, torch.float32)
                except Exception as err:
                    failed[m] += 1
                    stats[m].failures += 1
                    row["error"] = f"{type(err).__name__}: {err}"
                    results["failures"].append(
                        {"subset": sub.name, "image": sample.name, "method": m, "error": row["error"]}
                    )
                    rows.append(row)
                    bar.update(1)
                    continue
                st = stats[m]
                st.seconds += seconds
                st.megapixels += mp
                st.images += 1
                st.peak_mib = max(st.peak_mib, peak)
                row["seconds"] = seconds
                values, errors = _image_metrics(out, inp, target, use_niqe)
                if segmenter is not None and sample.labels is not None:
                    try:
                        pred = segmenter.predict(out)[0].cpu()
                        cm = confusion_matrix(pred, sample.labels, n_classes, sub.void)
                        confusion[m] += cm
                        values["pixel_accuracy"] = float(cm.diagonal().sum()) / max(1, int(cm.sum()))
                        values["image_miou"] = iou_from_confusion(cm, sub.void)[0]
                        if index in picks:
                            label_thumbs[m] = thumbnail(_colour_labels(pred))
                    except Exception as err:
                        errors.append(f"segmentation: {err}")
                for k, v in values.items():
                    if k in per_method[m]:
                        per_method[m][k].append(v)
                row.update(values)
                if errors:
                    row["error"] = "; ".join(errors)
                    for e in errors:
                        results["failures"].append({"subset": sub.name, "image": sample.name, "method": m, "error": e})
                rows.append(row)
                if index in picks:
                    thumbs[m] = thumbnail(out)
                bar.update(1)
            if index in picks:
                extra: Image.Image | None = None
                if sample.target is not None:
                    extra = thumbnail(sample.target)
                elif sample.original is not None and sub.extra.get("exposure") != 1.0:
                    extra = thumbnail(sample.original)
                cells = [thumbnail(sample.image)] + [thumbs.get(m) for m in grid_methods]
                cells += [extra] if extra is not None or sample.labels is not None or sample.target is not None else []
                grid_rows.append((sample.name, cells))
                if sample.labels is not None and segmenter is not None:
                    first = label_thumbs.get("identity")
                    if first is None:
                        try:
                            first = thumbnail(_colour_labels(segmenter.predict(inp)[0]))
                        except Exception:
                            first = None
                    lab_cells = [first] + [label_thumbs.get(m) for m in grid_methods]
                    lab_cells.append(thumbnail(_colour_labels(sample.labels)))
                    grid_rows.append(("segmentation", lab_cells))

        # summarise the sub-set
        entry: dict[str, Any] = {
            "kind": sub.kind,
            "description": sub.description,
            "images": sub.count,
            "methods": {},
            **({"darkening": sub.extra} if sub.extra else {}),
        }
        for m in methods:
            summary = {
                k: (float(np.mean(v)) if v and not all(math.isnan(x) for x in v) else float("nan"))
                for k, v in per_method[m].items()
            }
            summary = {k: v for k, v in summary.items() if not math.isnan(v) or per_method[m][k]}
            summary["failed"] = failed[m]
            if sub.kind == "segmentation":
                miou, ious = iou_from_confusion(confusion[m], sub.void)
                summary["miou"] = miou
                summary["iou_per_class"] = ious
                summary["confusion"] = confusion[m].tolist()
            entry["methods"][m] = summary
        if sub.kind == "segmentation":
            n = n_classes - (1 if sub.void is not None else 0)
            entry["classes"] = list(CAMVID_CLASSES[:n]) if n == len(CAMVID_CLASSES) else [str(c) for c in range(n)]
        if grid_rows:
            columns = ["input", *grid_methods]
            if sub.kind == "paired":
                columns.append("reference")
            elif sub.kind == "segmentation":
                columns.append("undarkened / labels" if sub.extra.get("exposure", 1.0) != 1.0 else "labels")
            grid_name = f"grid_{re.sub(r'[^A-Za-z0-9_.-]+', '_', sub.name)}.png"
            title = f"{sub.name}: {sub.description}"
            save_grid(out_dir / grid_name, columns, grid_rows, title[:150])
            entry["grid"] = grid_name
        subsets_out = results["datasets"].setdefault(sub.dataset, {"subsets": {}})["subsets"]
        subsets_out[sub.name] = entry
        if sub.split_at is not None:
            subsets_out.update(_brightness_split(sub, [r for r in rows if r["subset"] == sub.name], methods))
    bar.close()

    # per-image CSVs
    columns = ["subset", "image", "method", "input_brightness", *_METRIC_KEYS, "pixel_accuracy", "image_miou"]
    columns += ["seconds", "megapixels"]
    for ds, rows in csv_rows.items():
        with (out_dir / f"{ds}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[*columns, "error"], extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    for m in methods:
        s = stats[m]
        results["methods"][m] = {
            "description": _describe_method(specs[m], reg),
            "seconds": s.seconds,
            "megapixels": s.megapixels,
            "seconds_per_megapixel": s.seconds / s.megapixels if s.megapixels else float("nan"),
            "peak_memory_mib": s.peak_mib if s.images else float("nan"),
            "images": s.images,
            "failures": s.failures,
        }
    results["meta"] = {
        "command": command
        or f"scl_lle.evaluation.runner.evaluate(methods={list(methods)!r}, datasets={list(datasets)!r}, "
        f"output={str(output)!r}, device={str(device)!r}, max_images={max_images!r})",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(dev),
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "versions": _versions(),
        "registry": str(reg["path"]),
        "memory_method": memory.method,
        "methods": list(methods),
        "datasets": list(datasets),
        "max_images": max_images,
        "notes": notes,
    }
    note = _bar_chart(out_dir / "metrics.png", results, methods)
    if note:
        notes.append(note)
    else:
        results["chart"] = "metrics.png"
    results["meta"]["wall_seconds"] = time.perf_counter() - start_wall
    _write_report(out_dir / "report.md", results, methods)
    (out_dir / "summary.md").write_text(summary_table(results), encoding="utf-8")
    safe = _json_safe(results)
    (out_dir / "results.json").write_text(json.dumps(safe, indent=1), encoding="utf-8")
    return results
