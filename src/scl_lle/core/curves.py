"""The light-enhancement curves of DCE-Net, as pure tensor functions (no network, no package imports).

A curve map ``r`` in [-1, 1] (per pixel and channel) is applied as the quadratic curve ``x <- x + r * (x^2 - x)``,
which maps [0, 1] onto [0, 1]; DCE-Net predicts ``n`` maps of 3 channels (``(B, 3 * n, H, W)``), applied first to
last. With ``scale > 1`` the maps are estimated on a shrunk image (:func:`downsample`) and upsampled bilinearly
(:func:`upsample_maps`), or upsampled and applied fused, block by block (:func:`apply_upsampled_curves`), so that no
full-resolution ``3 * n``-channel maps are made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "BLOCK_PIXELS",
    "DEVICE_BLOCK_VALUES",
    "BlockMaps",
    "CurveTaps",
    "apply_curves",
    "apply_curves_",
    "apply_curves_into",
    "apply_upsampled_curves",
    "bilinear_taps",
    "curve_taps",
    "downsample",
    "sample_maps",
    "upsample_maps",
    "upsampled_curves_band",
    "upsampled_map_blocks",
]


def apply_curves(image: torch.Tensor, curve_maps: torch.Tensor) -> torch.Tensor:
    """Apply the light-enhancement curves in order.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].
        curve_maps: ``(B, 3 * n, H, W)`` in [-1, 1]: ``n`` curve maps of 3 channels, applied first to last.

    Returns:
        ``(B, 3, H, W)`` in [0, 1], the same dtype as ``image`` (``curve_maps``' where it is wider). Where no
        autograd graph is kept, and the dtypes and batch sizes agree, the same operations run in place on one
        temporary: the same values to the bit.
    """
    if curve_maps.shape[1] % 3 or curve_maps.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"curve maps of shape {tuple(curve_maps.shape)} do not fit an image of shape {tuple(image.shape)}"
        )
    graph = torch.is_grad_enabled() and (image.requires_grad or curve_maps.requires_grad)
    fits = curve_maps.dtype == image.dtype and curve_maps.shape[0] == image.shape[0]
    if graph or not fits:
        x = image
        for r in torch.split(curve_maps, 3, dim=1):
            x = x + r * (x * x - x)
        return x
    # The same operations in place, on one temporary (the same values to the bit; no graph to keep)
    x, step = image.clone(), torch.empty_like(image)
    for r in torch.split(curve_maps, 3, dim=1):
        x.add_(torch.mul(x, x, out=step).sub_(x).mul_(r))
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
        maps = torch.split(curve_maps[..., top : top + rows, :], 3, dim=1)
        apply_curves_(out[..., top : top + rows, :], maps if gain is None else _scaled(maps, gain))


def _scaled(maps: Iterable[torch.Tensor], gain: float) -> Iterator[torch.Tensor]:
    for r in maps:
        yield torch.mul(r, gain).clamp_(-1.0, 1.0)


def apply_curves_(x: torch.Tensor, curves: Iterable[torch.Tensor]) -> torch.Tensor:
    """``x`` ``(B, 3, h, w)`` in [0, 1] through each curve map ``r`` of ``curves`` (``(B, 3, h, w)`` in [-1, 1],
    or broadcastable to it) in turn, in place: ``x <- x + r * (x^2 - x)`` as ``x.lerp_(x * x, r)``, two
    operations per curve. The engine's curve application for tiles, blocks and previews; returns ``x``.
    (:func:`apply_curves` rounds as the paper's form does; the two differ by float rounding.)"""
    for r in curves:
        x.lerp_(torch.mul(x, x), r)
    return x


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


#: Pixels of the picture one block of the CPU pass holds (with one curve's maps mixed for them at a time): a few
#: MiB in all, within a CPU's last-level cache, and large enough that each operation's fixed cost is small.
BLOCK_PIXELS = 65_536
#: Values of upsampled curve maps one block holds off the CPU (64 MiB in float32; twice that while a block's
#: two rows of maps are gathered): few kernel launches, and the memory bounded whatever the region's size.
DEVICE_BLOCK_VALUES = 2**24


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
    materialising the full-resolution ``3 * n``-channel maps. The upsampling is split in its two directions
    (:func:`curve_taps`): the few low-resolution rows the region needs are widened to its columns once, and each
    block of the image goes through the eight curves, each curve's maps mixed from two of those rows just before
    it is applied (:class:`BlockMaps`: three operations per curve, no buffer of all the maps). Output rows
    between the same two low-resolution rows (about ``scale`` of them) form one block on the CPU, cut into
    column pieces of about :data:`BLOCK_PIXELS` pixels, and their maps come from the two widened rows without a
    copy; off the CPU a block is as many full rows as :data:`DEVICE_BLOCK_VALUES` allows.

    Args:
        image: ``(B, 3, h, w)``, the pixels of ``region`` (or of the whole image) in [0, 1].
        small_maps: ``(B, 3 * n, sh, sw)``, curve maps estimated on the image shrunk to ``(sh, sw)``.
        size: ``(H, W)``, the full resolution the maps are upsampled to.
        region: ``(top, left, bottom, right)`` of the full image that ``image`` holds; ``None``: all of it.
        band: rows per block instead, full width; any value gives the same result. ``None``: as above.
        band_kernel: ``None`` (eager, in place), or a compiled :func:`upsampled_curves_band`.
        out: write the result here (the shape of ``image``) instead of a new tensor.
        clamp: clamp the result to [0, 1] block by block (while it is in cache).

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
    if out is None:
        out = torch.empty(image.shape, dtype=image.dtype, device=image.device)
    blocks = upsampled_map_blocks(small_maps, size, region, band, device=image.device, dtype=image.dtype)
    for rows, columns, maps in blocks:
        if band_kernel is None:
            x = out[..., rows, columns]
            apply_curves_(x.copy_(image[..., rows, columns]), maps.curves())
        else:
            out[..., rows, columns] = band_kernel(image[..., rows, columns], maps.full())
        if clamp:
            out[..., rows, columns].clamp_(0.0, 1.0)
    return out


def upsampled_map_blocks(
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
    band: int | None = None,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Iterator[tuple[slice, slice, BlockMaps]]:
    """The maps of :func:`upsample_maps` for ``region``, block by block (the blocks and ``band`` of
    :func:`apply_upsampled_curves`): ``(rows, columns, maps)``, ``maps`` those of the ``(b, c)`` pixels at those
    rows and columns of the region, on ``device`` in ``dtype`` (default: those of ``small_maps``)."""
    taps = curve_taps(small_maps, size, region, device=device, dtype=dtype)
    for rows, columns in _blocks(taps, band):
        yield rows, columns, taps.block(rows, columns)


def _blocks(taps: CurveTaps, band: int | None) -> Iterator[tuple[slice, slice]]:
    """``(rows, columns)`` of each block of :func:`upsampled_map_blocks`, in order."""
    height, width = taps.low.shape[0], taps.wide.shape[-1]
    if band is not None or taps.wide.device.type != "cpu":
        batch, channels = taps.wide.shape[:2]
        rows = max(int(band) if band is not None else DEVICE_BLOCK_VALUES // (batch * channels * width), 1)
        for top in range(0, height, rows):
            yield slice(top, min(top + rows, height)), slice(0, width)
        return
    low, high = taps.low.tolist(), taps.high.tolist()
    top = 0
    while top < height:
        stop = top + 1
        while stop < height and low[stop] == low[top] and high[stop] == high[top]:
            stop += 1
        columns = max(BLOCK_PIXELS // (stop - top), 1)
        for left in range(0, width, columns):
            yield slice(top, stop), slice(left, min(left + columns, width))
        top = stop


class BlockMaps(NamedTuple):
    """The upsampled curve maps of a block of ``b`` rows and ``c`` columns, as two rows of maps to mix: the maps
    at row ``i`` are ``lerp(upper, lower, weight[i])``."""

    upper: torch.Tensor  # (B, 3n, 1, c): the two low-resolution rows widened, where the block lies between them;
    lower: torch.Tensor  # or (B, 3n, b, c): each row's own pair (gathered)
    weight: torch.Tensor  # (b, 1): the lower row's weight

    def curves(self) -> Iterator[torch.Tensor]:
        """Each curve's maps ``(B, 3, b, c)``, first to last, mixed when asked for (one at a time in memory)."""
        for i in range(0, self.upper.shape[1], 3):
            yield torch.lerp(self.upper[:, i : i + 3], self.lower[:, i : i + 3], self.weight)

    def full(self) -> torch.Tensor:
        """All the maps ``(B, 3n, b, c)`` at once (for a compiled kernel)."""
        return torch.lerp(self.upper, self.lower, self.weight)


class CurveTaps(NamedTuple):
    """The bilinear upsampling of curve maps for one region, in its two directions (:func:`curve_taps`)."""

    wide: torch.Tensor  # (B, 3n, k, w): the low-resolution rows the region needs, widened to its columns
    low: torch.Tensor  # (h,) for each output row, the upper of its two rows in ``wide`` (long)
    high: torch.Tensor  # (h,) the lower of the two
    weight: torch.Tensor  # (h,) the lower row's weight

    def block(self, rows: slice, columns: slice) -> BlockMaps:
        """The maps of a block of rows and columns: where its rows lie between the same two low-resolution rows,
        those two widened rows (views, not copies); otherwise each row's two gathered."""
        low, high, weight = self.low[rows], self.high[rows], self.weight[rows, None]
        wide = self.wide[..., columns]
        upper, lower = int(low[0]), int(high[0])
        if upper == int(low[-1]) and lower == int(high[-1]):  # the same two rows for the block (they never go down)
            return BlockMaps(wide[..., upper : upper + 1, :], wide[..., lower : lower + 1, :], weight)
        return BlockMaps(wide.index_select(2, low), wide.index_select(2, high), weight)


def curve_taps(
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> CurveTaps:
    """The low-resolution rows that ``region`` (top, left, bottom, right; ``None``: all) of the maps upsampled
    to ``size`` needs, widened to its columns, and which two of them each of its rows mixes, with what weight
    (the positions of :func:`bilinear_taps`, so any region gets exactly the values it has in the whole). The
    rows are widened to the full width and then cut, so full-width regions cost least."""
    height, width = size
    top, left, bottom, right = region if region is not None else (0, 0, height, width)
    device = small_maps.device if device is None else device
    dtype = small_maps.dtype if dtype is None else dtype
    sh, sw = small_maps.shape[-2:]
    y_low, y_high, _, y_weight = bilinear_taps(torch.arange(top, bottom), height, sh, device, dtype)
    first, last = (int(y_low[0]), int(y_high[-1]) + 1) if len(y_low) else (0, 1)  # (an empty region: any row)
    rows = small_maps[..., first:last, :].to(device=device, dtype=dtype)
    batch, channels, count, _ = rows.shape
    # Always the full width, then cut: a column's values do not depend on the region (one linear interpolation
    # is also several times cheaper than gathering the columns).
    wide = F.interpolate(rows.reshape(batch, channels * count, sw), size=width, mode="linear", align_corners=False)
    wide = wide.view(batch, channels, count, width)[..., left:right]
    return CurveTaps(wide, y_low - first, y_high - first, y_weight)


def upsampled_curves_band(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Pure (out-of-place) form of one block of :func:`apply_upsampled_curves`, written for ``torch.compile``:
    ``x`` ``(B, 3, b, c)`` through the curves of ``maps`` ``(B, 3n, b, c)``. Compiled, the eight curve updates
    fuse into one loop over the pixels."""
    for i in range(maps.shape[1] // 3):
        r = maps[:, 3 * i : 3 * i + 3]
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
