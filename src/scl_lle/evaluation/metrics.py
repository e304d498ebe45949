"""Image quality metrics for low-light enhancement, in a torchmetrics-like style.

Every metric comes twice: a functional form that maps a batch to one value per image, shape ``(B,)``, and
an object with ``update(...)`` / ``compute()`` / ``reset()`` whose ``compute()`` is the mean over all images
seen.
Images are ``(B, 3, H, W)`` RGB tensors (some metrics also take ``(B, 1, H, W)`` grey) with values in
``[0, 1]``, on any device, float32 or float64; results have the input's floating dtype.

- :func:`niqe` -- MATLAB-compatible NIQE (Mittal et al. 2013), numerically as pyiqa 0.1.16 ``niqe``
  computes it. Needs the pristine model (``niqe_pris_params.npz``), see :func:`load_niqe_params`.
  Lower is better.
- :func:`psnr` -- peak signal-to-noise ratio over all channels, in dB.
- :func:`ssim` -- SSIM (Wang et al. 2004) on the luma channel (0.299 R + 0.587 G + 0.114 B on 0..255,
  rounded), 11x11 Gaussian window with sigma 1.5, "valid" filtering, as pyiqa ``ssim`` computes it.
- :func:`loe` -- lightness order error (Wang et al. 2013, NPE paper) on a subsampled grid. Lower is better.
- :func:`mean_brightness`, :func:`exposure_error`, :func:`colourfulness` (Hasler & Süsstrunk 2003).
- :func:`matlab_imresize` -- MATLAB ``imresize`` (bicubic, antialiasing) used by NIQE.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scl_lle.paths import cache_dir, shared_dir

from ..core.colour import luminance, mean_brightness

__all__ = [
    "LOE",
    "NIQE",
    "NIQE_PARAMS_ENV",
    "NIQE_PARAMS_FILE",
    "PSNR",
    "SSIM",
    "Colourfulness",
    "ExposureError",
    "MeanBrightness",
    "Metric",
    "NIQEParams",
    "NIQEParamsNotFoundError",
    "colourfulness",
    "exposure_error",
    "flicker",
    "load_niqe_params",
    "loe",
    "matlab_imresize",
    "mean_brightness",
    "niqe",
    "niqe_params_search_path",
    "psnr",
    "rgb_to_y",
    "ssim",
]

NIQE_PARAMS_FILE = "niqe_pris_params.npz"
NIQE_PARAMS_ENV = "SCL_LLE_NIQE_PARAMS"

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


# ------------------------------------------------------------------------------------ MATLAB imresize


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize`` bicubic)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return inner + outer


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """``(out_len, in_len)`` float64 matrix of MATLAB bicubic weights with symmetric boundary handling."""
    u = torch.arange(1, out_len + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    shrink = antialias and scale < 1
    width = 4.0 / scale if shrink else 4.0
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based input positions
    dist = u[:, None] - idx
    weights = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # out-of-range positions mirror back into the signal, edge sample included (MATLAB "symmetric")
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    src = mirror[(idx.long() - 1).remainder(2 * in_len)]
    rows = torch.arange(out_len)[:, None].expand_as(src)
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.index_put_((rows.reshape(-1), src.reshape(-1)), weights.reshape(-1), accumulate=True)
    return mat


def matlab_imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``x`` ``(..., H, W)`` like MATLAB ``imresize(x, scale)`` with bicubic interpolation.

    Give either ``scale`` (output size ``ceil(H * scale), ceil(W * scale)``) or ``size`` ``(h, w)``.
    Antialiasing widens the kernel when shrinking, as MATLAB does by default. No clipping or rounding.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    h, w = x.shape[-2:]
    if size is None:
        assert scale is not None
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
        sh = sw = float(scale)
    else:
        out_h, out_w = int(size[0]), int(size[1])
        sh, sw = out_h / h, out_w / w
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mh = _resize_matrix(h, out_h, sh, antialias).to(dtype=dtype, device=x.device)
    mw = _resize_matrix(w, out_w, sw, antialias).to(dtype=dtype, device=x.device)
    return torch.matmul(torch.matmul(mh, x.to(dtype)), mw.transpose(0, 1))


# ------------------------------------------------------------------------------------------------- NIQE


class NIQEParamsNotFoundError(FileNotFoundError):
    """The NIQE pristine model (``niqe_pris_params.npz``) was not found in any of the searched places."""


@dataclass(frozen=True)
class NIQEParams:
    """NIQE pristine model: ``mu`` ``(36,)``, ``cov`` ``(36, 36)``, MSCN ``window`` ``(7, 7)``; float64."""

    mu: torch.Tensor
    cov: torch.Tensor
    window: torch.Tensor

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> NIQEParams:
        """Build from a mapping (npz layout): ``mu_pris_param``, ``cov_pris_param``, ``gaussian_window``."""
        try:
            mu, cov, win = data["mu_pris_param"], data["cov_pris_param"], data["gaussian_window"]
        except KeyError as err:
            raise ValueError(
                f"NIQE parameters lack {err}; expected mu_pris_param, cov_pris_param, gaussian_window"
            ) from err

        def as_t(v: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(v), dtype=torch.float64).clone()

        mu_t, cov_t, win_t = as_t(mu).reshape(-1), as_t(cov), as_t(win)
        if mu_t.numel() != 36 or cov_t.shape != (36, 36) or win_t.ndim != 2:
            raise ValueError(
                f"unexpected NIQE parameter shapes: mu {tuple(mu_t.shape)}, cov {tuple(cov_t.shape)}, "
                f"window {tuple(win_t.shape)} (expected 36, 36x36, 2-D)"
            )
        return cls(mu_t, cov_t, win_t)


def niqe_params_search_path() -> list[Path]:
    """Where :func:`load_niqe_params` looks for the pristine model when no path is given, in order.

    ``$SCL_LLE_NIQE_PARAMS``, ``$SCL_LLE_SHARED/metrics/niqe_pris_params.npz``,
    ``cache_dir()/niqe_pris_params.npz``.
    """
    candidates: list[Path] = []
    if env := os.environ.get(NIQE_PARAMS_ENV):
        candidates.append(Path(env).expanduser())
    if (shared := shared_dir()) is not None:
        candidates.append(shared / "metrics" / NIQE_PARAMS_FILE)
    candidates.append(cache_dir() / NIQE_PARAMS_FILE)
    return candidates


@lru_cache(maxsize=8)
def _load_npz(path: str, mtime: float) -> NIQEParams:
    with np.load(path, allow_pickle=False) as data:
        return NIQEParams.from_mapping({k: data[k] for k in data.files})


def _missing_params_message(tried: list[Path]) -> str:
    places = "\n".join(f"  - {p}" for p in tried)
    return (
        f"NIQE needs the pristine model file '{NIQE_PARAMS_FILE}' (arrays mu_pris_param 1x36, cov_pris_param "
        "36x36, gaussian_window 7x7). It is not bundled with scl-lle: it holds the parameters of the "
        "MATLAB NIQE release (Mittal et al.), as redistributed by BasicSR "
        "(basicsr/metrics/niqe_pris_params.npz, Apache-2.0).\n"
        f"Searched:\n{places}\n"
        f"Put the file at {cache_dir() / NIQE_PARAMS_FILE}, or set {NIQE_PARAMS_ENV} to its path, "
        "or pass params=... explicitly."
    )


def load_niqe_params(
    params: str | os.PathLike[str] | NIQEParams | Mapping[str, Any] | None = None,
) -> NIQEParams:
    """Resolve the NIQE pristine model.

    ``params`` may be a :class:`NIQEParams`, a mapping in the npz layout (e.g. an open ``np.load`` result), or
    a path to the ``.npz``. With ``None`` the places of :func:`niqe_params_search_path` are tried in order.
    Raises :class:`NIQEParamsNotFoundError` (a ``FileNotFoundError``) saying where to put the file.
    """
    if isinstance(params, NIQEParams):
        return params
    if isinstance(params, Mapping) or hasattr(params, "files"):
        return NIQEParams.from_mapping(params)  # type: ignore[arg-type]
    tried = [Path(params).expanduser()] if params is not None else niqe_params_search_path()
    for path in tried:
        if path.is_file():
            resolved = path.resolve()
            return _load_npz(str(resolved), resolved.stat().st_mtime)
    raise NIQEParamsNotFoundError(_missing_params_message(tried))


_GAM_STEP = 0.001


@lru_cache(maxsize=8)
def _aggd_table(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape grid 0.2:0.001:10 and its ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)) as MATLAB builds them."""
    gam = torch.arange(0.2, 10 + _GAM_STEP / 2, _GAM_STEP, dtype=torch.float64)
    r = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
    return gam.to(dtype=dtype, device=device), r.to(dtype=dtype, device=device)


