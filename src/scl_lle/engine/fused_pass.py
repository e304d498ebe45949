"""The fast path's fused upsample-and-curves pass (``scale > 1``) and its shrink, and which kernel runs them.

All kernels give :func:`scl_lle.core.curves.apply_upsampled_curves`'s result, to float rounding:

- **eager PyTorch**, block by block (always there): three operations per curve and pixel (the curve's maps
  mixed from two widened low-resolution rows, then the curve) on a block of up to 64k pixels, and where the
  picture's own pixels can be read and written (:func:`upsampled_curves_into`) each block converted as it is read
  and written; on the 2-core CPU of docs/PERFORMANCE.md about 0.027 s per megapixel, 1.7 times the numba
  loops' time;
- **torch.compile** of one block (:func:`~scl_lle.core.curves.upsampled_curves_band`), with ``compile=True``;
- **numba loops** (``pip install 'scl-lle[fast]'``) on the CPU, reading the picture's own pixels (float32, uint8
  or uint16, planar or interleaved) and writing the result's, so neither needs a float copy of the picture:
  :func:`curves_rows` takes every pixel through the eight curves while it is in cache (the curve maps are widened
  once per low-resolution row into contiguous rows, so its inner loops vectorise for any width and scale), and
  :func:`area_rows` shrinks the picture for the network (``TileReader.downsample``). numba compiles them on first
  use and caches them: a few seconds once per machine and kind of picture, then about a second in each process
  that uses them, against a saving of a few hundredths of a second per megapixel (docs/PERFORMANCE.md). So they
  serve pictures of 8 megapixels and more (:data:`NUMBA_MIN_PIXELS`); smaller pictures keep the eager
  operations, and a picture's result does not depend on what the process did before. ``SCL_LLE_NUMBA=0`` turns
  them off.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..core.curves import (
    apply_curves_,
    apply_upsampled_curves,
    bilinear_taps,
    upsampled_curves_band,
    upsampled_map_blocks,
)
from ..io.pixels import from_unit, peak_value, to_unit

__all__ = [
    "KERNEL_DTYPES",
    "NUMBA_ENV",
    "NUMBA_MIN_PIXELS",
    "area_average_into",
    "area_rows",
    "curves_rows",
    "numba_available",
    "upsampled_curves",
    "upsampled_curves_into",
]

#: Environment variable that turns the numba kernel off when set to ``0``.
NUMBA_ENV = "SCL_LLE_NUMBA"
#: Smallest picture (height x width) the numba kernels are used for. Loading them costs about a second per
#: process, against a few hundredths of a second saved per megapixel on a 2-core CPU: below this, even a batch
#: hardly repays it.
NUMBA_MIN_PIXELS = 8_000_000
#: Pixel types the numba kernel and the eager pixel-to-pixel pass read and write directly.
KERNEL_DTYPES = (np.float32, np.uint8, np.uint16)
#: Columns taken through the curves at a time (a block stays in the first-level cache).
_BLOCK = 512

_lock = threading.Lock()
_compiled_band: Callable[..., torch.Tensor] | None = None
_kernels: dict[str, Callable[..., None]] = {}  # the numba loops compiled so far, by name
_numba_failed = False


def numba_available() -> bool:
    """Whether the numba kernel can run here: numba installed and not turned off by ``SCL_LLE_NUMBA=0``."""
    return os.environ.get(NUMBA_ENV, "1") != "0" and importlib.util.find_spec("numba") is not None


def curves_rows(
    src: np.ndarray,
    dst: np.ndarray,
    small: np.ndarray,
    y_low: np.ndarray,
    y_high: np.ndarray,
    y_w0: np.ndarray,
    y_w1: np.ndarray,
    x_low: np.ndarray,
    x_high: np.ndarray,
    x_w0: np.ndarray,
    x_w1: np.ndarray,
    peak_in: float,
    peak_out: float,
) -> None:
    """The numba kernel's loop (plain Python and NumPy; numba compiles it): upsample the maps and apply them.

    Long because it is one function for numba to compile and cache (helpers would be separate njit functions).

    Args:
        src: ``(3, h, w)`` pixels of one image, any strides: float32 (NaN read as 0, clipped to [0, 1]) or
            integers, divided by ``peak_in`` (1.0 for floats).
        dst: ``(3, h, w)``, any strides: the result clamped to [0, 1], times ``peak_out`` and rounded to the
            nearest integer unless ``peak_out`` is 1.0 (float results).
        small: ``(3n, sh, sw)`` float32 curve maps at low resolution.
        y_low, y_high, y_w0, y_w1: ``(h,)`` source rows (int64) and weights (float32) of the rows of ``src``;
            x_low, x_high, x_w0, x_w1: ``(w,)`` the same for its columns
            (:func:`~scl_lle.core.curves.bilinear_taps`).
    """
    maps = small.shape[0]
    height, width = src.shape[1], src.shape[2]
    upper = np.empty((maps, width), dtype=np.float32)  # the maps of low row y_low[y], widened to the full width
    lower = np.empty((maps, width), dtype=np.float32)  # ... and of low row y_high[y]
    value = np.empty(_BLOCK, dtype=np.float32)
    have_upper, have_lower = -1, -1
    for y in range(height):
        a, b, wa, wb = y_low[y], y_high[y], y_w0[y], y_w1[y]
        if a == have_lower and a != have_upper:  # moving down: the old lower row is the new upper one
            upper, lower = lower, upper
            have_upper, have_lower = have_lower, have_upper
        for row, wide, have in ((a, upper, have_upper), (b, lower, have_lower)):
            if row != have:
                for m in range(maps):
                    line, out = small[m, row], wide[m]
                    for j in range(width):
                        out[j] = line[x_low[j]] * x_w0[j] + line[x_high[j]] * x_w1[j]
        have_upper, have_lower = a, b
        for c in range(3):
            for k0 in range(0, width, _BLOCK):
                count = min(_BLOCK, width - k0)
                part, pixels = value[:count], src[c, y, k0 : k0 + count]
                for k in range(count):
                    v = np.float32(pixels[k]) / peak_in
                    part[k] = min(max(v, np.float32(0)), np.float32(1)) if v == v else np.float32(0)
                for m in range(c, maps, 3):
                    up, down = upper[m, k0 : k0 + count], lower[m, k0 : k0 + count]
                    for k in range(count):
                        r = up[k] * wa + down[k] * wb
                        v = part[k]
                        part[k] = v + r * (v * v - v)
                result = dst[c, y, k0 : k0 + count]
                for k in range(count):
                    v = min(max(part[k], np.float32(0)), np.float32(1))
                    result[k] = np.rint(v * peak_out) if peak_out != 1 else v


def area_rows(
    src: np.ndarray,
    out: np.ndarray,
    row_starts: np.ndarray,
    row_stops: np.ndarray,
    col_starts: np.ndarray,
    col_stops: np.ndarray,
    peak_in: float,
) -> None:
    """The numba loop of the shrink for the network: area averages of the picture's pixels, read as they are.

    Args:
        src: ``(3, h, W)`` the picture's rows ``row_starts[0]`` to ``row_stops[-1]``, any strides; read as
            :func:`curves_rows` reads them.
        out: ``(3, n, m)`` float32: ``out[c, i, k]`` is the mean of the pixels in rows ``row_starts[i]`` to
            ``row_stops[i]`` (absolute, exclusive) and columns ``col_starts[k]`` to ``col_stops[k]``: the bins
            of ``adaptive_avg_pool2d``, summed in float64.
    """
    width, first = src.shape[2], row_starts[0]
    sums = np.empty(width, dtype=np.float64)  # each column's sum over the rows of one output row
    for c in range(out.shape[0]):
        for i in range(out.shape[1]):
            sums[:] = 0.0
            for y in range(row_starts[i] - first, row_stops[i] - first):
                line = src[c, y]
                for j in range(width):
                    v = np.float32(line[j]) / peak_in
                    sums[j] += min(max(v, np.float32(0)), np.float32(1)) if v == v else np.float32(0)
            rows = row_stops[i] - row_starts[i]
            for k in range(out.shape[2]):
                total = 0.0
                for j in range(col_starts[k], col_stops[k]):
                    total += sums[j]
                out[c, i, k] = total / (rows * (col_stops[k] - col_starts[k]))


def _numba_kernel(loop: Callable[..., None]) -> Callable[..., None] | None:
    """``loop`` (:func:`curves_rows`, :func:`area_rows`) compiled by numba, or loaded from its cache, on first
    use; ``None`` if numba cannot (a warning says why, once, and the eager operations serve from then on)."""
    global _numba_failed
    with _lock:
        if loop.__name__ not in _kernels and not _numba_failed:
            try:
                _kernels[loop.__name__] = _compile_numba(loop, cache=True)
            except Exception:  # nowhere to write numba's cache (read-only install, no home): compile per process
                try:
                    _kernels[loop.__name__] = _compile_numba(loop, cache=False)
                except Exception as error:  # a numba that does not fit this numpy or platform: eager still works
                    _give_up(error)
        return _kernels.get(loop.__name__)


def _give_up(error: BaseException) -> None:
    global _numba_failed
    _kernels.clear()
    _numba_failed = True
    warnings.warn(f"numba kernel unavailable ({type(error).__name__}: {error}); eager pass", stacklevel=3)


def _compile_numba(loop: Callable[..., None], cache: bool) -> Callable[..., None]:
    """numba compiles on the first call, once for each kind of array it meets (pixel type, strides)."""
    import numba

    return numba.njit(nogil=True, cache=cache, boundscheck=False, error_model="numpy")(loop)


def _fits(size: tuple[int, int], device: torch.device, *dtypes: np.dtype) -> bool:
    """Whether the numba kernels serve a picture of ``size``: at least :data:`NUMBA_MIN_PIXELS`, work on the CPU
    (``device``), pixels they read and write (``dtypes``), numba installed and on."""
    return (
        size[0] * size[1] >= NUMBA_MIN_PIXELS
        and device.type == "cpu"
        and all(dtype in KERNEL_DTYPES for dtype in dtypes)
        and numba_available()
    )


def _call(loop: Callable[..., None], calls: list[tuple]) -> bool:
    """Run the compiled ``loop`` on each argument tuple; ``False`` (nothing usable written) if it cannot run."""
    kernel = _numba_kernel(loop)
    if kernel is None:
        return False
    try:
        for arguments in calls:
            kernel(*arguments)
    except Exception as error:  # a kind of picture numba could not compile for: eager still works
        with _lock:
            _give_up(error)
        return False
    return True


def _bins(size: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop (exclusive) of the ``count`` bins of ``adaptive_avg_pool`` over ``size`` elements."""
    index = np.arange(count)
    return (index * size) // count, -((-(index + 1) * size) // count)


