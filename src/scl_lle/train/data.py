"""The training data pipeline: labelled street scenes darkened on the fly, real low-light images, and the
unpaired pools of positives (normal light) and negatives (under- and over-exposed) for the contrastive loss.

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
``synthesis`` fields are ``[lo, hi]`` ranges or single numbers (see :class:`LowLightSynthesis`).

A batch holds ``batch_size`` synthetic low-light crops of labelled images followed by ``unlabelled_per_batch``
real low-light crops: ``B = batch_size + unlabelled_per_batch`` (see :class:`TrainingBatch`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.files import image_files, is_image_file
from ..io.image import read_image
from .config import expand_path

__all__ = [
    "LAYOUTS",
    "ImagePool",
    "LabelledPool",
    "LowLightSynthesis",
    "TrainingBatch",
    "TrainingBatches",
    "build_batches",
    "camvid_pairs",
    "cityscapes_pairs",
    "darken",
    "folder_pairs",
    "labelled_pairs",
    "load_label",
    "load_rgb",
    "poisson_gaussian_noise",
]

#: Layouts of labelled data sets understood by :func:`labelled_pairs`.
LAYOUTS = ("camvid", "cityscapes", "folders")

_GAMMA = 2.2
_DEFAULT_VOID = {"camvid": 11, "cityscapes": 19, "folders": 255}
_DEFAULT_SOURCE_VOID = {"camvid": None, "cityscapes": 255, "folders": None}
_CITYSCAPES_IMAGE = "_leftImg8bit.png"
_CITYSCAPES_LABEL = "_gtFine_labelTrainIds.png"

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------------------------------
# Listing files and labelled pairs


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} is not a folder: {path}")
    return path


def _unpaired_error(kind: str, names: Sequence[str], folder: Path) -> ValueError:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return ValueError(f"{len(names)} {kind} without a partner in {folder}: {shown}")


def camvid_pairs(root: PathLike, split: str = "train") -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of a SegNet-style CamVid folder: ``root/{split}/*.png`` with
    ``root/{split}annot/<same name>`` (labels 0..10, 11 = void), sorted by name.

    Raises:
        FileNotFoundError: ``root/{split}`` or ``root/{split}annot`` is missing.
        ValueError: an image without a label or a label without an image, or no images at all.
    """
    root = Path(root)
    image_dir = _require_dir(root / split, f"CamVid image folder for split {split!r}")
    label_dir = _require_dir(root / f"{split}annot", f"CamVid label folder for split {split!r}")
    images = {p.name: p for p in image_dir.iterdir() if is_image_file(p)}
    labels = {p.name: p for p in label_dir.iterdir() if is_image_file(p)}
    if not images:
        raise ValueError(f"no images in {image_dir}")
    if missing := sorted(set(images) - set(labels)):
        raise _unpaired_error("images", missing, image_dir)
    if extra := sorted(set(labels) - set(images)):
        raise _unpaired_error("labels", extra, label_dir)
    return [(images[name], labels[name]) for name in sorted(images)]


def cityscapes_pairs(root: PathLike, split: str = "train") -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of Cityscapes: ``root/leftImg8bit/{split}/<city>/*_leftImg8bit.png`` with
    ``root/gtFine/{split}/<city>/*_gtFine_labelTrainIds.png`` (trainIds 0..18, 255 = void), sorted.

    Raises:
        FileNotFoundError: the split folders are missing.
        ValueError: an image without its ``labelTrainIds`` file (or the reverse), or no images at all.
    """
    root = Path(root)
    image_dir = _require_dir(root / "leftImg8bit" / split, f"Cityscapes image folder for split {split!r}")
    label_dir = _require_dir(root / "gtFine" / split, f"Cityscapes label folder for split {split!r}")
    images = {p.relative_to(image_dir).as_posix()[: -len(_CITYSCAPES_IMAGE)]: p for p in image_dir.glob("*/*")}
    images = {k: p for k, p in images.items() if p.name.endswith(_CITYSCAPES_IMAGE)}
    labels = {p.relative_to(label_dir).as_posix()[: -len(_CITYSCAPES_LABEL)]: p for p in label_dir.glob("*/*")}
    labels = {k: p for k, p in labels.items() if p.name.endswith(_CITYSCAPES_LABEL)}
    if not images:
        raise ValueError(f"no *{_CITYSCAPES_IMAGE} images in {image_dir}/<city>/")
    if missing := sorted(set(images) - set(labels)):
        raise _unpaired_error(f"images (no *{_CITYSCAPES_LABEL})", missing, image_dir)
    if extra := sorted(set(labels) - set(images)):
        raise _unpaired_error("labels", extra, label_dir)
    return [(images[key], labels[key]) for key in sorted(images)]