def _aggd_fit(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit an asymmetric generalised Gaussian to each ``(h, w)`` block of ``v`` ``(..., h, w)``.

    Returns ``alpha, beta_left, beta_right`` of shape ``(...)``. Degenerate blocks (no negative or no positive
    samples) give NaN betas and alpha = 0.2, as the reference implementation does.
    """
    neg, pos = v < 0, v > 0
    sq = v * v
    left_std = torch.sqrt((sq * neg).sum(dim=(-2, -1)) / neg.sum(dim=(-2, -1)))
    right_std = torch.sqrt((sq * pos).sum(dim=(-2, -1)) / pos.sum(dim=(-2, -1)))
    gammahat = left_std / right_std
    rhat = v.abs().mean(dim=(-2, -1)) ** 2 / sq.mean(dim=(-2, -1))
    rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
    gam, r_gam = _aggd_table(v.dtype, v.device)
    # argmin returns the first NaN when the distance is NaN everywhere, i.e. alpha = 0.2 for degenerate blocks
    pos_idx = (r_gam - rhatnorm.unsqueeze(-1)).abs().argmin(dim=-1)
    alpha = gam[pos_idx]
    c = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left_std * c, right_std * c


_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _block_features(blocks: torch.Tensor) -> torch.Tensor:
    """18 NIQE features of each MSCN block: ``(..., h, w)`` -> ``(..., 18)``."""
    alpha, bl, br = _aggd_fit(blocks)
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        pair = blocks * torch.roll(blocks, shifts=shift, dims=(-2, -1))
        alpha, bl, br = _aggd_fit(pair)
        mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
        feats += [alpha, mean, bl, br]
    return torch.stack(feats, dim=-1)


def _correlate_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Correlation of ``x`` ``(..., H, W)`` with a small ``(kh, kw)`` window, no padding ("valid").

    Computed as a sum of shifted copies: for float64 several times faster on the CPU than ``conv2d``, and the
    same summation order on every device."""
    kh, kw = window.shape
    h, w = x.shape[-2] - kh + 1, x.shape[-1] - kw + 1
    out = torch.zeros(*x.shape[:-2], h, w, dtype=x.dtype, device=x.device)
    for i in range(kh):
        for j in range(kw):
            out += x[..., i : i + h, j : j + w] * window[i, j]
    return out


def _mscn(y: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients of ``y`` ``(B, 1, H, W)`` (replicate borders)."""
    kh, kw = window.shape
    pad = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)
    mu = _correlate_valid(F.pad(y, pad, mode="replicate"), window)
    ex2 = _correlate_valid(F.pad(y * y, pad, mode="replicate"), window)
    sigma = torch.sqrt((ex2 - mu * mu).abs())
    return (y - mu) / (sigma + 1)


def _nanmean(v: torch.Tensor, dim: int) -> torch.Tensor:
    nan = torch.isnan(v)
    return torch.where(nan, torch.zeros_like(v), v).sum(dim) / (~nan).sum(dim)


def _niqe_from_y(y: torch.Tensor, p: NIQEParams, block: int = 96) -> torch.Tensor:
    """NIQE of luma ``y`` ``(B, 1, H, W)`` on the 0..255 scale (float64). Returns ``(B,)``."""
    b, _, h, w = y.shape
    nh, nw = h // block, w // block
    if nh < 1 or nw < 1 or nh * nw < 2:
        raise ValueError(f"NIQE needs at least two {block}x{block} blocks, got an image of {h}x{w}")
    y = y[..., : nh * block, : nw * block]
    # pyiqa holds the 7x7 window in float32. In flat (e.g. clipped) areas the MSCN coefficients are pure
    # round-off whose signs still enter the AGGD fits, so the window is rounded the same way to agree there.
    window = p.window.to(torch.float32).to(dtype=y.dtype, device=y.device)
    feats = []
    for scale in (1, 2):
        bs = block // scale
        mscn = _mscn(y, window)
        blocks = mscn.reshape(b, nh, bs, nw, bs).permute(0, 1, 3, 2, 4).reshape(b, nh * nw, bs, bs)
        feats.append(_block_features(blocks))
        if scale == 1:
            y = matlab_imresize(y / 255.0, scale=0.5) * 255.0
    dist = torch.cat(feats, dim=-1)  # (B, N, 36)
    mu_d = _nanmean(dist, dim=1)
    dist0 = torch.nan_to_num(dist, nan=0.0)
    centred = dist0 - dist0.mean(dim=1, keepdim=True)
    cov_d = centred.transpose(1, 2) @ centred / (dist0.shape[1] - 1)
    mu_p = p.mu.to(dtype=y.dtype, device=y.device)
    cov_p = p.cov.to(dtype=y.dtype, device=y.device)
    inv = torch.linalg.pinv((cov_p + cov_d) / 2)
    diff = (mu_p - mu_d).unsqueeze(1)  # (B, 1, 36)
    q = (diff @ inv @ diff.transpose(1, 2)).reshape(b)
    return torch.sqrt(q)


def niqe(
    x: torch.Tensor,
    params: str | os.PathLike[str] | NIQEParams | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """MATLAB-compatible NIQE of ``x`` ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` grey in [0, 1] -> ``(B,)``.

    As pyiqa 0.1.16 ``create_metric("niqe")``: luma = :func:`rgb_to_y` (0.299 R + 0.587 G + 0.114 B on
    0..255, rounded; grey input is scaled by 255 and rounded), no border crop, the image cut to whole 96x96
    blocks from the top left (any size works, odd ones included), 18 features per block at two scales (the
    second after MATLAB bicubic ``imresize`` by 1/2 with antialiasing, blocks of 48x48), MSCN with the 7x7
    Gaussian of the pristine model, AGGD fits, and the Mahalanobis-like distance to the pristine Gaussian with
    the pseudo-inverse of the averaged covariance. Needs at least two blocks (e.g. 96x192 pixels), else
    ``ValueError``. Vectorised over blocks and batch; computed in float64, returned in the input's dtype.
    ``params``: see :func:`load_niqe_params`. Lower is better.
    """
    x = _check_image(x)
    p = load_niqe_params(params)
    device = x.device
    if device.type == "mps":  # no float64 there
        x = x.cpu()
    y = rgb_to_y(x.to(torch.float64))
    return _niqe_from_y(y, p).to(device=device, dtype=x.dtype)


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


# ------------------------------------------------------------------------------------- update/compute objects


class Metric:
    """Running mean of a per-image metric: ``update(...)`` adds a batch, ``compute()`` returns the mean.

    Subclasses implement :meth:`_per_image`, returning ``(B,)``. ``compute()`` is a 0-d float64 tensor (NaN
    before any update); ``values`` keeps every per-image value seen (on the CPU).
    """

    higher_is_better: bool = True

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

    def compute(self) -> torch.Tensor:
        """Mean of all per-image values seen since the last reset (NaN when there are none)."""
        if not self.values:
            return torch.tensor(float("nan"), dtype=torch.float64)
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


class NIQE(Metric):
    """Running mean of :func:`niqe`; ``update(x)``. The pristine model is resolved once, at construction."""

    higher_is_better = False

    def __init__(self, params: str | os.PathLike[str] | NIQEParams | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.params = load_niqe_params(params)

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return niqe(x, self.params)


class PSNR(Metric):
    """Running mean of :func:`psnr`; ``update(x, y)``."""

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = data_range

    def _per_image(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return psnr(x, y, self.data_range)


class SSIM(Metric):
    """Running mean of :func:`ssim`; ``update(x, y)``."""

    def _per_image(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return ssim(x, y)


class LOE(Metric):
    """Running mean of :func:`loe`; ``update(enhanced, original)``."""

    higher_is_better = False

    def __init__(self, grid: int = LOE_GRID) -> None:
        super().__init__()
        self.grid = grid

    def _per_image(self, enhanced: torch.Tensor, original: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return loe(enhanced, original, self.grid)


class MeanBrightness(Metric):
    """Running mean of :func:`mean_brightness`; ``update(x)``."""

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return mean_brightness(x)


class ExposureError(Metric):
    """Running mean of :func:`exposure_error`; ``update(x)``."""

    higher_is_better = False

    def __init__(self, target: float = 0.5, patch_size: int | None = None) -> None:
        super().__init__()
        self.target = target
        self.patch_size = patch_size

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return exposure_error(x, self.target, self.patch_size)


class Colourfulness(Metric):
    """Running mean of :func:`colourfulness`; ``update(x)``."""

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return colourfulness(x)