def area_average_into(
    source: np.ndarray | None, out: torch.Tensor, size: tuple[int, int], rows: tuple[int, int]
) -> bool:
    """Rows ``rows`` (start, stop) of the area average of a whole picture, by the numba kernel, where it fits.

    Args:
        source: ``(B, 3, H, W)`` the picture's own pixels (as for :func:`upsampled_curves_into`); ``None``: not
            readable as such.
        out: ``(B, 3, n, m)`` float32 on the CPU, the shrunk picture: ``adaptive_avg_pool2d(unit(source), (n, m))``
            (``scl_lle.engine.tiling.TileReader.downsample``).
        size: ``(H, W)``.

    Returns:
        Whether the kernel wrote the rows (see :func:`upsampled_curves_into` for when it fits).
    """
    if source is None or out.dtype != torch.float32 or not _fits(size, out.device, source.dtype):
        return False
    (row_starts, row_stops), columns = _bins(size[0], out.shape[-2]), _bins(size[1], out.shape[-1])
    first, last = rows
    row_starts, row_stops = row_starts[first:last], row_stops[first:last]
    band = source[..., row_starts[0] : row_stops[-1], :]
    peak = np.float32(peak_value(source.dtype) or 1.0)
    target = out.numpy()[..., first:last, :]
    calls = [(band[b], target[b], row_starts, row_stops, *columns, peak) for b in range(source.shape[0])]
    return _call(area_rows, calls)


