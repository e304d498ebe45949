"""Temporal stability of video enhancement: curve maps smoothed across frames, exposure held per shot.

Each frame's curve maps are estimated as for a photo, then blended with the running (smoothed) maps of the
previous frames by :class:`CurveSmoother`. Where a region of the picture has not changed, the blend keeps most of
the running maps, so the brightness of a static background no longer pumps when a light blinks or a bright
object moves nearby; where the picture changed (motion, a scene cut, a lamp switched on) the new maps take over
at once, so real brightness changes are followed in the same frame.

Exposure (:mod:`scl_lle.engine.exposure`) is held per shot: each frame's gain on the curve maps is solved as for a
photo, then averaged over the frames of the shot by the same smoother, and restarted at a scene cut (most of the
picture changed at once). A bright object passing through a shot therefore does not pull the gain, and with it
the brightness of everything else, up and down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.colour import luminance
from ..core.curves import downsample
from ..defaults import DEFAULT_SMOOTHING
from ..engine.enhancer import Enhancer
from ..engine.exposure import OFF, Exposure, scale_maps

__all__ = ["CurveSmoother", "enhance_frames"]


class CurveSmoother:
    """Change-aware exponential moving average of curve maps across consecutive frames.

    The picture is summarised as a grid of local mean luma values (cells of ``cell`` x ``cell`` pixels, which
    averages sensor noise away). For each cell, the relative change ``2 |g - G| / (g + G + 0.02)`` between the
    frame's value ``g`` and the running value ``G`` decides how much of the running maps to keep: ``smoothing``
    while the change is below ``threshold / 2``, falling linearly to 0 at ``threshold``. So static regions are
    averaged over about ``1 / (1 - smoothing)`` frames, while moving objects, scene cuts and brightness steps get
    their own maps in the same frame. Because ``G`` is compared with every new frame, a slow drift cannot lag
    behind by more than about ``threshold``.

    Args:
        smoothing: weight of the running maps in unchanged regions, in [0, 1); 0 turns smoothing off.
        threshold: relative change of a cell's mean luma at which its maps are replaced outright.
        cell: grid cell size in full-resolution pixels.
    """

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING, threshold: float = 0.2, cell: int = 8) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be within [0, 1), got {smoothing}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if cell < 1:
            raise ValueError(f"cell must be >= 1, got {cell}")
        self.smoothing = float(smoothing)
        self.threshold = float(threshold)
        self.cell = int(cell)
        self.reset()

    def reset(self) -> None:
        """Forget the running state (the next frame starts afresh)."""
        self._maps: torch.Tensor | None = None
        self._guide: torch.Tensor | None = None
        self._gain: torch.Tensor | None = None
        self._cuts: list[bool] = []

    def __call__(self, frames: torch.Tensor, maps: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
        """Smooth the maps of consecutive frames ``(B, 3, H, W)``: ``maps`` ``(B, 3n, h, w)`` → ``(B, 3n, h, w)``.

        ``inplace``: write the smoothed maps into ``maps`` (full-resolution maps are large)."""
        if frames.shape[0] != maps.shape[0]:
            raise ValueError(f"{frames.shape[0]} frames but {maps.shape[0]} sets of curve maps")
        if self.smoothing == 0.0:
            return maps
        guides = downsample(luminance(frames.to(maps.dtype)), self.cell)
        out = maps if inplace else torch.empty_like(maps)
        self._cuts = []
        for i in range(maps.shape[0]):
            guide, new = guides[i : i + 1], maps[i : i + 1]
            if self._maps is None or self._guide is None or self._maps.shape != new.shape:
                self._maps, self._guide = new.clone(), guide.clone()
                self._cuts.append(True)
            else:
                change = 2 * (guide - self._guide).abs() / (guide + self._guide + 0.02)
                self._cuts.append(bool((change > self.threshold).float().mean() > 0.5))
                knee = self.threshold / 2
                keep = self.smoothing * ((self.threshold - change) / knee).clamp_(0.0, 1.0)
                self._guide = torch.lerp(guide, self._guide, keep)
                if keep.shape[-2:] != new.shape[-2:]:
                    keep = F.interpolate(keep, size=new.shape[-2:], mode="bilinear", align_corners=False)
                torch.lerp(new, self._maps, keep, out=self._maps)
            out[i] = self._maps[0]
        return out

    def smooth_gains(self, gains: torch.Tensor) -> torch.Tensor:
        """Average the exposure gains ``(B,)`` of the frames last passed to :meth:`__call__` over their shot.

        A running mean with weight ``smoothing``, restarted at a scene cut (a frame where more than half of the
        grid cells changed by more than ``threshold``). Returns ``(B,)``.
        """
        if self.smoothing == 0.0:
            return gains
        if len(self._cuts) != gains.shape[0]:
            raise ValueError(f"{gains.shape[0]} gains but {len(self._cuts)} frames were smoothed last")
        out = torch.empty_like(gains)
        for i, cut in enumerate(self._cuts):
            new = gains[i : i + 1]
            self._gain = new.clone() if cut or self._gain is None else torch.lerp(new, self._gain, self.smoothing)
            out[i] = self._gain[0]
        return out


def enhance_frames(
    enhancer: Enhancer,
    frames: torch.Tensor,
    smoother: CurveSmoother | None = None,
    exposure: Exposure | None = None,
) -> torch.Tensor:
    """Enhance consecutive frames ``(B, 3, H, W)`` in [0, 1] on the enhancer's device → ``(B, 3, H, W)``.

    ``exposure``: as for the enhancer (``None``: its setting); the gains are smoothed per shot by ``smoother``.
    """
    maps = enhancer.curve_maps(frames)
    with torch.inference_mode():  # the maps are smoothed and scaled in place (full-resolution maps are large)
        if smoother is not None:
            maps = smoother(frames.to(maps.device), maps, inplace=True)
        # Without local weights (exposure_gain's default): per frame they would make a static background pump
        # around a blinking light (docs/MODEL_CARD.md, "Local weighting")
        gains = enhancer.exposure_gain(frames, maps, exposure)
        if smoother is not None and isinstance(gains, torch.Tensor):
            gains = smoother.smooth_gains(gains)
        maps = scale_maps(maps, gains, inplace=True)
    return enhancer.apply_curve_maps(frames, maps, exposure=OFF)
