"""Evaluation data sets: the registry YAML, loading its sets one image at a time, and the dark/lit split.

The registry (default ``configs/datasets.yaml``) maps names to data sets of three kinds: ``noref`` (a folder of
images), ``paired`` (a list of low-light / reference pairs) and ``segmentation`` (a list of frames and label maps,
optionally darkened synthetically at several exposures, one :class:`Subset` per level). It also holds named
DCE-Net weights (``methods:``, read by :mod:`scl_lle.evaluation.methods`) and the ``segmenter``.

Images are ``(1, 3, H, W)`` float32 in [0, 1] on the CPU; label maps ``(H, W)`` int64.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..io.files import image_files
from ..io.image import read_image
from ..io.pixels import tensor_view, to_unit
from ..train.config import ConfigError, expand_path

__all__ = [
    "DEFAULT_REGISTRY",
    "RegistryError",
    "Sample",
    "Subset",
    "UnknownNameError",
    "brightness_split",
    "dataset_images",
    "list_datasets",
    "load_image",
    "load_registry",
    "load_registry_segmenter",
    "registry_path",
    "subsets_of",
]

DEFAULT_REGISTRY = Path(__file__).resolve().parents[3] / "configs" / "datasets.yaml"
"""The registry of a source checkout (``configs/datasets.yaml``); installed copies pass ``registry=``."""

_KINDS = ("noref", "paired", "segmentation")


class RegistryError(ConfigError):
    """The registry YAML is missing, malformed, or refers to something that is not there."""


class UnknownNameError(KeyError):
    """An unknown method or data set name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def registry_path(value: str, where: str, base: Path) -> Path:
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
        if not isinstance(spec, dict) or spec.get("kind") not in _KINDS:
            raise RegistryError(f"{path}: data set {name!r} needs kind: noref, paired or segmentation")
    return {"datasets": datasets, "methods": methods, "segmenter": data.get("segmenter"), "path": path.resolve()}


def list_datasets(registry: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the data sets in the registry YAML."""
    return list(load_registry(registry)["datasets"])


def dataset_images(
    name: str, registry: str | os.PathLike[str] | None = None, max_images: int | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """The input images of registry data set ``name``, one at a time: ``(sample name, (1, 3, H, W) in [0, 1])``.

    The images that :func:`~scl_lle.evaluation.runner.evaluate` feeds to the methods (low-light inputs of paired
    sets; for darkened segmentation sets, every darkening level in turn), on the CPU. ``max_images``: at most
    that many per set. Raises :class:`UnknownNameError` for a name the registry lacks.
    """
    reg = load_registry(registry)
    if name not in reg["datasets"]:
        raise UnknownNameError(f"unknown data set {name!r}; known: {', '.join(reg['datasets'])}")
    for subset in subsets_of(name, reg["datasets"][name], Path(reg["path"]).parent, max_images):
        for sample in subset.load():
            yield sample.name, sample.image


# ------------------------------------------------------------------------------------------------ loading


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file -> ``(1, 3, H, W)`` float32 in [0, 1] (grey repeated to RGB, alpha dropped)."""
    pixels = to_unit(tensor_view(read_image(path).pixels))  # (H, W) or (H, W, C)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None].expand(-1, -1, 3)
    # (H, W, 3) in memory, seen as (1, 3, H, W): the layout the metrics and methods have always been given
    return pixels[:, :, :3].contiguous().permute(2, 0, 1).unsqueeze(0)


def _load_labels(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("L") if im.mode not in ("L", "P", "I") else im, dtype=np.int64))


@dataclass
class Sample:
    """One evaluated image (all on the CPU)."""

    name: str
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    target: torch.Tensor | None = None  # paired reference, same shape
    labels: torch.Tensor | None = None  # (H, W) int64
    original: torch.Tensor | None = None  # undarkened frame (for the grid)


@dataclass
class Subset:
    """One evaluated set: a data set, or one darkness level of a darkened segmentation set."""

    dataset: str
    name: str
    kind: str
    description: str
    count: int
    load: Callable[[], Iterator[Sample]]
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


def subsets_of(name: str, spec: dict[str, Any], base: Path, max_images: int | None) -> list[Subset]:
    """The :class:`Subset` s of registry data set ``name`` (settings ``spec``; ``base``: the registry's folder),
    each with at most ``max_images`` images (the first, by name or list order)."""
    where = f"data set {name!r}"
    loader = {"noref": _noref, "paired": _paired, "segmentation": _segmentation}[spec["kind"]]
    return loader(name, spec, base, where, slice(max_images))


def _noref(name: str, spec: dict[str, Any], base: Path, where: str, first: slice) -> list[Subset]:
    folder = registry_path(spec.get("images", ""), where, base)
    if not folder.is_dir():
        raise RegistryError(f"{where}: image folder not found: {folder}")
    try:
        files = image_files(folder)[first]
    except ValueError:
        files = []
    if not files:
        raise RegistryError(f"{where}: no image files in {folder}")

    def load() -> Iterator[Sample]:
        for f in files:
            yield Sample(f.name, load_image(f))

    split = spec.get("split_by_input_brightness")
    split_at = float(split) if split is not None else None
    description = str(spec.get("description", ""))
    return [Subset(name, name, "noref", description, len(files), load, split_at=split_at)]