def folder_pairs(images: PathLike, labels: PathLike) -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of two folders, paired by file stem (extensions may differ), sorted.

    Raises:
        FileNotFoundError: a folder is missing.
        ValueError: two files with the same stem in one folder, unpaired files, or no images.
    """
    folders = {
        "images": _require_dir(Path(images), "image folder"),
        "labels": _require_dir(Path(labels), "label folder"),
    }
    by_stem: dict[str, dict[str, Path]] = {}
    for kind, folder in folders.items():
        stems: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
            if path.stem in stems:
                raise ValueError(
                    f"two {kind} with the stem {path.stem!r} in {folder}: {stems[path.stem].name}, {path.name}"
                )
            stems[path.stem] = path
        by_stem[kind] = stems
    if not by_stem["images"]:
        raise ValueError(f"no images in {folders['images']}")
    if missing := sorted(set(by_stem["images"]) - set(by_stem["labels"])):
        raise _unpaired_error("images", [by_stem["images"][s].name for s in missing], folders["images"])
    if extra := sorted(set(by_stem["labels"]) - set(by_stem["images"])):
        raise _unpaired_error("labels", [by_stem["labels"][s].name for s in extra], folders["labels"])
    return [(by_stem["images"][s], by_stem["labels"][s]) for s in sorted(by_stem["images"])]


def labelled_pairs(
    layout: str,
    *,
    root: PathLike | None = None,
    split: str = "train",
    images: PathLike | None = None,
    labels: PathLike | None = None,
) -> list[tuple[Path, Path]]:
    """Dispatch to :func:`camvid_pairs`, :func:`cityscapes_pairs` (both need ``root``, ``split``) or
    :func:`folder_pairs` (needs ``images``, ``labels``)."""
    if layout in ("camvid", "cityscapes"):
        if root is None:
            raise ValueError(f"layout {layout!r} needs 'root'")
        return (camvid_pairs if layout == "camvid" else cityscapes_pairs)(root, split)
    if layout == "folders":
        if images is None or labels is None:
            raise ValueError("layout 'folders' needs both 'images' and 'labels' folders")
        return folder_pairs(images, labels)
    raise ValueError(f"unknown labelled layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------------------------------------------------------
# Decoding


def load_rgb(path: PathLike) -> torch.Tensor:
    """Decode an image file (EXIF orientation applied) to a ``(3, H, W)`` ``uint8`` CPU tensor.

    Grey is repeated to three channels, 16-bit is rounded to 8 bits, alpha is dropped.
    """
    pixels = read_image(path).pixels
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return torch.tensor(pixels[:, :, :3]).permute(2, 0, 1).contiguous()


def load_label(path: PathLike, *, void_index: int, source_void: int | None = None) -> torch.Tensor:
    """Decode a single-channel label map (class index per pixel, as stored: no EXIF, no palette lookup) to an
    ``(H, W)`` CPU tensor (``uint8`` when every value fits, else ``int32``); ``source_void`` -> ``void_index``.

    Raises:
        ValueError: the file is not a single-channel (L, P, I, I;16) image.
    """
    path = Path(path)
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(f"label map {path} has mode {image.mode}: expected single-channel class indices")
        values = np.asarray(image).astype(np.int32)
    if source_void is not None and source_void != void_index:
        values[values == source_void] = void_index
    if values.min(initial=0) >= 0 and values.max(initial=0) <= 255:
        return torch.from_numpy(values.astype(np.uint8))
    return torch.from_numpy(values)


def _resize(image: torch.Tensor, size: tuple[int, int], *, labels: bool = False) -> torch.Tensor:
    """Resize a ``(C, H, W)`` or ``(H, W)`` integer tensor: bilinear for images, nearest-exact for labels."""
    dtype = image.dtype
    x = image.float()
    x = x[None] if x.ndim == 3 else x[None, None]
    if labels:
        out = F.interpolate(x, size=size, mode="nearest-exact")
    else:
        out = F.interpolate(x, size=size, mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    out = out[0] if image.ndim == 3 else out[0, 0]
    return out.to(dtype)


def _upsized(height: int, width: int, min_side: int) -> tuple[int, int]:
    """The size after scaling up so that the short side is ``min_side`` (unchanged when already large enough)."""
    if min(height, width) >= min_side:
        return height, width
    scale = min_side / min(height, width)
    return max(min_side, round(height * scale)), max(min_side, round(width * scale))


def _load_all(function: Any, items: Sequence[Any]) -> list[Any]:
    if len(items) < 4:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
        return list(pool.map(function, items))


# ---------------------------------------------------------------------------------------------------------------
# Pools


@dataclass(frozen=True)
class _Draw:
    index: list[int]
    top: list[int]
    left: list[int]
    flip: list[bool]


def _draw(sizes: Sequence[tuple[int, int]], n: int, crop: int, generator: torch.Generator) -> _Draw:
    """Random image choice (without replacement when ``n <= len(sizes)``), crop corner and flip for ``n`` crops.

    ``sizes`` are the ``(H, W)`` after any on-the-fly upsizing. Always consumes the same random numbers for a
    given ``(len(sizes), n)``, whatever the sizes.
    """
    count = len(sizes)
    if n <= count:
        index = torch.randperm(count, generator=generator)[:n]
    else:
        index = torch.randint(count, (n,), generator=generator)
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64).tolist()
    flip = (torch.rand(n, generator=generator) < 0.5).tolist()
    index_list = index.tolist()
    top, left = [], []
    for i, (u, v) in zip(index_list, corner, strict=True):
        height, width = sizes[i]
        top.append(min(int(u * (height - crop + 1)), height - crop))
        left.append(min(int(v * (width - crop + 1)), width - crop))
    return _Draw(index_list, top, left, flip)


class _CropPool:
    """Images held once as ``uint8`` ``(3, H, W)`` tensors on one device (sizes may differ), for random crops."""

    def __init__(self, images: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> None:
        if not images:
            raise ValueError("an image pool needs at least one image")
        for image in images:
            if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
                raise ValueError(f"pool images must be (3, H, W) uint8 tensors, got {tuple(image.shape)} {image.dtype}")
        self.images = list(images)
        self.names = list(names) if names is not None else [str(i) for i in range(len(images))]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def device(self) -> torch.device:
        """The device the images are kept on."""
        return self.images[0].device

    def _draw(self, n: int, crop: int, generator: torch.Generator) -> _Draw:
        return _draw([_upsized(im.shape[1], im.shape[2], crop) for im in self.images], n, crop, generator)

    @staticmethod
    def _crop(image: torch.Tensor, draw: _Draw, k: int, crop: int, *, labels: bool = False) -> torch.Tensor:
        size = _upsized(image.shape[-2], image.shape[-1], crop)
        if size != tuple(image.shape[-2:]):  # smaller than the crop and not upsized at load time
            image = _resize(image, size, labels=labels)
        top, left = draw.top[k], draw.left[k]
        out = image[..., top : top + crop, left : left + crop]
        return out.flip(-1) if draw.flip[k] else out


class ImagePool(_CropPool):
    """Unlabelled images held once as ``uint8`` ``(3, H, W)`` tensors on one device (sizes may differ).

    Images whose short side is below the crop size are scaled up (bilinear) so that it equals the crop size:
    at load time with ``min_side`` (recommended: done once), else at every :meth:`sample`, on the device.
    """

    @classmethod
    def from_files(
        cls,
        sources: PathLike | Iterable[PathLike],
        *,
        device: torch.device | str = "cpu",
        min_side: int | None = None,
        max_images: int | None = None,
    ) -> ImagePool:
        """Decode image files (folders: all image files in them, sorted) once and move them to ``device``.

        Args:
            sources: files and/or folders, in order.
            device: where the ``uint8`` images are kept.
            min_side: scale images up (bilinear) so that their short side is at least this.
            max_images: keep only the first ``max_images`` files of the (ordered) list.
        """
        files = image_files(sources)
        if max_images is not None:
            files = files[:max_images]

        def load(path: Path) -> torch.Tensor:
            image = load_rgb(path)
            if min_side is not None:
                size = _upsized(image.shape[1], image.shape[2], min_side)
                if size != tuple(image.shape[1:]):
                    image = _resize(image, size)
            return image.to(device)

        return cls(_load_all(load, files), [str(p) for p in files])

    def sample(self, n: int, crop_size: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random crops, ``(n, 3, crop_size, crop_size)`` float32 in [0, 1] on the pool's device.

        Random image (without replacement when ``n <= len(self)``), random crop position, horizontal flip with
        probability 1/2; all choices from ``generator`` (a CPU generator).
        """
        if n == 0:
            return torch.empty(0, 3, crop_size, crop_size, device=self.device)
        draw = self._draw(n, crop_size, generator)
        crops = [self._crop(self.images[i], draw, k, crop_size) for k, i in enumerate(draw.index)]
        return torch.stack(crops).float().div_(255.0)


