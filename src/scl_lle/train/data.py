"""The training data pipeline: a step's batch from labelled street scenes darkened on the fly, real low-light
images, and the unpaired pools of positives (normal light) and negatives (badly exposed) for the contrastive loss.

Design (measured: a CPU-side pipeline starved the GPU): every image is decoded ONCE, kept as a ``uint8``
``(3, H, W)`` tensor on the training device, and cropping, flipping and the darkening synthesis run there,
batched, in torch. The random choices of a step come from CPU ``torch.Generator`` s seeded from
``(seed, rank, step)`` (one stream per pool), so :meth:`TrainingBatches.batch` is a pure function of
``(seed, rank, step)``: resuming at step ``s`` reproduces the same batches without saved sampler state, and
different ranks draw different data. Random numbers needed on the device (sensor noise) come from a device
generator seeded from the CPU one.

Config schema (a dict, usually read from YAML)::

    labelled:                # required: normal-light images with labels, darkened on the fly
      layout: camvid         # camvid | cityscapes | folders
      root: ${SCL_LLE_SHARED}/data/seg_CamVid_SegNet_subset   # camvid / cityscapes
      split: train           # camvid / cityscapes
      images: null           # folders layout: image folder
      labels: null           # folders layout: label folder (paired with images by file stem)
      void_index: 11         # label for "unknown"; default 11 (camvid), 19 (cityscapes), 255 (folders)
      source_void: null      # label value in the files meaning void, mapped to void_index
                             # (default 255 for cityscapes, none otherwise)
    unlabelled: null         # optional: list of folders / files of real low-light images (no labels)
    unlabelled_per_batch: 0
    positives:               # folders / files of normal-light images (one pool)
      - ${SCL_LLE_SHARED}/data/train_exposure_SICE_ZeroDCEpp/positive_normal
    positives_per_batch: 2
    negatives:               # each entry is its own pool, sampled separately: every batch has both kinds
      - {path: ${SCL_LLE_SHARED}/data/train_exposure_SICE_ZeroDCEpp/negative_under, per_batch: 1}
      - {path: ${SCL_LLE_SHARED}/data/train_exposure_SICE_ZeroDCEpp/negative_over, per_batch: 1}
    crop_size: 256
    synthesis: {exposure: [0.03, 0.3], gamma: [1.0, 1.3], shot_noise: [0, 0], read_noise: [0, 0]}
    max_images: null         # optional cap per pool: load only the first N files (sorted), for smoke tests

``path`` of a negatives entry (and each entry of ``positives`` / ``unlabelled``) may be a folder (all image files
in it, by extension, sorted), an image file, or a list of them; a bare string is read as a one-entry list. A
negatives entry may also be a bare path (``per_batch`` 1). Paths may use environment variables (``${NAME}`` or
``$NAME``; an unset one is an error that names it); relative paths are relative to ``root`` given to
:func:`build_batches`, else to the working directory. Unknown keys are errors (they are usually typos).
A ``*_per_batch`` count left out is 1 when its pool is given, else 0 (a count of 0 skips loading the pool).
``synthesis`` fields are ``[lo, hi]`` ranges or single numbers (see
:class:`~scl_lle.train.synthesis.LowLightSynthesis`). Layouts: :mod:`scl_lle.train.datasets`; the pools that hold
the decoded images on the device: :mod:`scl_lle.train.pools`.

A batch holds ``batch_size`` synthetic low-light crops of labelled images followed by ``unlabelled_per_batch``
real low-light crops: ``B = batch_size + unlabelled_per_batch`` (see :class:`TrainingBatch`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.files import image_files
from .config import expand_path
from .datasets import DEFAULT_SOURCE_VOID, DEFAULT_VOID_INDEX, LAYOUTS, labelled_pairs
from .pools import ImagePool, LabelledPool
from .synthesis import LowLightSynthesis

__all__ = ["TrainingBatch", "TrainingBatches", "build_batches"]


@dataclass
class TrainingBatch:
    """One training step's data, all float32 in [0, 1] (labels int64) on the training device.

    Attributes:
        low: ``(B, 3, S, S)`` low-light inputs: ``batch_size`` synthetic, then the real unlabelled ones.
        clean: ``(B, 3, S, S)`` the normal-light sources of the synthetic lows; for real lows, equal to ``low``.
        labels: ``(B, S, S)`` int64 class indices; the void index where unknown (all of a real low).
        labelled: ``(B,)`` bool, True for the synthetic (labelled) items.
        positives: ``(P, 3, S, S)`` normal-light crops.
        negatives: ``(N, 3, S, S)`` badly exposed crops, the pools' crops in config order.
    """

    low: torch.Tensor
    clean: torch.Tensor
    labels: torch.Tensor
    labelled: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor


def _generator(*key: int) -> torch.Generator:
    """A CPU generator whose state is a hash of ``key`` (non-negative ints)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass
