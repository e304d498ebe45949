"""Classical low-light enhancement baselines, written in torch (CPU or GPU), for comparison with DCE-Net.

Every method maps a float tensor ``(B, 3, H, W)`` with values in ``[0, 1]`` to a tensor of the same shape,
dtype and device, with values in ``[0, 1]``. They work per image (statistics are never shared across the
batch).

- :func:`identity` -- the input, unchanged (a copy).
- :func:`gamma_correction` -- ``x ** (1 / gamma)`` with a fixed ``gamma``, or (default) adaptive: the exponent
  is chosen so that the image's mean luminance maps to ``target`` = 0.45; it never darkens.
- :func:`histeq` -- global histogram equalisation of the luminance (256 bins), colours kept by ratio.
- :func:`clahe` -- contrast-limited adaptive histogram equalisation of the luminance (8x8 tiles, clip limit
  2.0, bilinear interpolation between the tile mappings, as OpenCV's ``createCLAHE``), colours kept by ratio.
- :func:`lime` -- LIME (Guo et al., TIP 2017): illumination = max over RGB, refined by LIME's "sped-up"
  structure-aware smoothing (weighted quadratic problem solved by preconditioned conjugate gradients),
  gamma 0.8 on the illumination, ``R = I / T``.

"Colours kept by ratio": a new luminance ``Y'`` is imposed by scaling the three channels of each pixel by
``Y' / Y``, which keeps hue and saturation (chromaticity) and clips at 1 where a channel would exceed it.
Luminance is ``Y = 0.299 R + 0.587 G + 0.114 B`` (BT.601, as :func:`scl_lle.evaluation.metrics.rgb_to_y`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.colour import check_rgb, gamma_correction, luminance

__all__ = [
    "BASELINES",
    "clahe",
    "gamma_correction",
    "histeq",
    "identity",
    "lime",
]

_BINS = 256


def _apply_by_ratio(x: torch.Tensor, y_old: torch.Tensor, y_new: torch.Tensor) -> torch.Tensor:
    """Scale the channels of ``x`` by ``y_new / y_old`` per pixel (black stays black); clip to [0, 1]."""
    ratio = y_new / y_old.clamp_min(1e-6)
    out = torch.where(y_old > 1e-6, x * ratio, y_new.expand_as(x))
    return out.clamp(0.0, 1.0)


def _quantise(y: torch.Tensor) -> torch.Tensor:
    """Bin index 0..255 of values in [0, 1] (8-bit quantisation), int64."""
    return (y.clamp(0.0, 1.0) * (_BINS - 1)).round().long()


# ------------------------------------------------------------------------------------------------ simple


def identity(x: torch.Tensor) -> torch.Tensor:
    """The input unchanged (a copy): ``(B, 3, H, W)`` -> same."""
    return check_rgb(x).clone()


# --------------------------------------------------------------------------------- histogram equalisation


def histeq(x: torch.Tensor) -> torch.Tensor:
    """Global histogram equalisation of the luminance of ``x`` ``(B, 3, H, W)`` in [0, 1] -> same, in [0, 1].

    The luminance is quantised to 256 levels; level ``v`` maps to ``(cdf(v) - cdf_min) / (N - cdf_min)``
    (the classic formula, ``N`` pixels, ``cdf_min`` the count of the darkest level present), so the output
    levels spread over [0, 1] with a roughly flat histogram. Colours are kept by ratio.
    """
    x = check_rgb(x)
    y = luminance(x)
    b = x.shape[0]
    q = _quantise(y).flatten(1)  # (B, N)
    n = q.shape[1]
    hist = torch.zeros(b, _BINS, dtype=torch.float64, device=x.device)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
    cdf = hist.cumsum(dim=1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(n))).amin(dim=1, keepdim=True)
    lut = ((cdf - cdf_min) / (n - cdf_min).clamp_min(1.0)).clamp(0.0, 1.0)
    y_new = torch.gather(lut, 1, q).view_as(y).to(x.dtype)
    return _apply_by_ratio(x, y, y_new)


def _clahe_luma(y: torch.Tensor, tiles: tuple[int, int], clip_limit: float) -> torch.Tensor:
    """CLAHE of ``y`` ``(B, 1, H, W)`` in [0, 1] -> same. See :func:`clahe`."""
    b, _, h, w = y.shape
    ty, tx = tiles
    # pad (reflect) to whole tiles, as OpenCV does; the tile statistics include the padding
    th, tw = math.ceil(h / ty), math.ceil(w / tx)
    pad_h, pad_w = th * ty - h, tw * tx - w
    q = _quantise(y)
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        q_pad = F.pad(q.double(), (0, pad_w, 0, pad_h), mode=mode).long()
    else:
        q_pad = q
    area = th * tw
    # per-tile histograms: (B, ty, tx, 256)
    blocks = q_pad.view(b, ty, th, tx, tw).permute(0, 1, 3, 2, 4).reshape(b, ty * tx, area)
    hist = torch.zeros(b, ty * tx, _BINS, dtype=torch.float64, device=y.device)
    hist.scatter_add_(2, blocks, torch.ones_like(blocks, dtype=torch.float64))
    # clip and redistribute the excess uniformly over all bins (OpenCV: limit = clip * area / 256, >= 1)
    limit = max(clip_limit * area / _BINS, 1.0)
    excess = (hist - limit).clamp_min(0).sum(dim=2, keepdim=True)
    hist = hist.clamp_max(limit) + excess / _BINS
    lut = (hist.cumsum(dim=2) / area).clamp(0.0, 1.0).view(b, ty * tx * _BINS)
    # bilinear interpolation between the mappings of the four nearest tile centres
    gy = (torch.arange(h, device=y.device, dtype=torch.float64) + 0.5) / th - 0.5
    gx = (torch.arange(w, device=y.device, dtype=torch.float64) + 0.5) / tw - 0.5
    y0 = gy.floor().clamp(0, ty - 1)
    x0 = gx.floor().clamp(0, tx - 1)
    wy = (gy - y0).clamp(0, 1).view(1, h, 1)
    wx = (gx - x0).clamp(0, 1).view(1, 1, w)
    y0, x0 = y0.long(), x0.long()
    y1, x1 = (y0 + 1).clamp_max(ty - 1), (x0 + 1).clamp_max(tx - 1)
    qf = q.view(b, h, w)

    def pick(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        tile = (yy.view(h, 1) * tx + xx.view(1, w)).unsqueeze(0)  # (1, h, w)
        idx = (tile * _BINS + qf).view(b, -1)
        return torch.gather(lut, 1, idx).view(b, h, w)

    top = pick(y0, x0) * (1 - wx) + pick(y0, x1) * wx
    bottom = pick(y1, x0) * (1 - wx) + pick(y1, x1) * wx
    return (top * (1 - wy) + bottom * wy).view(b, 1, h, w).to(y.dtype)


def clahe(x: torch.Tensor, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """CLAHE on the luminance of ``x`` ``(B, 3, H, W)`` in [0, 1] -> same shape, in [0, 1].

    As OpenCV ``createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))`` (re-implemented here, not called): the
    8-bit luminance is cut into ``tiles`` (rows, columns) tiles (the image reflect-padded to whole tiles); each
    tile's 256-bin histogram is clipped at ``clip_limit * tile_area / 256`` and the clipped excess spread
    evenly over all bins, so the slope of a tile's mapping is at most ``(clip_limit + 1)`` times that of a
    flat histogram; the mapping is the normalised cumulative histogram; each pixel's value is the bilinear
    interpolation of the mappings of the four nearest tile centres (nearest at the borders). Colours are kept
    by ratio. (OpenCV spreads the integer excess with a remainder step and rounds the mapping to 8 bits; this
    version keeps fractions, so values may differ by about one grey level.)
    """
    x = check_rgb(x)
    if clip_limit <= 0:
        raise ValueError(f"clip_limit must be positive, got {clip_limit}")
    h, w = x.shape[-2:]
    ty, tx = min(tiles[0], h), min(tiles[1], w)
    y = luminance(x)
    return _apply_by_ratio(x, y, _clahe_luma(y, (ty, tx), clip_limit))


# ----------------------------------------------------------------------------------------------- LIME


def _dx(t: torch.Tensor) -> torch.Tensor:
    """Forward difference along width, 0 at the last column (Neumann border)."""
    return F.pad(t[..., :, 1:] - t[..., :, :-1], (0, 1))


def _dy(t: torch.Tensor) -> torch.Tensor:
    return F.pad(t[..., 1:, :] - t[..., :-1, :], (0, 0, 0, 1))


def _dxt(v: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_dx` (for ``v`` whose last column is 0)."""
    v = v[..., :, :-1]
    return F.pad(v, (1, 0)) - F.pad(v, (0, 1))


