"""Exposure control: how bright the enhancer makes each photo.

DCE-Net's curve maps say *how* to brighten a photo (which regions, which channels); this module decides *how
much*. An exposure target ``E`` is a mean brightness (the mean of R, G and B over all pixels, in [0, 1], as
``scl-lle evaluate`` reports it). The enhancer multiplies the photo's curve maps by one gain ``g >= 0`` per
image and clips them to [-1, 1] (:func:`scale_maps`), so every curve stays monotone and maps [0, 1] onto
[0, 1]; :func:`solve_gain` finds the ``g`` that brings the output's mean brightness to ``E`` by bisection on a
thumbnail (a few milliseconds). ``g = 0`` is the identity: a photo already at or above ``E`` comes back unchanged,
and no photo is made darker than it was.

Optionally (local weighting: ``--local-weighting``, ``Enhancer(local_weighting=True)``; off by default) the maps are
first weighted region by region where a photo is brightened to a level (``auto`` or ``E``, not ``off``): a region
of local brightness ``b`` gets ``(1 - b)^p`` of the lift (:func:`local_weights`, ``p`` = :data:`LOCAL_POWER`), so
bright regions keep their detail while the gain brings the mean to its level. It lowers NIQE and costs
segmentation accuracy on dark street frames (docs/MODEL_CARD.md, "Local weighting").

The exposure setting, with one name from the command line (``--exposure``) to the API (``exposure=``), the web
page and evaluation method specs (``scl-lle@0.45``):

- ``"auto"`` (the default): the target comes from the photo itself (:func:`auto_target`), by a policy fitted on
  real multi-exposure sequences (``scripts/fit_exposure_policy.py``; docs/MODEL_CARD.md, "Exposure").
- ``"off"``: the network's own curves at full strength (gain 1), as the paper applies them.
- a number ``E`` in (0, 1): that mean brightness, where the curves can reach it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ..core.colour import luminance, mean_brightness
from ..core.curves import apply_curves

__all__ = [
    "AUTO",
    "AUTO_LEVEL",
    "AUTO_POLICY",
    "FEATURE_QUANTILES",
    "LOCAL_GRID",
    "LOCAL_POWER",
    "MAX_GAIN",
    "OFF",
    "THUMBNAIL_SIDE",
    "Exposure",
    "auto_target",
    "exposure_features",
    "keep_input",
    "local_weights",
    "parse_exposure",
    "scale_maps",
    "solve_gain",
    "thumbnail_factor",
]

AUTO = "auto"
OFF = "off"
#: An exposure setting: ``"auto"``, ``"off"`` or a target mean brightness in (0, 1).
Exposure = str | float

#: Largest gain on the curve maps the solve tries: past it nearly every map is clipped at -1 anyway.
MAX_GAIN = 32.0
#: Longest side of the thumbnail the gain is solved on.
THUMBNAIL_SIDE = 256
#: Regions of :func:`local_weights` along the long side of a photo (an eighth of it each, before smoothing; chosen
#: on training data, as 16 and 12 lower NIQE as much and cost street frames more segmentation: docs/MODEL_CARD.md,
#: "Local weighting").
LOCAL_GRID = 8
#: The power of :func:`local_weights` under local weighting (``local_weighting=True``; chosen on dark training
#: photos, docs/MODEL_CARD.md, "Local weighting"). 0 would weight every region alike.
LOCAL_POWER = 2
_GRID_STEPS = 8  # gains MAX_GAIN / 2**7 = 1/4 ... MAX_GAIN tried before the bisection
_BISECTION_STEPS = 14  # a grid interval split 2**14 times: the target within about 1e-4


def _real_number(value: object) -> float | None:
    """``value`` as a float if it is one real number: a Python or numpy number (not a bool), a one-element
    floating-point tensor or a one-element numeric numpy array; else ``None``."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value.item())
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu":
        return float(value.item())
    return None