def _paired(name: str, spec: dict[str, Any], base: Path, where: str, first: slice) -> list[Subset]:
    root = registry_path(spec.get("root", "."), where, base)
    pairs = _read_list(registry_path(spec.get("pairs", ""), where, base), root, where)[first]

    def load() -> Iterator[Sample]:
        for low, high in pairs:
            x, y = load_image(low), load_image(high)
            h, w = min(x.shape[-2], y.shape[-2]), min(x.shape[-1], y.shape[-1])
            yield Sample(low.name, x[..., :h, :w].contiguous(), target=y[..., :h, :w].contiguous())

    return [Subset(name, name, "paired", str(spec.get("description", "")), len(pairs), load)]


def _segmentation(name: str, spec: dict[str, Any], base: Path, where: str, first: slice) -> list[Subset]:
    root = registry_path(spec.get("root", "."), where, base)
    pattern = spec.get("include", "*")
    frames = [
        (img, lab)
        for img, lab in _read_list(registry_path(spec.get("list", ""), where, base), root, where)
        if fnmatch.fnmatch(img.name, pattern)
    ][first]
    if not frames:
        raise RegistryError(f"{where}: no frames match include={pattern!r}")
    description, void = str(spec.get("description", "")), spec.get("void")
    if spec.get("darken"):
        return _darkened(name, spec["darken"], description, void, frames)

    def load() -> Iterator[Sample]:
        for img, lab in frames:
            yield Sample(img.name, load_image(img), labels=_load_labels(lab))

    return [Subset(name, name, "segmentation", description, len(frames), load, void)]


def _darkened(
    name: str, dark: dict[str, Any], description: str, void: int | None, frames: list[tuple[Path, Path]]
) -> list[Subset]:
    """One subset per exposure of ``dark`` (``exposures``, ``gamma``, ``seed``, ``noise``), quantised to 8 bits."""
    from ..train.synthesis import darken

    gamma, seed, noise = float(dark.get("gamma", 1.0)), int(dark.get("seed", 0)), dark.get("noise")
    noise_t = (float(noise[0]), float(noise[1])) if noise else None
    out = []
    for exposure in map(float, dark.get("exposures", [])):
        unchanged = exposure == 1.0 and gamma == 1.0 and noise_t is None

        def load(exposure: float = exposure, unchanged: bool = unchanged) -> Iterator[Sample]:
            for i, (img, lab) in enumerate(frames):
                original = dark_img = load_image(img)
                if not unchanged:
                    generator = torch.Generator().manual_seed(seed + i)
                    dark_img = darken(original, exposure, gamma, noise=noise_t, generator=generator)
                    dark_img = torch.round(dark_img * 255.0) / 255.0  # stored as an 8-bit image would be
                yield Sample(img.name, dark_img, labels=_load_labels(lab), original=original)

        if unchanged:
            desc = f"{description}; undarkened (reference)"
        else:
            desc = f"{description}; darkened: exposure {exposure:g}, gamma {gamma:g}"
            desc += f", noise (shot, read) = {noise_t}" if noise_t else ", no noise"
            desc += f", seed {seed}, 8-bit"
        info = {"exposure": exposure, "gamma": gamma, "noise": noise_t, "seed": seed}
        out.append(Subset(name, f"{name}@{exposure:g}", "segmentation", desc, len(frames), load, void, info))
    return out


# -------------------------------------------------------------------------------------------- dark / lit


def brightness_split(
    sub: Subset, rows: list[dict[str, Any]], methods: Sequence[str], keys: Sequence[str]
) -> dict[str, Any]:
    """Summaries of ``sub``'s dark inputs (``NAME-dark``: input brightness below ``sub.split_at``) and well-lit
    ones (``NAME-lit``), from its per-image result ``rows``: the mean of each metric of ``keys`` over the images
    where it is a number, and the mean absolute change of brightness (``brightness_change``), so that what a
    method does to photos that are already well lit is visible."""
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
            for key in keys:
                values = [r[key] for r in mine if key in r and not math.isnan(r[key])]
                if values:
                    summary[key] = float(np.mean(values))
            changes = [abs(r["brightness"] - r["input_brightness"]) for r in mine]
            if changes:
                summary["brightness_change"] = float(np.mean(changes))
            summary["failed"] = sum(1 for r in chosen if r["method"] == m and "error" in r)
            entry["methods"][m] = summary
        out[f"{sub.name}-{suffix}"] = entry
    return out


def load_registry_segmenter(reg: dict[str, Any], device: torch.device) -> Any:
    """The registry's ``segmenter`` (``{name, weights}``), loaded on ``device`` (a
    :class:`~scl_lle.models.segmenter.Segmenter`); needed by segmentation sets."""
    from ..models.segmenter import load_segmenter

    spec = reg.get("segmenter") or {}
    if "name" not in spec or "weights" not in spec:
        raise RegistryError(f"{reg['path']}: segmentation sets need 'segmenter: {{name: ..., weights: ...}}'")
    weights = registry_path(spec["weights"], "segmenter", Path(reg["path"]).parent)
    if not weights.is_file():
        raise RegistryError(f"segmenter weights not found: {weights}")
    return load_segmenter(spec["name"], weights, device=device)
