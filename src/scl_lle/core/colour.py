"""Colour facts used across the package: BT.601 luma, mean brightness and the adaptive gamma curve.

One place for the luma weights: :func:`luminance` (the engine's finishing, tiling previews, video, the classical
baselines) and :func:`scl_lle.evaluation.metrics.rgb_to_y` (the metrics' 0..255 luma) both read :data:`LUMA`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["LUMA", "check_rgb", "gamma_correction", "luminance", "mean_brightness"]

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


def check_rgb(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if it is a float RGB batch ``(B, 3, H, W)``; ``ValueError``/``TypeError`` otherwise."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected an RGB tensor of shape (B, 3, H, W), got {shape}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor in [0, 1], got {x.dtype}")
    return x


def gamma_correction(
    x: torch.Tensor,
    gamma: float | None = None,
    target: float = 0.45,
    min_exponent: float = 0.1,
) -> torch.Tensor:
    """Gamma correction of ``x`` ``(B, 3, H, W)`` in [0, 1] -> same shape, in [0, 1].

    With a fixed ``gamma`` (e.g. 2.2): ``x ** (1 / gamma)``. With ``gamma=None`` (adaptive, the default): per
    image the exponent ``e = log(target) / log(mean luminance)`` maps the mean luminance to ``target`` (0.45),
    clamped to ``[min_exponent, 1]`` so that a bright image is left unchanged rather than darkened.
    """
    x = check_rgb(x)
    if gamma is not None:
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        return x.clamp(0.0, 1.0) ** (1.0 / gamma)
    mean = luminance(x).flatten(1).mean(dim=1).clamp(1e-4, 1 - 1e-4)
    exponent = (math.log(target) / torch.log(mean)).clamp(min_exponent, 1.0)
    return x.clamp(0.0, 1.0) ** exponent.view(-1, 1, 1, 1)