def parse_exposure(value: Exposure | None) -> Exposure:
    """Normalise an exposure setting: ``"auto"``, ``"off"`` or a float in (0, 1) (also given as a string, a numpy
    number or a one-element tensor or array).

    ``None`` means ``"auto"``. Raises ``ValueError`` with the accepted forms for anything else.
    """
    if value is None:
        return AUTO
    if isinstance(value, str):
        text = value.strip().lower()
        if text in (AUTO, OFF):
            return text
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"exposure must be 'auto', 'off' or a number in (0, 1), got {value!r}") from None
    elif (number_or_none := _real_number(value)) is not None:
        number = number_or_none
    else:
        raise ValueError(f"exposure must be 'auto', 'off' or a number in (0, 1), got {value!r}")
    if not (math.isfinite(number) and 0.0 < number < 1.0):
        raise ValueError(f"exposure must be 'auto', 'off' or a number in (0, 1), got {value!r}")
    return number


def scale_maps(maps: torch.Tensor, gain: torch.Tensor | float, *, inplace: bool = False) -> torch.Tensor:
    """Curve maps ``(B, 3n, h, w)`` times a gain per image (``(B,)`` or a float), clipped to [-1, 1].

    Clipped maps keep every curve ``x + r (x^2 - x)`` monotone on [0, 1] with [0, 1] as its range. Gain 0 is the
    identity, gain 1 the maps as estimated. ``inplace``: scale ``maps`` itself (no copy of full-size maps).
    """
    if not isinstance(gain, torch.Tensor) and gain == 1.0:
        return maps
    factor = gain if not isinstance(gain, torch.Tensor) else gain.to(maps.device, maps.dtype).view(-1, 1, 1, 1)
    out = maps.mul_(factor) if inplace else maps * factor
    return out.clamp_(-1.0, 1.0)


