"""NIQE (Mittal et al. 2013), MATLAB-compatible, and the MATLAB ``imresize`` it needs.

- :func:`niqe` -- NIQE of ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` grey images in [0, 1] -> ``(B,)``, numerically
  as pyiqa 0.1.16 ``niqe`` computes it; :class:`NIQE` its running mean (:class:`~scl_lle.evaluation.metrics.Metric`).
  Lower is better.
- The pristine model (``niqe_pris_params.npz``, not bundled): :func:`load_niqe_params`, :class:`NIQEParams`,
  :func:`niqe_params_search_path`.
- :func:`matlab_imresize` -- MATLAB ``imresize`` (bicubic, antialiasing).
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

from ..paths import cache_dir, shared_dir
from .metrics import Metric, _check_image, rgb_to_y

__all__ = [
    "NIQE",
    "NIQE_PARAMS_ENV",
    "NIQE_PARAMS_FILE",
    "NIQEParams",
    "NIQEParamsNotFoundError",
    "load_niqe_params",
    "matlab_imresize",
    "niqe",
    "niqe_params_search_path",
]

NIQE_PARAMS_FILE = "niqe_pris_params.npz"
NIQE_PARAMS_ENV = "SCL_LLE_NIQE_PARAMS"

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


class NIQE(Metric):
    """Running mean of :func:`niqe`; ``update(x)``. The pristine model is resolved once, at construction."""

    higher_is_better = False
    name = "NIQE"

    def __init__(self, params: str | os.PathLike[str] | NIQEParams | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.params = load_niqe_params(params)

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return niqe(x, self.params)
