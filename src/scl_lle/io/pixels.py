"""Pixels in and out of the engine, a tile at a time: the one place where pixel values become [0, 1] floats.

The engine never holds a whole image as floats: it reads tiles from a :class:`TileReader` (over a float tensor
``(B, 3, H, W)`` or a numpy picture ``(H, W)`` / ``(H, W, 1)`` / ``(H, W, 3)`` of uint8, uint16 or float pixels),
converts each to float in [0, 1] on the compute device, and hands results to a :class:`TileWriter`, which
converts them back into an output of the input's kind, dtype and shape. So the memory a picture costs beyond its
own pixels (and those of the result) is bounded by the tile size, not by the picture's size.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..core.colour import luminance

__all__ = ["TileReader", "TileWriter", "from_unit", "peak_value", "tensor_view", "to_unit"]


def peak_value(dtype: np.dtype | torch.dtype) -> float | None:
    """The value that stands for 1.0 in integer pixels of ``dtype`` (255, 65535), ``None`` for floats."""
    if dtype in (np.uint8, torch.uint8):
        return 255.0
    if dtype in (np.uint16, torch.uint16):
        return 65535.0
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return None
    if not isinstance(dtype, torch.dtype) and np.issubdtype(dtype, np.floating):
        return None
    raise TypeError(f"unsupported pixel type {dtype}: use uint8, uint16 or float in [0, 1]")


def to_unit(
    pixels: torch.Tensor, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Integer or float pixels (any shape) -> ``dtype`` in [0, 1] on ``device`` (floats clipped, NaN -> 0)."""
    peak = peak_value(pixels.dtype)
    if pixels.dtype == torch.uint16:  # no uint16 arithmetic (or copies) on every device
        pixels = pixels.to(torch.int32)
    pixels = pixels.to(device or pixels.device)
    if peak is None:
        return torch.nan_to_num(pixels.to(dtype), nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    return pixels.to(dtype).div_(peak)


def from_unit(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floats in [0, 1] (any shape) -> pixels of ``dtype``: integers rounded to nearest, floats cast."""
    peak = peak_value(dtype)
    if peak is None:
        return values.to(dtype)
    rounded = values.float().mul(peak).round_().clamp_(0.0, peak)
    return rounded.to(torch.int32).to(dtype) if dtype == torch.uint16 else rounded.to(dtype)


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor sharing its memory (uint16 included, which ``torch.from_numpy`` refuses)."""
    with warnings.catch_warnings():  # a read-only array (a decoded picture) is only ever read through the view
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        if array.dtype == np.uint16:
            return torch.from_numpy(array.view(np.int16)).view(torch.uint16)
        return torch.from_numpy(array)


def _torch_view(pixels: np.ndarray) -> torch.Tensor:
    """A numpy picture ``(H, W)`` / ``(H, W, C)`` as a ``(1, C, H, W)`` tensor view (no copy)."""
    array = pixels if pixels.ndim == 3 else pixels[..., None]
    return tensor_view(array).permute(2, 0, 1).unsqueeze(0)


class TileReader:
    """Float tiles ``(B, 3, h, w)`` in [0, 1] on ``device`` and in ``dtype`` from a tensor or a numpy picture.

    ``source``: a float tensor ``(B, 3, H, W)`` in [0, 1], or a numpy array ``(H, W)``, ``(H, W, 1)`` or
    ``(H, W, 3)`` (grey pictures are read as three equal channels).
    """

    def __init__(self, source: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        if isinstance(source, np.ndarray):
            if not (source.ndim == 2 or (source.ndim == 3 and source.shape[2] in (1, 3))):
                raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3) pixels, got shape {source.shape}")
            peak_value(source.dtype)  # refuse unsupported types now
            source = _torch_view(source)
        elif source.ndim != 4 or source.shape[1] != 3:
            raise ValueError(f"expected a tensor (B, 3, H, W), got shape {tuple(source.shape)}")
        self.source = source
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch, _, self.height, self.width = source.shape

    def read(self, top: int, left: int, bottom: int, right: int) -> torch.Tensor:
        """Pixels ``[top:bottom, left:right]`` as ``(B, 3, bottom - top, right - left)`` in [0, 1]."""
        return self._unit(self.source[..., top:bottom, left:right])

    def strided(self, step: int) -> torch.Tensor:
        """Every ``step``-th pixel in each direction (sampled, not averaged): ``(B, 3, ceil(H/step), ceil(W/step))``."""
        return self._unit(self.source[..., ::step, ::step])

    def downsample(self, scale: int, rows: int | None = None) -> torch.Tensor:
        """Area average over ``scale`` x ``scale`` cells (as :func:`~scl_lle.models.dcenet.downsample` gives for
        the whole image) -> ``(B, 3, ceil(H/scale), ceil(W/scale))``, computed ``rows`` input rows at a time (``None``:
        about a quarter of a million pixels' worth, a few MB of floats)."""
        if scale == 1:
            return self.read(0, 0, self.height, self.width)
        height, width = -(-self.height // scale), -(-self.width // scale)
        # Averaging over a rectangle = averaging its rows' averages: shrink the width chunk by chunk (exact
        # adaptive-pool bins along the width), then the height of the much smaller result.
        narrow = torch.empty((self.batch, 3, self.height, width), dtype=self.dtype, device=self.device)
        rows = rows or max(1, 2**18 // self.width)
        for top in range(0, self.height, rows):
            bottom = min(top + rows, self.height)
            chunk = self.read(top, 0, bottom, self.width)
            narrow[..., top:bottom, :] = _shrink(chunk, (bottom - top, width))
        return _shrink(narrow, (height, width))

    def _unit(self, pixels: torch.Tensor) -> torch.Tensor:
        unit = to_unit(pixels, self.dtype, self.device)
        return unit.expand(-1, 3, -1, -1) if unit.shape[1] == 1 else unit


def _shrink(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling to ``size``; a plain (about twice as fast) average pooling where the sizes divide."""
    (height, width), (out_height, out_width) = image.shape[-2:], size
    if height % out_height == 0 and width % out_width == 0:
        return F.avg_pool2d(image, (height // out_height, width // out_width))
    return F.adaptive_avg_pool2d(image, size)


class TileWriter:
    """Collects result tiles ``(B, 3, h, w)`` in [0, 1] into an output of the source's kind, shape and dtype.

    Tensors: same shape, dtype and device as the source. Numpy pictures: same shape and dtype; grey pictures get
    the tiles' BT.601 luma.
    """

    def __init__(self, source: torch.Tensor | np.ndarray) -> None:
        self.grey = isinstance(source, np.ndarray) and (source.ndim == 2 or source.shape[2] == 1)
        self.result: torch.Tensor | np.ndarray
        if isinstance(source, np.ndarray):
            self.result = np.empty(source.shape, dtype=source.dtype)
            self._target = _torch_view(self.result)
            self._dtype = torch.uint16 if source.dtype == np.uint16 else self._target.dtype
        else:
            self.result = torch.empty_like(source)
            self._target = self.result
            self._dtype = source.dtype

    def write(self, top: int, left: int, tile: torch.Tensor) -> None:
        """Put ``tile`` ``(B, 3, h, w)`` in [0, 1] at ``(top, left)``."""
        if self.grey:
            tile = luminance(tile.float())
        values = from_unit(tile, self._dtype) if self._dtype != tile.dtype else tile
        height, width = tile.shape[-2:]
        self._target[..., top : top + height, left : left + width] = values.to(self._target.device)