def local_weights(thumb: torch.Tensor, power: float) -> torch.Tensor:
    """Weights on the curve maps, region by region, from a thumbnail ``(B, 3, h, w)`` in [0, 1] of the photo.

    The luminance is averaged over a grid of :data:`LOCAL_GRID` regions along the long side and smoothed over each
    region's 3 x 3 neighbours, giving the local brightness ``b``; the weight is ``(1 - b)^power`` (no other factor:
    the gain sets the level). Returns ``(B, 1, gh, gw)`` float32 >= 0, a grid covering the whole photo: upsampled
    bilinearly (:func:`~scl_lle.core.curves.upsample_maps`, or :func:`~scl_lle.core.curves.sample_maps` at a
    thumbnail's pixels) and multiplied into the curve maps before :func:`scale_maps`; the gain then restores the
    level.
    """
    grey = luminance(thumb.float())
    height, width = grey.shape[-2:]
    side = max(height, width)
    grid = tuple(max(1, min(n, round(LOCAL_GRID * n / side))) for n in (height, width))
    local = F.avg_pool2d(F.pad(F.adaptive_avg_pool2d(grey, grid), (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (1 - local).clamp(min=0).pow(power)


def keep_input(out: torch.Tensor, image: torch.Tensor, gain: torch.Tensor | float) -> torch.Tensor:
    """``out`` ``(B, 3, h, w)`` with the images whose gain is 0 (identity curves) replaced by ``image`` exactly."""
    if isinstance(gain, torch.Tensor) and bool((gain == 0).any()):
        keep = (gain == 0).to(out.device).view(-1, 1, 1, 1)
        out = torch.where(keep, image, out)
    return out


def thumbnail_factor(height: int, width: int, side: int = THUMBNAIL_SIDE) -> int:
    """The integer shrink factor that brings ``height x width`` to at most about ``side`` on the long side."""
    return max(1, -(-max(height, width) // side))


def solve_gain(image: torch.Tensor, maps: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """The gain on ``maps`` that brings the mean brightness of the curves' output to ``target``, per image.

    Args:
        image: ``(B, 3, h, w)`` in [0, 1], usually a thumbnail.
        maps: ``(B, 3n, h, w)`` curve maps of ``image`` (the same size) in [-1, 1].
        target: mean brightness in (0, 1), a float or ``(B,)``.

    Returns:
        ``(B,)`` float32 gains in [0, :data:`MAX_GAIN`]. 0 where the image is already at or above the target.
        Otherwise the smallest gain of the grid 1/4, 1/2, 1, ... :data:`MAX_GAIN` that reaches the target, refined
        by bisection against the grid point below it; where no gain reaches it, the grid gain that comes closest
        (never one that darkens the image: gain 0 is on the grid).
    """
    if maps.shape[-2:] != image.shape[-2:] or maps.shape[0] != image.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)} do not fit the image {tuple(image.shape)}")
    image = image.float()
    maps = maps.float()
    batch = image.shape[0]
    target_t = torch.as_tensor(target, dtype=torch.float32, device=image.device).expand(batch)

    def brightness(gain: torch.Tensor) -> torch.Tensor:
        return mean_brightness(apply_curves(image, scale_maps(maps, gain)))

    grid = [0.0] + [MAX_GAIN / 2**k for k in range(_GRID_STEPS - 1, -1, -1)]
    levels = torch.stack([brightness(torch.full((batch,), g, device=image.device)) for g in grid], dim=1)
    grid_t = torch.tensor(grid, device=image.device)
    reached = levels >= target_t[:, None]  # (B, grid)
    first = torch.where(reached.any(dim=1), reached.float().argmax(dim=1), torch.zeros_like(target_t).long())
    low = grid_t[(first - 1).clamp(min=0)]
    high = grid_t[first]
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        below = brightness(middle) < target_t
        low = torch.where(below, middle, low)
        high = torch.where(below, high, middle)
    closest = grid_t[levels.argmax(dim=1)]
    gain = torch.where(reached.any(dim=1), high, closest)
    return torch.where(reached[:, 0], torch.zeros_like(gain), gain)


#: Quantiles of the per-pixel brightness used as features by :func:`exposure_features`.
FEATURE_QUANTILES = (0.5, 0.9, 0.99)


def exposure_features(image: torch.Tensor) -> torch.Tensor:
    """What the auto-exposure policy sees of ``(B, 3, h, w)`` in [0, 1] (a thumbnail): ``(B, 5)`` float32.

    ``[1, log m, log(q50 / m), log(q90 / m), log(q99 / m)]``: ``m`` the mean brightness, ``qX`` quantiles of the
    per-pixel brightness (mean of R, G, B). The level, and the shape of the histogram relative to it: a photo
    whose highlights already reach near white is not under-exposed, whatever its mean.
    """
    pixels = image.float().mean(dim=1).flatten(1)  # (B, h*w) per-pixel brightness
    mean = pixels.mean(dim=1).clamp(min=1e-3)
    levels = torch.tensor(FEATURE_QUANTILES, dtype=pixels.dtype, device=pixels.device)
    quantiles = torch.quantile(pixels, levels, dim=1).T.clamp(min=1e-3)  # (B, 3)
    ratios = (quantiles / mean[:, None]).log()
    return torch.cat((torch.ones_like(mean)[:, None], mean.log()[:, None], ratios), dim=1)


#: The auto-exposure policy, fitted by ``scripts/fit_exposure_policy.py`` on the SICE multi-exposure sequences of
#: the project's shared data (training data only; the fit and its cross-validated accuracy: docs/MODEL_CARD.md,
#: "Exposure"). ``AUTO_POLICY``: logistic-regression weights on :func:`exposure_features`, the probability that
#: a photo is under-exposed. ``AUTO_LEVEL``: the brightness a well-exposed photo has (the median of the
#: sequences' best exposures).
AUTO_POLICY = (-16.624, -12.009, -3.222, -1.509, -2.060)
AUTO_LEVEL = 0.500


def auto_target(
    image: torch.Tensor, policy: tuple[float, ...] = AUTO_POLICY, level: float = AUTO_LEVEL
) -> torch.Tensor:
    """The ``"auto"`` exposure target of ``(B, 3, h, w)`` in [0, 1] (a thumbnail): ``(B,)`` mean brightness.

    ``m + p * max(level - m, 0)``: ``m`` the photo's mean brightness, ``p`` the policy's probability that it is
    under-exposed. A clearly dark photo (``p`` near 1) is lifted to ``level``; one the policy finds well exposed
    (``p`` near 0), or brighter than ``level``, keeps its own brightness and so comes back unchanged; in between,
    the lift is in proportion to the policy's confidence (the expected right level, not a guess at either side).
    """
    features = exposure_features(image)
    weights = torch.tensor(policy, dtype=features.dtype, device=features.device)
    under = torch.sigmoid(features @ weights)
    mean = features[:, 1].exp()
    return mean + under * (level - mean).clamp(min=0)