def _dyt(v: torch.Tensor) -> torch.Tensor:
    v = v[..., :-1, :]
    return F.pad(v, (0, 0, 1, 0)) - F.pad(v, (0, 0, 0, 1))


def _gaussian_blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``t`` ``(B, 1, H, W)`` with replicate borders (radius 3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    k = torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = k / k.sum()
    t = F.conv2d(F.pad(t, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(t, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def _lime_weights(t0: torch.Tensor, sigma: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """LIME weights (strategy III, sped-up form) ``W_d / (|grad_d T0| + eps)`` for d = x, y."""
    weights = []
    for grad in (_dx(t0), _dy(t0)):
        # sum_y G(x, y) / (|sum_y G(x, y) grad(y)| + eps) with a normalised Gaussian G
        w = 1.0 / (_gaussian_blur(grad, sigma).abs() + eps)
        weights.append(w / (grad.abs() + eps))
    wx, wy = weights
    # no coupling across the border (the differences there are 0 anyway)
    wx[..., :, -1] = 0
    wy[..., -1, :] = 0
    return wx, wy


def _pcg(
    t0: torch.Tensor, init: torch.Tensor, alpha: float, sigma: float, eps: float, iterations: int, tol: float
) -> torch.Tensor:
    """Solve ``(I + alpha sum_d D_d^T diag(w_d) D_d) t = t0`` by Jacobi-preconditioned conjugate gradients."""
    wx, wy = _lime_weights(t0, sigma, eps)
    wx, wy = alpha * wx, alpha * wy

    def apply(t: torch.Tensor) -> torch.Tensor:
        return t + _dxt(wx * _dx(t)) + _dyt(wy * _dy(t))

    # diagonal of the operator: 1 + the weights of the (up to four) differences touching each pixel
    diag = 1 + wx + F.pad(wx[..., :, :-1], (1, 0)) + wy + F.pad(wy[..., :-1, :], (0, 0, 1, 0))
    dims = (1, 2, 3)
    t = init.clone()
    r = t0 - apply(t)
    z = r / diag
    p = z.clone()
    rz = (r * z).sum(dim=dims, keepdim=True)
    norm0 = (t0 * t0).sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)
    for _ in range(iterations):
        ap = apply(p)
        step = rz / (p * ap).sum(dim=dims, keepdim=True).clamp_min(1e-30)
        t = t + step * p
        r = r - step * ap
        if tol > 0 and bool(((r * r).sum(dim=dims, keepdim=True).sqrt() / norm0 <= tol).all()):
            break
        z = r / diag
        rz_new = (r * z).sum(dim=dims, keepdim=True)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return t


def _refine_illumination(
    t0: torch.Tensor, alpha: float, sigma: float, eps: float, iterations: int, tol: float, levels: int = 3
) -> torch.Tensor:
    """LIME refinement of ``t0`` ``(B, 1, H, W)``: PCG warm-started from the same problem solved on ``t0``
    halved ``levels`` times (coarse to fine), since plain PCG moves information only a few pixels per step."""
    if levels > 0 and min(t0.shape[-2:]) >= 64:
        coarse = _refine_illumination(
            F.avg_pool2d(t0, 2, ceil_mode=True), alpha, sigma, eps, iterations, tol, levels - 1
        )
        init = F.interpolate(coarse, size=t0.shape[-2:], mode="bilinear", align_corners=False)
    else:
        init = t0
    return _pcg(t0, init, alpha, sigma, eps, iterations, tol)


def lime(
    x: torch.Tensor,
    alpha: float = 0.15,
    sigma: float = 2.0,
    gamma: float = 0.8,
    eps: float = 1e-3,
    floor: float = 0.02,
    iterations: int = 60,
    tol: float = 1e-4,
) -> torch.Tensor:
    """LIME-style enhancement of ``x`` ``(B, 3, H, W)`` in [0, 1] -> same shape, in [0, 1].

    Guo, Li & Ling, "LIME: Low-light image enhancement via illumination map estimation", TIP 2017:

    1. initial illumination ``T0 = max_c I_c``;
    2. structure-aware refinement, LIME's sped-up solver: minimise
       ``||T - T0||^2 + alpha sum_{d in x,y} sum_p w_d(p) (D_d T)(p)^2`` with the strategy-III weights
       ``w_d = [1 / (|G_sigma * D_d T0| + eps)] / (|D_d T0| + eps)`` (Gaussian ``sigma``), i.e. the sparse
       linear system ``(I + alpha sum_d D_d^T W_d D_d) T = T0``, solved here matrix-free by Jacobi-
       preconditioned conjugate gradients instead of a direct sparse solver, so it runs in torch on any device
       in a fraction of a second: coarse to fine over up to 3 halvings, at most ``iterations`` steps per level
       (or until the relative residual is below ``tol``). The system is badly conditioned (huge weights in flat
       areas), so this is an approximation of the exact minimiser, smooth and edge-aware all the same;
    3. ``T <- max(T, floor) ** gamma`` (gamma 0.8 keeps some darkness, as in the paper);
    4. ``R = I / T``, clipped to [0, 1]. LIME's optional BM3D denoising is not done.

    Where ``T0`` is near 1 (a bright image) ``T`` stays near 1 and the image is nearly unchanged. Computed
    in float32 (float64 input stays float64).
    """
    x = check_rgb(x)
    work = x if x.dtype == torch.float64 else x.float()
    t0 = work.amax(dim=1, keepdim=True).clamp(0.0, 1.0)
    t = _refine_illumination(t0, alpha, sigma, eps, iterations, tol)
    t = t.clamp(floor, 1.0) ** gamma
    return (work / t).clamp(0.0, 1.0).to(x.dtype)


BASELINES = {
    "identity": identity,
    "gamma": gamma_correction,
    "histeq": histeq,
    "clahe": clahe,
    "lime": lime,
}
"""The classical baselines by name (default parameters)."""
