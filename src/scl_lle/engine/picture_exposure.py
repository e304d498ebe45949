"""The exposure of one picture held by a :class:`~scl_lle.engine.tiling.TileReader`: the local weights of its curve
maps and the gain that brings it to its level, both from a thumbnail (the tensor functions are in
:mod:`scl_lle.engine.exposure`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.colour import mean_brightness
from ..core.curves import sample_maps, upsample_maps
from . import exposure as exposure_module
from .exposure import OFF, Exposure, auto_target, local_weights, solve_gain, thumbnail_factor
from .finishing import base_at_samples
from .tiling import Region, TileReader

__all__ = ["EnhanceError", "finite_maps", "picture_gain", "picture_weights", "weighted_maps"]


class EnhanceError(RuntimeError):
    """The enhancement of one picture failed (for example, the network gave non-finite curve maps)."""


def finite_maps(maps: torch.Tensor) -> torch.Tensor:
    """``maps`` unchanged, or :class:`EnhanceError` if any value is NaN or infinite (which would write black)."""
    if not bool(torch.isfinite(maps.sum(dtype=torch.float32))):  # a NaN or inf anywhere; no full-size temporaries
        raise EnhanceError("the network gave non-finite curve maps for this picture (broken or overflowing weights?)")
    return maps


def picture_weights(reader: TileReader, exposure: Exposure, local_weighting: bool) -> torch.Tensor | None:
    """The :func:`~scl_lle.engine.exposure.local_weights` grid ``(B, 1, gh, gw)`` of the picture, from its
    thumbnail, with :data:`~scl_lle.engine.exposure.LOCAL_POWER`, under ``local_weighting``; ``None``
    without it (every region alike), at ``"off"`` (the network's curves as they are) and for a power of 0."""
    power = exposure_module.LOCAL_POWER
    if not local_weighting or exposure == OFF or power == 0:
        return None
    return local_weights(reader.strided(thumbnail_factor(reader.height, reader.width)), power)


def weighted_maps(
    maps: torch.Tensor, weights: torch.Tensor | None, size: tuple[int, int] | None = None, region: Region | None = None
) -> torch.Tensor:
    """``maps`` ``(B, 3n, h, w)`` times the grid ``weights`` of :func:`picture_weights` upsampled to them (``None``:
    ``maps`` unchanged): maps of the whole picture, or those of ``region`` of a picture of ``size`` pixels."""
    if weights is None:
        return maps
    # Upsampled in float32 (pixel positions beyond 256 are not exact in bfloat16), then cast to the maps' dtype
    return maps * upsample_maps(weights.to(maps.device), size or maps.shape[-2:], region).to(maps.dtype)


def picture_gain(
    reader: TileReader,
    maps: torch.Tensor | None,
    exposure: Exposure,
    estimate: Callable[[int], torch.Tensor],
    eps: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor | float:
    """The gain on the curve maps that realises ``exposure`` for the picture ``reader`` holds: ``(B,)``, or 1.0 for
    ``"off"``.

    Solved on a thumbnail: every ``f``-th pixel (sampled, not averaged, so the brightness histogram and with it the
    mean after the curves are kept) with the curve maps at that grid, times ``weights`` (:func:`picture_weights`;
    ``None``: none): ``maps`` (already estimated) read at those pixels, or, without them, ``estimate(f)``, the
    network's maps of the picture shrunk ``f`` times (one small extra forward). ``eps``: the
    finishing's filter setting (``None``: no finishing); with it the solve sees what the finishing does, the curves
    on each sample's base layer plus its detail (on a noisy photo the base is brighter after the curves than the
    noisy pixels would be).
    """
    if exposure == OFF:
        return 1.0
    size = (reader.height, reader.width)
    factor = thumbnail_factor(*size)
    if maps is None:
        thumb_maps = estimate(factor)
        if weights is not None:
            thumb_maps = thumb_maps * sample_maps(weights, size, factor).to(thumb_maps)
    else:
        if weights is not None and maps.shape[-2:] != size:  # small maps: weighted as they are applied
            thumb_maps = sample_maps(weighted_maps(maps, weights), size, factor)
        else:  # full-size maps: the weights at the same pixels (no weighted copy of all the maps)
            thumb_maps = sample_maps(maps, size, factor)
            if weights is not None:
                thumb_maps = thumb_maps * sample_maps(weights, size, factor).to(thumb_maps)
    thumb = reader.strided(factor)
    target = auto_target(thumb) if isinstance(exposure, str) else exposure
    if eps is None:
        return solve_gain(thumb, finite_maps(thumb_maps), target)
    base = base_at_samples(reader, factor, eps).to(thumb.dtype)
    detail = mean_brightness((thumb - base).float())  # (B,): what the detail adds back at unit gain
    return solve_gain(base, finite_maps(thumb_maps), torch.as_tensor(target, dtype=torch.float32) - detail)