def _compiled_band_kernel() -> Callable[..., torch.Tensor]:
    global _compiled_band
    with _lock:
        if _compiled_band is None:
            _compiled_band = torch.compile(upsampled_curves_band, dynamic=True)
        return _compiled_band


def _run_kernel(
    source: np.ndarray,
    target: np.ndarray,
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int],
) -> bool:
    """Run the numba kernel image by image where it fits (see :func:`upsampled_curves_into`); ``False`` if not."""
    if not _fits(size, small_maps.device, source.dtype, target.dtype):
        return False
    (height, width), (top, left, bottom, right) = size, region
    sh, sw = small_maps.shape[-2:]
    cpu, f32 = torch.device("cpu"), torch.float32
    rows = [t.numpy() for t in bilinear_taps(torch.arange(top, bottom), height, sh, cpu, f32)]
    columns = [t.numpy() for t in bilinear_taps(torch.arange(left, right), width, sw, cpu, f32)]
    small = small_maps.to(torch.float32).contiguous().numpy()
    peaks = (np.float32(peak_value(source.dtype) or 1.0), np.float32(peak_value(target.dtype) or 1.0))
    calls = [(source[b], target[b], small[b], *rows, *columns, *peaks) for b in range(source.shape[0])]
    return _call(curves_rows, calls)


