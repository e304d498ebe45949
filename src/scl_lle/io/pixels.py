"""Pixel values and [0, 1] floats: the one place where integer or float pixels become unit floats and back.

uint8 pixels stand for ``value / 255``, uint16 for ``value / 65535``; float pixels are taken as they are (clipped
to [0, 1], NaN as 0). The engine reads and writes pictures a tile at a time through these
(:class:`~scl_lle.engine.tiling.TileReader`, :class:`~scl_lle.engine.tiling.TileWriter`); the video and the
server's previews convert with them too.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["from_unit", "peak_value", "tensor_view", "to_unit"]


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
