"""Image pools held on the training device: decoded once, then cropped, flipped and sampled there, in torch.

:class:`ImagePool` holds unlabelled images (real low-light photos, the contrastive positives and negatives);
:class:`LabelledPool` holds images with per-pixel labels, cropped and flipped identically. Images are kept as
``uint8`` ``(3, H, W)`` tensors (sizes may differ) and sampled as float32 crops ``(n, 3, S, S)`` in [0, 1]; every
random choice comes from a CPU ``torch.Generator`` given by the caller. :func:`load_rgb` and :func:`load_label`
decode the files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..io.files import image_files
from ..io.image import read_image
from ..io.pixels import from_unit, tensor_view, to_unit

__all__ = ["ImagePool", "LabelledPool", "load_label", "load_rgb"]

PathLike = str | os.PathLike[str]


def load_rgb(path: PathLike) -> torch.Tensor:
    """Decode an image file (EXIF orientation applied) to a ``(3, H, W)`` ``uint8`` CPU tensor.

    Grey is repeated to three channels, 16-bit is rounded to 8 bits, alpha is dropped.
    """
    pixels = tensor_view(read_image(path).pixels)
    if pixels.dtype != torch.uint8:  # to [0, 1] and back to 8 bits, rounded to nearest
        pixels = from_unit(to_unit(pixels), torch.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None].expand(-1, -1, 3)
    return pixels[:, :, :3].permute(2, 0, 1).contiguous()


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