def upsampled_curves_into(
    source: np.ndarray | None,
    target: np.ndarray | None,
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int],
) -> bool:
    """The fused pass from a picture's pixels straight into the result's: the numba kernel where it fits, else
    the eager operations block by block, converting each block as they read and write it
    (:func:`~scl_lle.io.pixels.to_unit`, :func:`~scl_lle.io.pixels.from_unit`).

    Args:
        source: ``(B, 3, h, w)`` pixels of ``region`` (top, left, bottom, right) of a picture of ``size``
            ``(H, W)``, any strides: float32 in [0, 1] (NaN read as 0, out-of-range values clipped), uint8 or
            uint16; ``None``: not readable as such.
        target: ``(B, 3, h, w)`` where the result goes, clamped to [0, 1] and in ``target``'s pixel type
            (integers rounded); ``None``: not writable as such.
        small_maps: ``(B, 3n, sh, sw)`` curve maps in [-1, 1] at low resolution.

    Returns:
        Whether the result was written: by the numba kernel (installed and on, a picture of at least
        :data:`NUMBA_MIN_PIXELS`) or the eager operations (maps on the CPU, pixel types in
        :data:`KERNEL_DTYPES`, a writable source: float tensors are; decoded photos, which are read-only, and grey
        pictures read as three channels are not); if not, nothing was written and the caller takes the other path.
    """
    if source is None or target is None:
        return False
    if _run_kernel(source, target, small_maps, size, region):
        return True
    kinds_fit = source.dtype in KERNEL_DTYPES and target.dtype in KERNEL_DTYPES
    if small_maps.device.type != "cpu" or not (kinds_fit and source.flags.writeable):
        return False
    pixels, result = torch.from_numpy(source), torch.from_numpy(target)
    cpu, f32 = torch.device("cpu"), torch.float32
    for rows, columns, maps in upsampled_map_blocks(small_maps, size, region, device=cpu, dtype=f32):
        block = pixels[..., rows, columns]  # converted to and from floats while it is in cache
        # Interleaved pixels (H, W, 3) are gathered into planes first: the curves vectorise along rows.
        x = to_unit(block if block.stride(-1) == 1 else block.contiguous())
        apply_curves_(x, maps.curves())
        result[..., rows, columns] = from_unit(x.clamp_(0.0, 1.0), result.dtype)
    return True


def upsampled_curves(
    image: torch.Tensor,
    small_maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int],
    compiled: bool = False,
) -> torch.Tensor:
    """:func:`~scl_lle.core.curves.apply_upsampled_curves` of ``region`` by the best kernel there is.

    Args:
        image: ``(B, 3, h, w)`` in [0, 1], the pixels of ``region`` (top, left, bottom, right) of a picture of
            ``size`` ``(H, W)``.
        small_maps: ``(B, 3n, sh, sw)`` curve maps in [-1, 1] at low resolution.
        compiled: the ``torch.compile`` kernel (``Enhancer(compile=True)``) instead of numba or eager.

    Returns:
        ``(B, 3, h, w)``, a new tensor (clamped to [0, 1] by the numba kernel, not by the others).
    """
    if not compiled and image.dtype == torch.float32 and _fits(size, image.device, np.dtype(np.float32)):
        out = torch.empty(image.shape, dtype=image.dtype)
        if _run_kernel(image.detach().numpy(), out.numpy(), small_maps, size, region):
            return out
    band_kernel = _compiled_band_kernel() if compiled else None
    return apply_upsampled_curves(image, small_maps, size, region, band_kernel=band_kernel)