class TrainingBatches:
    """The sampler: :meth:`batch` ``(step)`` is a pure function of ``(seed, rank, step)``.

    Each component (labelled crops, synthesis, unlabelled, positives, each negatives pool) draws from its own
    CPU generator seeded from ``(seed, rank, step, component)``, so changing one count leaves the others alone.
    """

    labelled: LabelledPool
    synthesis: LowLightSynthesis
    batch_size: int
    crop_size: int
    seed: int
    rank: int = 0
    unlabelled: ImagePool | None = None
    unlabelled_per_batch: int = 0
    positives: ImagePool | None = None
    positives_per_batch: int = 0
    negatives: list[tuple[ImagePool, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("batch_size", "crop_size", "seed", "rank", "unlabelled_per_batch", "positives_per_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.batch_size < 1 or self.crop_size < 1:
            raise ValueError("batch_size and crop_size must be at least 1")
        if self.unlabelled_per_batch and self.unlabelled is None:
            raise ValueError("unlabelled_per_batch > 0 needs an unlabelled pool")
        if self.positives_per_batch and self.positives is None:
            raise ValueError("positives_per_batch > 0 needs a positives pool")

    @property
    def device(self) -> torch.device:
        """The training device (where the pools live)."""
        return self.labelled.device

    def batch(self, step: int) -> TrainingBatch:
        """The batch of ``step`` (>= 0), identical for the same ``(seed, rank, step)``."""
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        key = (self.seed, self.rank, step)
        size = self.crop_size
        clean, labels = self.labelled.sample(self.batch_size, size, _generator(*key, 0))
        low = self.synthesis(clean, _generator(*key, 1))
        if self.unlabelled is not None and self.unlabelled_per_batch:
            real = self.unlabelled.sample(self.unlabelled_per_batch, size, _generator(*key, 2))
            low, clean = torch.cat([low, real]), torch.cat([clean, real])
            shape = (real.shape[0], size, size)
            void = torch.full(shape, self.labelled.void_index, dtype=torch.int64, device=self.device)
            labels = torch.cat([labels, void])
        labelled = torch.arange(low.shape[0], device=self.device) < self.batch_size
        if self.positives is not None and self.positives_per_batch:
            positives = self.positives.sample(self.positives_per_batch, size, _generator(*key, 3))
        else:
            positives = torch.empty(0, 3, size, size, device=self.device)
        negatives = [
            pool.sample(count, size, _generator(*key, 4 + i)) for i, (pool, count) in enumerate(self.negatives)
        ]
        negatives_t = torch.cat(negatives) if negatives else torch.empty(0, 3, size, size, device=self.device)
        return TrainingBatch(low, clean, labels, labelled, positives, negatives_t)


def _paths(value: Any, *, root: Path | None, key: str) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        raise ValueError(f"{key} must be a path or a non-empty list of paths, got {value!r}")
    return [expand_path(v, root=root, key=f"{key}[{i}]") for i, v in enumerate(value)]


def _count(cfg: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = cfg.get(key, default)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


_TOP_KEYS = {
    "labelled",
    "unlabelled",
    "unlabelled_per_batch",
    "positives",
    "positives_per_batch",
    "negatives",
    "crop_size",
    "synthesis",
    "max_images",
}
_LABELLED_KEYS = {"layout", "root", "split", "images", "labels", "void_index", "source_void"}


def _max_images(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_images must be a positive integer or null, got {value!r}")
    return value


def _labelled(spec: Any, root: Path | None, max_images: int | None) -> tuple[list[tuple[Path, Path]], int, int | None]:
    """The ``labelled`` entry: its ``(image, label)`` pairs, void index and source void."""
    if not isinstance(spec, Mapping):
        raise ValueError("the data config needs a 'labelled' mapping (layout, root/split or images/labels)")
    if unknown := set(spec) - _LABELLED_KEYS:
        raise ValueError(f"unknown labelled keys: {', '.join(sorted(unknown))}")
    layout = spec.get("layout", "camvid")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown labelled layout {layout!r}; expected one of {', '.join(LAYOUTS)}")

    def opt_path(key: str) -> Path | None:
        value = spec.get(key)
        return None if value is None else expand_path(value, root=root, key=f"labelled.{key}")

    pairs = labelled_pairs(
        layout,
        root=opt_path("root"),
        split=spec.get("split", "train"),
        images=opt_path("images"),
        labels=opt_path("labels"),
    )
    void_index = spec.get("void_index", DEFAULT_VOID_INDEX[layout])
    source_void = spec.get("source_void", DEFAULT_SOURCE_VOID[layout])
    return (pairs[:max_images] if max_images is not None else pairs), void_index, source_void


def _negatives(entries: Any, files: Any) -> list[tuple[list[Path], int]]:
    """The ``negatives`` entries as (files, per batch) pools; entries with a count of 0 are left out."""
    if isinstance(entries, (str, os.PathLike, Mapping)):
        entries = [entries]
    pools: list[tuple[list[Path], int]] = []
    for i, entry in enumerate(entries):
        key = f"negatives[{i}]"
        if isinstance(entry, Mapping):
            if unknown := set(entry) - {"path", "per_batch"}:
                raise ValueError(f"unknown {key} keys: {', '.join(sorted(unknown))}")
            if "path" not in entry:
                raise ValueError(f"{key} needs a 'path'")
            paths, count = entry["path"], _count(entry, "per_batch", 1)
        else:
            paths, count = entry, 1
        if count:
            pools.append((files(paths, f"{key}.path"), count))
    return pools


def build_batches(
    cfg: Mapping[str, Any],
    *,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    root: Path | None = None,
) -> TrainingBatches:
    """Build the sampler from a data config (schema: module docstring), loading every pool onto ``device`` once.

    Images smaller than ``crop_size`` are scaled up at load time (short side = ``crop_size``).

    Raises:
        ValueError: bad config (unknown keys, bad counts, unset environment variables, unpaired files, ...).
        FileNotFoundError: a folder or file is missing.
    """
    if unknown := set(cfg) - _TOP_KEYS:
        raise ValueError(f"unknown data config keys: {', '.join(sorted(unknown))}")
    device = torch.device(device)
    crop = _count(cfg, "crop_size", 256)
    max_images = _max_images(cfg.get("max_images"))
    pairs, void_index, source_void = _labelled(cfg.get("labelled"), root, max_images)

    # Resolve and list every source first, so that config mistakes show before minutes of decoding.
    def files(value: Any, key: str) -> list[Path]:
        found = image_files(_paths(value, root=root, key=key))
        return found[:max_images] if max_images is not None else found

    counts: dict[str, int] = {}
    found: dict[str, list[Path] | None] = {}
    for name in ("unlabelled", "positives"):
        counts[name] = _count(cfg, f"{name}_per_batch", 1 if cfg.get(name) else 0)
        found[name] = files(cfg[name], name) if cfg.get(name) else None
    for name, count in counts.items():
        if count and found[name] is None:
            raise ValueError(f"{name}_per_batch is {count} but no {name} are given")
    negatives = _negatives(cfg.get("negatives") or [], files)
    synthesis = LowLightSynthesis.from_config(cfg.get("synthesis"))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    load = {"device": device, "min_side": crop}
    labelled = LabelledPool.from_pairs(pairs, void_index=void_index, source_void=source_void, **load)
    pools = {
        name: ImagePool.from_files(paths, **load) if paths and counts[name] else None for name, paths in found.items()
    }
    return TrainingBatches(
        labelled=labelled,
        synthesis=synthesis,
        batch_size=batch_size,
        crop_size=crop,
        seed=seed,
        rank=rank,
        unlabelled=pools["unlabelled"],
        unlabelled_per_batch=counts["unlabelled"],
        positives=pools["positives"],
        positives_per_batch=counts["positives"],
        negatives=[(ImagePool.from_files(paths, **load), count) for paths, count in negatives],
    )
