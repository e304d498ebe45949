"""The light-enhancement curves of DCE-Net, as pure tensor functions (no network, no package imports).

A curve map ``r`` in [-1, 1] (per pixel and channel) is applied as the quadratic curve ``x <- x + r * (x^2 - x)``,
which maps [0, 1] onto [0, 1]; DCE-Net predicts ``n`` maps of 3 channels (``(B, 3 * n, H, W)``), applied first to
last. With ``scale > 1`` the maps are estimated on a shrunk image (:func:`downsample`) and upsampled bilinearly
(:func:`upsample_maps`), or upsampled and applied fused, band by band (:func:`apply_upsampled_curves`), so that no
full-resolution ``3 * n``-channel maps are made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "BAND_BYTES",
    "CurveTaps",
    "apply_curves",
    "apply_curves_into",
    "apply_upsampled_curves",
    "bilinear_taps",
    "curve_taps",
    "downsample",
    "sample_maps",
    "upsample_maps",
    "upsampled_curves_band",
]


def apply_curves(image: torch.Tensor, curve_maps: torch.Tensor) -> torch.Tensor:
    """Apply the light-enhancement curves in order.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].
        curve_maps: ``(B, 3 * n, H, W)`` in [-1, 1]: ``n`` curve maps of 3 channels, applied first to last.

    Returns:
        ``(B, 3, H, W)`` in [0, 1], the same dtype as ``image``.
    """
    if curve_maps.shape[1] % 3 or curve_maps.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"curve maps of shape {tuple(curve_maps.shape)} do not fit an image of shape {tuple(image.shape)}"
        )
    x = image
    for r in torch.split(curve_maps, 3, dim=1):
        x = x + r * (x * x - x)
    return x


def apply_curves_into(
    out: torch.Tensor,
    image: torch.Tensor,
    curve_maps: torch.Tensor,
    gain: float | None = None,
    band_rows: int | None = None,
) -> None:
    """``out[:] = apply_curves(image, clip(gain * curve_maps, -1, 1))``, in place: the engine's and the web
    preview's form (one 3-channel temporary per curve, no scaled copy of the maps).

    Args:
        out, image: ``(B, 3, H, W)`` in [0, 1] (``out`` may be ``image``).
        curve_maps: ``(B, 3 * n, H, W)`` in [-1, 1].
        gain: the exposure gain on every map, each product clipped to [-1, 1]
            (:func:`scl_lle.engine.exposure.scale_maps`); ``None``: the maps as they are.
        band_rows: rows done through all curves at a time (on the CPU a band of about 64k pixels stays in the
            cache); ``None``: the whole height at once.
    """
    out.copy_(image)
    height = out.shape[-2]
    rows = band_rows or height
    for top in range(0, height, rows):
        band = out[..., top : top + rows, :]
        for i in range(curve_maps.shape[1] // 3):
            r = curve_maps[:, 3 * i : 3 * i + 3, top : top + rows]
            if gain is not None:
                r = torch.mul(r, gain).clamp_(-1.0, 1.0)
            band.add_(torch.mul(band, band).sub_(band).mul_(r))


def bilinear_taps(
    indices: torch.Tensor, out_size: int, in_size: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of bilinear upsampling ``in_size -> out_size`` for the outputs ``indices``.

    The same positions as ``F.interpolate(mode="bilinear", align_corners=False)``: source = (i + 0.5) * in / out
    - 0.5, clamped at 0; the upper neighbour is clamped at the last index. Computed in float64 from absolute
    indices, so any region of the output gets exactly the values it has in the whole.
    """
    pos = ((indices.to(torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp_(min=0)
    low = pos.floor().clamp_(max=in_size - 1)
    frac = pos - low
    low = low.long()
    high = (low + 1).clamp_(max=in_size - 1)
    return (
        low.to(device),
        high.to(device),
        (1 - frac).to(device=device, dtype=dtype),
        frac.to(device=device, dtype=dtype),
    )


def sample_maps(small_maps: torch.Tensor, size: tuple[int, int], step: int) -> torch.Tensor:
    """The upsampled curve maps at every ``step``-th pixel of the full resolution, without upsampling them all.

    Args:
        small_maps: ``(B, C, sh, sw)``, maps estimated on the image shrunk to ``(sh, sw)``.
        size: ``(H, W)``, the full resolution.
        step: the sampling step (pixels ``0, step, 2 step, ...`` in each direction).

    Returns:
        ``(B, C, ceil(H / step), ceil(W / step))``: ``upsample_maps(small_maps, size)[..., ::step, ::step]`` (to
        float rounding), the maps the curves apply at the pixels a strided thumbnail holds.
    """
    height, width = size
    sh, sw = small_maps.shape[-2:]
    device, dtype = small_maps.device, small_maps.dtype
    y_low, y_high, y_w0, y_w1 = bilinear_taps(torch.arange(0, height, step), height, sh, device, dtype)
    x_low, x_high, x_w0, x_w1 = bilinear_taps(torch.arange(0, width, step), width, sw, device, dtype)
    rows = small_maps.index_select(2, y_low) * y_w0[:, None] + small_maps.index_select(2, y_high) * y_w1[:, None]
    return rows.index_select(3, x_low) * x_w0 + rows.index_select(3, x_high) * x_w1


#: Bytes of widened curve maps one band holds on the CPU: the band is sized to stay in a core's cache.
BAND_BYTES = 2 * 2**20


def apply_upsampled_curves(
    image: torch.Tensor,
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
    band: int | None = None,
    band_kernel: Callable[..., torch.Tensor] | None = None,
    *,
    out: torch.Tensor | None = None,
    clamp: bool = False,
) -> torch.Tensor:
    """Upsample low-resolution curve maps bilinearly and apply them, fused: the fast path of ``scale > 1``.

    Equal (to float rounding) to ``apply_curves(image, upsample_maps(small_maps, size, region))``, without
    materialising the full-resolution ``3 * n``-channel maps: the rows are interpolated once at low width, then
    the image is processed in bands of ``band`` rows; each band's maps are widened in one operation (linear
    interpolation along the full width, then cut to the region) and its eight curves applied while it is in
    cache. Peak extra memory is a band's widened maps instead of ``3 * n`` full-resolution planes.

    Args:
        image: ``(B, 3, h, w)``, the pixels of ``region`` (or of the whole image) in [0, 1].
        small_maps: ``(B, 3 * n, sh, sw)``, curve maps estimated on the image shrunk to ``(sh, sw)``.
        size: ``(H, W)``, the full resolution the maps are upsampled to.
        region: ``(top, left, bottom, right)`` of the full image that ``image`` holds; ``None``: all of it.
            Full-width regions cost least (the widening always covers the full width).
        band: rows per band; any value gives the same result. ``None``: on the CPU as many rows as fit
            :data:`BAND_BYTES` of widened maps, elsewhere the whole region (a GPU would pay a kernel launch per
            operation and band).
        band_kernel: ``None`` (eager, in place), or a compiled :func:`upsampled_curves_band`.
        out: write the result here (the shape of ``image``) instead of a new tensor.
        clamp: clamp the result to [0, 1] band by band (while it is in cache).

    Returns:
        ``(B, 3, h, w)``, the enhanced pixels (``out`` if given; clamped only with ``clamp``).
    """
    height, width = size
    top, left, bottom, right = region if region is not None else (0, 0, height, width)
    if small_maps.shape[1] % 3 or image.shape[-2:] != (bottom - top, right - left):
        raise ValueError(
            f"curve maps of shape {tuple(small_maps.shape)} and an image of shape {tuple(image.shape)} "
            f"do not fit the region {(top, left, bottom, right)} of {size}"
        )
    taps = curve_taps(small_maps, size, region, device=image.device, dtype=image.dtype)
    if out is None:
        out = torch.empty(image.shape, dtype=image.dtype, device=image.device)
    band = _band_rows(band, image, small_maps.shape[1] * width)
    for b0 in range(0, image.shape[-2], band):
        b1 = min(b0 + band, image.shape[-2])
        if band_kernel is None:
            x = out[..., b0:b1, :]
            x.copy_(image[..., b0:b1, :])
            _apply_band_in_place(x, taps.rows[..., b0:b1, :], width, left)
        else:
            out[..., b0:b1, :] = band_kernel(
                image[..., b0:b1, :], taps.rows[..., b0:b1, :], taps.low, taps.high, taps.w_low, taps.w_high
            )
        if clamp:
            out[..., b0:b1, :].clamp_(0.0, 1.0)
    return out


def _band_rows(band: int | None, image: torch.Tensor, row_values: int) -> int:
    """Rows per band of :func:`apply_upsampled_curves`: ``band``, or (``None``) on the CPU as many rows of
    ``row_values`` widened map values as fit :data:`BAND_BYTES`, elsewhere all the rows of ``image``."""
    if band is None:
        row_bytes = row_values * image.element_size()
        band = max(1, BAND_BYTES // row_bytes) if image.device.type == "cpu" else image.shape[-2]
    return max(int(band), 1)


class CurveTaps(NamedTuple):
    """Curve maps interpolated along rows for one region, and the column taps that finish the upsampling."""

    rows: torch.Tensor  # (B, 3n, h, sw): the maps at the region's rows, still at low width
    low: torch.Tensor  # (w,) left source column of each output column
    high: torch.Tensor  # (w,) right source column
    w_low: torch.Tensor  # (w,) weight of the left column
    w_high: torch.Tensor  # (w,) weight of the right column


def curve_taps(
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> CurveTaps:
    """Row-interpolated low-resolution maps and column taps for the bilinear upsampling of ``region``."""
    height, width = size
    top, left, bottom, right = region if region is not None else (0, 0, height, width)
    device = small_maps.device if device is None else device
    dtype = small_maps.dtype if dtype is None else dtype
    small = small_maps.to(device=device, dtype=dtype).contiguous()
    sh, sw = small.shape[-2:]
    y_low, y_high, y_w0, y_w1 = bilinear_taps(torch.arange(top, bottom), height, sh, device, dtype)
    x_low, x_high, x_w0, x_w1 = bilinear_taps(torch.arange(left, right), width, sw, device, dtype)
    rows = small.index_select(2, y_low).mul_(y_w0[:, None]).add_(small.index_select(2, y_high).mul_(y_w1[:, None]))
    return CurveTaps(rows, x_low, x_high, x_w0, x_w1)


def _apply_band_in_place(x: torch.Tensor, rows: torch.Tensor, width: int, left: int) -> None:
    """Apply the curves of ``rows`` ``(B, 3n, b, sw)`` (maps at the band's rows, low width) to ``x`` ``(B, 3, b, w)``
    in place: the maps are widened to ``width`` in one linear interpolation (the column positions of
    :func:`bilinear_taps`), cut to the columns ``left : left + w``, and applied curve by curve."""
    batch, channels, n, low_width = rows.shape
    wide = F.interpolate(rows.reshape(batch, channels * n, low_width), size=width, mode="linear", align_corners=False)
    wide = wide.view(batch, channels, n, width)[..., left : left + x.shape[-1]]
    for i in range(channels // 3):
        x.addcmul_(torch.mul(x, x).sub_(x), wide[:, 3 * i : 3 * i + 3])  # x <- x + r * (x^2 - x), in place


def upsampled_curves_band(
    x: torch.Tensor,
    rows: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    w_low: torch.Tensor,
    w_high: torch.Tensor,
) -> torch.Tensor:
    """Pure (out-of-place) form of one band of :func:`apply_upsampled_curves`, written for ``torch.compile``.

    Compiled, the column gathers and the eight curve updates fuse into one loop over the band's pixels.
    """
    for i in range(rows.shape[1] // 3):
        rows_i = rows[:, 3 * i : 3 * i + 3]
        r = rows_i[..., low] * w_low + rows_i[..., high] * w_high
        x = x + r * (x * x - x)
    return x


def downsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Shrink ``(B, C, H, W)`` by ``scale`` (area average) to ``(B, C, ceil(H/scale), ceil(W/scale))``."""
    if scale == 1:
        return image
    h, w = image.shape[-2:]
    size = (-(-h // scale), -(-w // scale))
    return F.interpolate(image, size=size, mode="area")


def upsample_maps(
    maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Bilinearly upsample low-resolution curve maps to ``size`` (half-pixel centres, edges clamped).

    Args:
        maps: ``(B, C, h, w)`` curve maps estimated on a downscaled image.
        size: ``(H, W)``, the full resolution.
        region: ``(top, left, bottom, right)`` of the full-resolution result to produce, or ``None`` for all of
            it. Producing the whole image region by region gives the same values as producing it at once, so
            large images can be processed in tiles.

    Returns:
        ``(B, C, bottom - top, right - left)``.
    """
    height, width = size
    if region is None or region == (0, 0, height, width):
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    top, left, bottom, right = region
    # Normalised sampling positions equal to F.interpolate(align_corners=False) on the whole image.
    ys = (2 * torch.arange(top, bottom, device=maps.device, dtype=maps.dtype) + 1) / height - 1
    xs = (2 * torch.arange(left, right, device=maps.device, dtype=maps.dtype) + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((grid_x, grid_y), dim=-1).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
