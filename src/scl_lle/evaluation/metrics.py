"""Image quality metrics for low-light enhancement, in a torchmetrics-like style.

Every metric comes twice: a function that maps a batch to one value per image, shape ``(B,)``, and a
:class:`Metric` object with ``update(...)`` / ``compute()`` / ``reset()`` whose ``compute()`` is the mean over all
images seen; the object calls the function (one implementation) and says how to read the value
(``higher_is_better``, ``name``, ``unit``).
Images are ``(B, 3, H, W)`` RGB tensors (some metrics also take ``(B, 1, H, W)`` grey) with values in
``[0, 1]``, on any device, float32 or float64; results have the input's floating dtype.

- :func:`psnr` -- peak signal-to-noise ratio over all channels, in dB.
- :func:`ssim` -- SSIM (Wang et al. 2004) on the luma channel (0.299 R + 0.587 G + 0.114 B on 0..255,
  rounded), 11x11 Gaussian window with sigma 1.5, "valid" filtering, as pyiqa ``ssim`` computes it.
- :func:`loe` -- lightness order error (Wang et al. 2013, NPE paper) on a subsampled grid. Lower is better.
- :func:`mean_brightness`, :func:`brightness_change`, :func:`exposure_error`, :func:`colourfulness` (Hasler &
  Süsstrunk 2003), :func:`flicker` (of a clip).
- NIQE is in :mod:`scl_lle.evaluation.niqe`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..core.colour import luminance, mean_brightness

__all__ = [
    "LOE",
    "PSNR",
    "SSIM",
    "BrightnessChange",
    "Colourfulness",
    "ExposureError",
    "MeanBrightness",
    "Metric",
    "brightness_change",
    "colourfulness",
    "exposure_error",
    "flicker",
    "loe",
    "mean_brightness",
    "psnr",
    "rgb_to_y",
    "ssim",
]

# ----------------------------------------------------------------------------------------------- helpers


def _check_image(x: torch.Tensor, name: str = "x", channels: tuple[int, ...] = (1, 3)) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] not in channels:
        raise ValueError(f"{name} must have shape (B, C, H, W) with C in {channels}, got {tuple(x.shape)}")
    return x if x.is_floating_point() else x.float()


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = _check_image(x, "x")
    y = _check_image(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def rgb_to_y(x: torch.Tensor, rounded: bool = True) -> torch.Tensor:
    """Luma of ``x`` ``(B, 3, H, W)`` in [0, 1] on the 0..255 scale -> ``(B, 1, H, W)``, dtype of ``x``.

    ``Y = 255 (0.299 R + 0.587 G + 0.114 B)``: the Y of YIQ (= MATLAB ``rgb2gray``), which is what pyiqa's
    Y-channel metrics (``niqe``, ``ssim``; default ``color_space="yiq"``) use, rounded to integers when
    ``rounded``. It is evaluated in float32 in pyiqa's order of operations, so that values at a rounding tie
    round the same way as in the reference. Grey input ``(B, 1, H, W)`` is just scaled (and rounded).
    """
    x = _check_image(x)
    x32 = x.to(torch.float32)
    y = x32 * 255.0
    if x.shape[1] == 3:
        y = luminance(x32) * 255.0
    if rounded:
        y = y.round()
    return y.to(x.dtype)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """MATLAB ``fspecial('gaussian', size, sigma)``: a normalised 2-D Gaussian, ``(size, size)``."""
    r = (size - 1) / 2
    t = torch.arange(size, dtype=torch.float64) - r
    g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


# --------------------------------------------------------------------------------- full-reference metrics


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB between ``x`` and ``y`` ``(B, C, H, W)``, MSE over all channels and pixels -> ``(B,)``.

    ``10 log10(data_range^2 / MSE)``; identical images give ``inf``.
    """
    x, y = _check_pair(x, y)
    mse = ((x - y) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al. 2004) of ``x``, ``y`` ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` in [0, 1] -> ``(B,)``.

    As pyiqa ``ssim``: RGB is reduced to rounded luma on 0..255 (:func:`rgb_to_y`, data range 255),
    11x11 Gaussian window with sigma 1.5 applied "valid" (no padding), K1 = 0.01, K2 = 0.03, the
    contrast-structure term clamped at 0, no downsampling, mean over the map. Grey input is scaled to
    0..255 without rounding. Needs H, W >= 11.
    """
    x, y = _check_pair(x, y)
    if x.shape[1] == 3:
        x, y = rgb_to_y(x), rgb_to_y(y)
    else:
        x, y = x * 255.0, y * 255.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = _gaussian_window(11, 1.5, x.dtype, x.device).view(1, 1, 11, 11)
    mu1, mu2 = F.conv2d(x, win), F.conv2d(y, win)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = F.conv2d(x * x, win) - mu1_sq
    s2 = F.conv2d(y * y, win) - mu2_sq
    s12 = F.conv2d(x * y, win) - mu12
    cs = torch.relu((2 * s12 + c2) / (s1 + s2 + c2))
    ssim_map = (2 * mu12 + c1) / (mu1_sq + mu2_sq + c1) * cs
    return ssim_map.flatten(1).mean(dim=1)


# ---------------------------------------------------------------------------------- no-reference statistics

LOE_GRID = 50


def loe(enhanced: torch.Tensor, original: torch.Tensor, grid: int = LOE_GRID) -> torch.Tensor:
    """Lightness order error (Wang et al. 2013) of ``enhanced`` w.r.t. ``original``, both ``(B, C, H, W)``.

    Lightness is the maximum over the channels, quantised to 8 bits (``round(255 L)``, as the original
    MATLAB code sees uint8 images). As in that code the lightness maps are subsampled with step
    ``s = max(1, floor(min(H, W) / grid))`` (pixels ``s-1, 2s-1, ...`` of each axis, cut to
    ``floor(H / s) x floor(W / s)``; about ``grid`` = 50 samples on the short side), and for each sample
    the number of other samples whose order relation ``L(p) >= L(q)`` differs between the two images is
    counted; LOE is the mean count (0 = order fully kept; at most the number of samples). The optional 7x7
    local maximum of some variants is not applied. Returns ``(B,)``. Lower is better.
    """
    enhanced, original = _check_pair(enhanced, original)
    le = torch.round(enhanced.amax(dim=1) * 255.0)
    lo = torch.round(original.amax(dim=1) * 255.0)
    h, w = le.shape[-2:]
    step = max(1, min(h, w) // grid)
    rows, cols = h // step, w // step
    le = le[:, step - 1 :: step, step - 1 :: step][:, :rows, :cols].flatten(1)
    lo = lo[:, step - 1 :: step, step - 1 :: step][:, :rows, :cols].flatten(1)
    out = torch.empty(le.shape[0], dtype=enhanced.dtype, device=enhanced.device)
    for i in range(le.shape[0]):  # one (N, N) comparison matrix per image keeps memory bounded
        flips = (lo[i][None, :] >= lo[i][:, None]) != (le[i][None, :] >= le[i][:, None])
        out[i] = flips.sum(dim=1, dtype=torch.float64).mean()
    return out


def flicker(frames: torch.Tensor, relative: bool = False) -> torch.Tensor:
    """Mean absolute frame-to-frame change of the mean brightness of a clip (a scalar tensor).

    Args:
        frames: ``(T, C, H, W)`` frames in order (or ``(T,)`` per-frame mean brightness), ``T >= 2``.
        relative: divide by the clip's mean brightness, so clips of different brightness (a video and its
            enhanced version) compare on the same scale.
    """
    if frames.ndim == 4:
        means = mean_brightness(frames)
    elif frames.ndim == 1:
        means = frames
    else:
        raise ValueError(f"expected (T, C, H, W) frames or (T,) brightness values, got shape {tuple(frames.shape)}")
    if means.shape[0] < 2:
        raise ValueError("flicker needs at least two frames")
    means = means.double()
    value = (means[1:] - means[:-1]).abs().mean()
    return value / means.mean().clamp_min(1e-12) if relative else value


def exposure_error(x: torch.Tensor, target: float = 0.5, patch_size: int | None = None) -> torch.Tensor:
    """Deviation of the brightness of ``x`` ``(B, C, H, W)`` in [0, 1] from a ``target`` level -> ``(B,)``.

    With ``patch_size=None``: ``|mean_brightness(x) - target|`` per image. With a patch size ``p``: the mean
    over non-overlapping ``p x p`` patches of ``|patch mean brightness - target|`` (the Zero-DCE exposure
    measure; the image is cut to whole patches). 0 = exactly at target; at most ``max(target, 1 - target)``.
    """
    x = _check_image(x)
    if patch_size is None:
        return (mean_brightness(x) - target).abs()
    grey = x.mean(dim=1, keepdim=True)
    means = F.avg_pool2d(grey, patch_size)
    return (means - target).abs().flatten(1).mean(dim=1)


def colourfulness(x: torch.Tensor) -> torch.Tensor:
    """Colourfulness M of Hasler & Süsstrunk (2003) of ``x`` ``(B, 3, H, W)`` RGB in [0, 1] -> ``(B,)``.

    On the 0..255 scale: ``rg = R - G``, ``yb = (R + G) / 2 - B``,
    ``M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)`` (population std). Grey images
    give 0; the paper rates ~33 "moderately", ~59 "quite" and >= 82 "extremely" colourful.
    """
    x = _check_image(x, channels=(3,)) * 255.0
    r, g, b = x[:, 0].flatten(1), x[:, 1].flatten(1), x[:, 2].flatten(1)
    rg = r - g
    yb = 0.5 * (r + g) - b
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


def brightness_change(x: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """``|mean_brightness(x) - mean_brightness(original)|`` of ``(B, C, H, W)`` images -> ``(B,)``: how much a
    method changed the overall brightness (what it does to a photo that is already well lit)."""
    x, original = _check_pair(x, original)
    return (mean_brightness(x) - mean_brightness(original)).abs()


# ------------------------------------------------------------------------------------- update/compute objects


class Metric:
    """Running mean of a per-image metric: ``update(...)`` adds a batch, ``compute()`` returns the mean.

    Subclasses implement :meth:`_per_image` (calling the metric's function), returning ``(B,)``, and say how to
    read the value: ``higher_is_better`` (``None``: neither, a statistic), ``name`` and ``unit`` (for tables),
    ``against`` (what ``update``'s second argument is: ``None`` for a no-reference metric, ``update(x)``;
    ``"input"``: the image before enhancement; ``"reference"``: a ground truth).
    ``compute()`` is a 0-d float64 tensor (NaN before any update, or when any image's value is NaN); ``values``
    keeps every per-image value seen (on the CPU).
    """

    higher_is_better: ClassVar[bool | None] = None
    name: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    against: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []

    def _per_image(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, *args: torch.Tensor) -> torch.Tensor:
        """Add a batch; returns its per-image values ``(B,)``."""
        v = self._per_image(*args)
        self.values.append(v.detach().to("cpu", torch.float64).reshape(-1))
        return v

    def add_nan(self, count: int = 1) -> None:
        """Count ``count`` images whose value could not be computed (NaN): ``compute()`` is then NaN too."""
        self.values.append(torch.full((count,), math.nan, dtype=torch.float64))

    def compute(self) -> torch.Tensor:
        """Mean of all per-image values seen since the last reset (NaN when there are none)."""
        if not self.values:
            return torch.tensor(math.nan, dtype=torch.float64)
        return torch.cat(self.values).mean()

    def reset(self) -> None:
        self.values = []

    @property
    def count(self) -> int:
        """Number of images seen."""
        return sum(v.numel() for v in self.values)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        return self.update(*args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(count={self.count})"


class PSNR(Metric):
    """Running mean of :func:`psnr`; ``update(x, reference)``."""

    higher_is_better = True
    name, unit, against = "PSNR", "dB", "reference"

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = data_range

    def _per_image(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return psnr(x, y, self.data_range)


class SSIM(Metric):
    """Running mean of :func:`ssim`; ``update(x, reference)``."""

    higher_is_better = True
    name, against = "SSIM", "reference"

    def _per_image(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return ssim(x, y)


class LOE(Metric):
    """Running mean of :func:`loe`; ``update(enhanced, original)``."""

    higher_is_better = False
    name, against = "LOE", "input"

    def __init__(self, grid: int = LOE_GRID) -> None:
        super().__init__()
        self.grid = grid

    def _per_image(self, enhanced: torch.Tensor, original: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return loe(enhanced, original, self.grid)


class MeanBrightness(Metric):
    """Running mean of :func:`mean_brightness`; ``update(x)``."""

    name = "brightness"

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return mean_brightness(x)


class BrightnessChange(Metric):
    """Running mean of :func:`brightness_change`; ``update(x, original)``."""

    name, against = "|Δ brightness|", "input"

    def _per_image(self, x: torch.Tensor, original: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return brightness_change(x, original)


class ExposureError(Metric):
    """Running mean of :func:`exposure_error`; ``update(x)``."""

    higher_is_better = False
    name = "exp. error"

    def __init__(self, target: float = 0.5, patch_size: int | None = None) -> None:
        super().__init__()
        self.target = target
        self.patch_size = patch_size

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return exposure_error(x, self.target, self.patch_size)


class Colourfulness(Metric):
    """Running mean of :func:`colourfulness`; ``update(x)``."""

    name = "colourfulness"

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return colourfulness(x)