class LabelledPool(_CropPool):
    """Images with per-pixel labels held once on one device; crops and flips apply identically to both.

    Labels are kept as ``(H, W)`` ``uint8`` (or ``int32``) tensors beside their images and are only ever cropped,
    flipped or resized with nearest-exact sampling (never interpolated). Images smaller than the crop are scaled
    up as in :class:`ImagePool` (image bilinear, label nearest-exact, same geometry).
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        names: Sequence[str] | None = None,
        *,
        void_index: int = 255,
    ) -> None:
        super().__init__(images, names)
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} label maps")
        for name, image, label in zip(self.names, images, labels, strict=True):
            if tuple(label.shape) != tuple(image.shape[1:]):
                raise ValueError(f"label map {tuple(label.shape)} does not match image {tuple(image.shape)}: {name}")
        self.labels = list(labels)
        self.void_index = void_index

    @classmethod
    def from_pairs(
        cls,
        pairs: Sequence[tuple[PathLike, PathLike]],
        *,
        device: torch.device | str = "cpu",
        void_index: int,
        source_void: int | None = None,
        min_side: int | None = None,
        max_images: int | None = None,
    ) -> LabelledPool:
        """Decode ``(image, label)`` file pairs once and move them to ``device``.

        Args:
            pairs: from :func:`labelled_pairs` and friends.
            void_index: the label meaning "unknown"; ``source_void`` values in the files are mapped to it.
            min_side: scale up so the short side is at least this (image bilinear, label nearest-exact).
            max_images: keep only the first ``max_images`` pairs.

        Raises:
            ValueError: an image and its label differ in size (names both files).
        """
        pairs = list(pairs)[:max_images] if max_images is not None else list(pairs)
        if not pairs:
            raise ValueError("no (image, label) pairs to load")

        def load(pair: tuple[PathLike, PathLike]) -> tuple[torch.Tensor, torch.Tensor]:
            image = load_rgb(pair[0])
            label = load_label(pair[1], void_index=void_index, source_void=source_void)
            if tuple(label.shape) != tuple(image.shape[1:]):
                raise ValueError(
                    f"size mismatch: image {pair[0]} is {image.shape[2]}x{image.shape[1]} but label {pair[1]} is "
                    f"{label.shape[1]}x{label.shape[0]}"
                )
            if min_side is not None:
                size = _upsized(image.shape[1], image.shape[2], min_side)
                if size != tuple(image.shape[1:]):
                    image, label = _resize(image, size), _resize(label, size, labels=True)
            return image.to(device), label.to(device)

        loaded = _load_all(load, pairs)
        images, labels = [im for im, _ in loaded], [lb for _, lb in loaded]
        return cls(images, labels, [str(p[0]) for p in pairs], void_index=void_index)

    def sample(self, n: int, crop_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` random aligned crops: images ``(n, 3, S, S)`` float32 in [0, 1] and labels ``(n, S, S)`` int64,
        drawn as in :meth:`ImagePool.sample`."""
        if n == 0:
            return (
                torch.empty(0, 3, crop_size, crop_size, device=self.device),
                torch.empty(0, crop_size, crop_size, dtype=torch.int64, device=self.device),
            )
        draw = self._draw(n, crop_size, generator)
        images = [self._crop(self.images[i], draw, k, crop_size) for k, i in enumerate(draw.index)]
        labels = [self._crop(self.labels[i], draw, k, crop_size, labels=True) for k, i in enumerate(draw.index)]
        return torch.stack(images).float().div_(255.0), torch.stack(labels).long()


