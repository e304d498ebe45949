"""Exposure-aware training: the losses score the outputs at an exposure, as the enhancer serves them.

The config's top-level ``exposure`` (``off`` | ``auto`` | a level ``E`` | ``[low, high]``, a level drawn per image)
and ``exposure_share`` (the fraction of each batch scored at it; the rest at full strength) describe it
(docs/MODEL_CARD.md, "Exposure"): :func:`exposure_setting` reads the first, :func:`scored_at_exposure` applies both.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.curves import apply_curves
from ..engine.exposure import AUTO, OFF, auto_target, parse_exposure, scale_maps, solve_gain

__all__ = ["ExposureSetting", "exposure_setting", "scored_at_exposure"]

#: ``"off"``, ``"auto"``, a level in (0, 1), or a ``(low, high)`` range of levels.
ExposureSetting = str | float | tuple[float, float]


def exposure_setting(value: Any) -> ExposureSetting:
    """The training config's ``exposure``: ``"off"``, ``"auto"``, a level or a ``(low, high)`` range of levels."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"exposure: a range is [low, high], got {value!r}")
        low, high = (parse_exposure(v) for v in value)
        if isinstance(low, str) or isinstance(high, str) or not low <= high:
            raise ValueError(f"exposure: a range is [low, high] with 0 < low <= high < 1, got {value!r}")
        return (low, high)
    return parse_exposure(value)


def scored_at_exposure(
    low: torch.Tensor,
    maps: torch.Tensor,
    setting: ExposureSetting,
    share: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The enhanced batch as the enhancer serves it at an exposure ``setting``, for the losses to score.

    Args:
        low: ``(B, 3, H, W)`` inputs in [0, 1].
        maps: ``(B, 3n, H, W)`` curve maps of ``low`` in [-1, 1] (with their gradient).
        setting: ``"off"`` (full strength), ``"auto"`` (:func:`~scl_lle.engine.exposure.auto_target`), a level, or a
            ``(low, high)`` range from which a level is drawn per image.
        share: the fraction of images (drawn per image) scored at ``setting``; the others at full strength.
        generator: the CPU generator the draws come from (deterministic per step).

    Returns:
        ``(B, 3, H, W)`` in [0, 1]: the curves with each image's maps times its gain (solved without gradient,
        :func:`~scl_lle.engine.exposure.solve_gain`), clipped to [-1, 1]; the gradient reaches ``maps``.
    """
    if setting == OFF or share <= 0:
        return apply_curves(low, maps)
    batch = low.shape[0]
    draws = torch.rand(2, batch, generator=generator).to(low.device)
    with torch.no_grad():
        if setting == AUTO:
            target = auto_target(low.float())
        elif isinstance(setting, tuple):
            target = setting[0] + draws[1] * (setting[1] - setting[0])
        else:
            target = torch.full((batch,), float(setting), device=low.device)
        gain = solve_gain(low, maps.detach(), target)
        gain = torch.where(draws[0] < share, gain, torch.ones_like(gain))
    return apply_curves(low, scale_maps(maps, gain))
