"""Colour facts used across the package: BT.601 luma and mean brightness.

One place for the luma weights: :func:`luminance` (the engine's finishing, tiling previews, video, the classical
baselines) and :func:`scl_lle.evaluation.metrics.rgb_to_y` (the metrics' 0..255 luma) both read :data:`LUMA`.
"""

from __future__ import annotations

import torch

__all__ = ["LUMA", "luminance", "mean_brightness"]

#: BT.601 luma weights of R, G and B (also MATLAB's ``rgb2gray``).
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luminance of ``x`` ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` in [0, 1]."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def mean_brightness(x: torch.Tensor) -> torch.Tensor:
    """Mean intensity of ``x`` ``(B, C, H, W)`` over channels and pixels -> ``(B,)`` (in ``x``'s range),
    accumulated in float32 at least (half-precision inputs included)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (B, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    x = x if x.is_floating_point() else x.float()
    return x.flatten(1).mean(dim=1, dtype=torch.float32 if x.dtype != torch.float64 else None)