# ---------------------------------------------------------------------------------------------------------------
# Low-light synthesis


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` itself when it lives on ``device``, else a ``device`` generator seeded from it."""
    if generator is None:
        return None
    if generator.device.type == device.type and (
        device.type == "cpu" or generator.device.index in (None, device.index)
    ):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)


def _param(value: float | torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor | float, bool, bool]:
    """A per-image parameter as a float or a ``(B, 1, 1, 1)`` tensor on the images' device, whether any value
    is nonzero, and whether any differs from 1 (both checked where the value lives, normally the CPU)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)
        nonzero, non_one = bool((flat != 0).any()), bool((flat != 1).any())
        if value.numel() == 1:
            return float(flat[0]), nonzero, non_one
        if images.ndim != 4 or value.numel() != images.shape[0]:
            raise ValueError(f"per-image parameter of {value.numel()} values for images {tuple(images.shape)}")
        return value.to(device=images.device, dtype=images.dtype).reshape(-1, 1, 1, 1), nonzero, non_one
    return float(value), value != 0, value != 1


def poisson_gaussian_noise(
    linear: torch.Tensor,
    shot: float | torch.Tensor,
    read: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Heteroscedastic sensor noise on linear intensities: ``z = a * Poisson(x / a) + N(0, b^2)``.

    ``a`` = ``shot`` (the gain: one photon count is ``a`` in linear units, so ``Var = a * x + b^2``; 0 = no shot
    noise), ``b`` = ``read`` (read-noise std; 0 = none). ``shot``/``read`` are floats or per-image ``(B,)``
    tensors. Not clamped. ``generator`` may live on another device (a device generator is derived from it).
    """
    a, shot_on, _ = _param(shot, linear)
    b, read_on, _ = _param(read, linear)
    generator = _device_generator(generator, linear.device)
    out = linear
    if shot_on:
        if isinstance(a, torch.Tensor):
            safe = torch.where(a > 0, a, torch.ones_like(a))
            counts = torch.poisson(linear.clamp(min=0) / safe, generator=generator)
            out = torch.where(a > 0, counts * safe, linear)
        else:
            out = torch.poisson(linear.clamp(min=0) / a, generator=generator) * a
    if read_on:
        noise = torch.randn(linear.shape, generator=generator, device=linear.device, dtype=linear.dtype)
        out = out + noise * b
    return out


def darken(
    images: torch.Tensor,
    exposure: float | torch.Tensor,
    gamma: float | torch.Tensor = 1.0,
    noise: tuple[float | torch.Tensor, float | torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Darken normal-light sRGB-like images with fixed (or per-image) settings; the model of
    :class:`LowLightSynthesis`:

    ``low = clamp(clamp(k * x^2.2 + n, 0, 1)^(g / 2.2), 0, 1)`` with ``k`` = ``exposure``, ``g`` = ``gamma``,
    ``n`` = Poisson-Gaussian noise (``noise = (shot, read)``, see :func:`poisson_gaussian_noise`; ``None``: off).
    Without noise and with ``g = 1`` the result is exactly ``k^(1/2.2) * x`` (e.g. ``k = 0.1`` -> x 0.351).

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` float in [0, 1], any device.
        exposure: linear exposure factor ``k`` (> 0), float or ``(B,)``.
        gamma: extra gamma ``g`` (> 0; > 1 darkens mid-tones further), float or ``(B,)``.
        noise: ``(shot, read)`` floats or ``(B,)`` tensors, or ``None``.
        generator: for the noise (CPU or device; ``None``: torch's global generator).

    Returns:
        Same shape, float in [0, 1].
    """
    k, _, _ = _param(exposure, images)
    g, _, gamma_on = _param(gamma, images)
    x = images.clamp(0, 1)
    if noise is None:  # (min(k x^2.2, 1))^(g/2.2) = min(k^(g/2.2) x^g, 1): one power instead of three
        scale = k ** (g / _GAMMA) if gamma_on else k ** (1.0 / _GAMMA)
        out = (x.pow(g) if gamma_on else x) * scale
    else:
        linear = poisson_gaussian_noise(x.pow(_GAMMA) * k, noise[0], noise[1], generator)
        out = linear.clamp_(0, 1).pow(g / _GAMMA if gamma_on else 1.0 / _GAMMA)
    return out.clamp_(0, 1)


def _range(name: str, value: Any, *, positive: bool) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"synthesis {name} must be a number or a [lo, hi] pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (lo <= 0 if positive else lo < 0):
        bound = "0 < lo <= hi" if positive else "0 <= lo <= hi"
        raise ValueError(f"synthesis {name} must satisfy {bound}, got [{lo}, {hi}]")
    return lo, hi


@dataclass
class LowLightSynthesis:
    """Synthetic low light from normal-light images, batched on the images' device.

    Model, per image (random parameters drawn independently per image from the generator):

    1. linearise: ``L = x ** 2.2`` (a plain 2.2 gamma stands in for the sRGB curve);
    2. expose: ``L = k * L`` with ``k`` log-uniform in ``exposure`` (default [0.03, 0.3], i.e. -5 to -1.7 EV);
    3. sensor noise in the linear domain (optional): ``L = a * Poisson(L / a) + N(0, b^2)`` with the gain ``a``
       uniform in ``shot_noise`` and the read-noise std ``b`` uniform in ``read_noise`` (``[0, 0]`` = off),
       then clamp to [0, 1];
    4. back to sRGB-like: ``y = L ** (1 / 2.2)``, then an extra gamma ``y = y ** g`` with ``g`` uniform in
       ``gamma`` (default [1.0, 1.3]); clamp to [0, 1].

    Without noise, ``y = (k^(1/2.2) * x) ** g``: mean brightness falls by about ``k^(1/2.2)`` (0.20 .. 0.58 for
    the default exposures). Fixed settings (e.g. the evaluation's darkened CamVid): :func:`darken`.
    """

    exposure: tuple[float, float] = (0.03, 0.3)
    gamma: tuple[float, float] = (1.0, 1.3)
    shot_noise: tuple[float, float] = (0.0, 0.0)
    read_noise: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.exposure = _range("exposure", self.exposure, positive=True)
        self.gamma = _range("gamma", self.gamma, positive=True)
        self.shot_noise = _range("shot_noise", self.shot_noise, positive=False)
        self.read_noise = _range("read_noise", self.read_noise, positive=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> LowLightSynthesis:
        """From a ``synthesis:`` config mapping (keys exposure, gamma, shot_noise, read_noise; all optional)."""
        cfg = dict(cfg or {})
        if unknown := set(cfg) - {"exposure", "gamma", "shot_noise", "read_noise"}:
            raise ValueError(f"unknown synthesis keys: {', '.join(sorted(unknown))}")
        return cls(**cfg)

    @property
    def noisy(self) -> bool:
        """Whether any noise is added."""
        return self.shot_noise[1] > 0 or self.read_noise[1] > 0

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` images: ``(n,)`` float32 tensors on the generator's device."""
        u = torch.rand(4, n, generator=generator, dtype=torch.float64)
        (e_lo, e_hi), (g_lo, g_hi) = self.exposure, self.gamma
        (s_lo, s_hi), (r_lo, r_hi) = self.shot_noise, self.read_noise
        return {
            "exposure": torch.exp(math.log(e_lo) + u[0] * (math.log(e_hi) - math.log(e_lo))).float(),
            "gamma": (g_lo + u[1] * (g_hi - g_lo)).float(),
            "shot_noise": (s_lo + u[2] * (s_hi - s_lo)).float(),
            "read_noise": (r_lo + u[3] * (r_hi - r_lo)).float(),
        }

    def __call__(self, images: torch.Tensor, generator: torch.Generator | int) -> torch.Tensor:
        """Darken ``(B, 3, H, W)`` float images in [0, 1] (any device) with parameters drawn from ``generator``
        (a CPU ``torch.Generator``, or an int seed); returns the same shape in [0, 1] on the same device."""
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        if images.ndim != 4:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        p = self.draw(images.shape[0], generator)
        noise = (p["shot_noise"], p["read_noise"]) if self.noisy else None
        return darken(images, p["exposure"], p["gamma"], noise=noise, generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# Batches


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


# ---------------------------------------------------------------------------------------------------------------
# Config


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
    max_images = cfg.get("max_images")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive integer or null, got {max_images!r}")
    spec = cfg.get("labelled")
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
    void_index = spec.get("void_index", _DEFAULT_VOID[layout])
    source_void = spec.get("source_void", _DEFAULT_SOURCE_VOID[layout])
    if max_images is not None:
        pairs = pairs[:max_images]

    # Resolve and list every source first, so that config mistakes show before minutes of decoding.
    def files(value: Any, key: str) -> list[Path]:
        found = image_files(_paths(value, root=root, key=key))
        return found[:max_images] if max_images is not None else found

    unlabelled_per_batch = _count(cfg, "unlabelled_per_batch", 1 if cfg.get("unlabelled") else 0)
    unlabelled_files = files(cfg["unlabelled"], "unlabelled") if cfg.get("unlabelled") else None
    positives_per_batch = _count(cfg, "positives_per_batch", 1 if cfg.get("positives") else 0)
    positives_files = files(cfg["positives"], "positives") if cfg.get("positives") else None
    for name, count, found in [
        ("unlabelled", unlabelled_per_batch, unlabelled_files),
        ("positives", positives_per_batch, positives_files),
    ]:
        if count and found is None:
            raise ValueError(f"{name}_per_batch is {count} but no {name} are given")

    negatives_cfg = cfg.get("negatives") or []
    if isinstance(negatives_cfg, (str, os.PathLike, Mapping)):
        negatives_cfg = [negatives_cfg]
    negatives_files: list[tuple[list[Path], int]] = []
    for i, entry in enumerate(negatives_cfg):
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
            negatives_files.append((files(paths, f"{key}.path"), count))
    synthesis = LowLightSynthesis.from_config(cfg.get("synthesis"))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    load = {"device": device, "min_side": crop}
    labelled = LabelledPool.from_pairs(pairs, void_index=void_index, source_void=source_void, **load)
    unlabelled = ImagePool.from_files(unlabelled_files, **load) if unlabelled_files and unlabelled_per_batch else None
    positives = ImagePool.from_files(positives_files, **load) if positives_files and positives_per_batch else None
    negatives = [(ImagePool.from_files(found, **load), count) for found, count in negatives_files]

    return TrainingBatches(
        labelled=labelled,
        synthesis=synthesis,
        batch_size=batch_size,
        crop_size=crop,
        seed=seed,
        rank=rank,
        unlabelled=unlabelled,
        unlabelled_per_batch=unlabelled_per_batch,
        positives=positives,
        positives_per_batch=positives_per_batch,
        negatives=negatives,
    )
