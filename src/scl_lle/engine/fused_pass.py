"""The fast path's fused upsample-and-curves pass (``scale > 1``), and which kernel runs it.

All three give :func:`scl_lle.core.curves.apply_upsampled_curves`'s result, to float rounding:

- **eager PyTorch**, band by band (always there). Each of its ~100 operations per pixel streams the band
  through memory, so it costs about 0.1 s per megapixel on a 2-core CPU;
- **torch.compile** of one band (:func:`~scl_lle.core.curves.upsampled_curves_band`), with ``compile=True``;
- **a numba loop** (:func:`curves_rows`, ``pip install 'scl-lle[fast]'``): every pixel is read once, taken
  through the eight curves in registers and written once (at 12 MP the pass with its reading and writing took
  0.36 s instead of 1.21 s: docs/PERFORMANCE.md). It is used on the CPU in float32 wherever the picture's width
  is an exact multiple of the scale (camera sizes such as 4000x3000 and 4032x3024 at scale 8 are): the bilinear
  column taps then repeat every ``scale`` columns, and the loop runs over one phase of the period at a time, so
  that it vectorises. numba compiles it on first use and caches it: a few seconds once per machine, then about a
  second in each process that uses it. One picture repays that from about 14 megapixels on, two from about 7, so
  it is used from 8 megapixels on (:data:`NUMBA_MIN_PIXELS`); smaller pictures keep the eager pass, and a
  picture's result does not depend on what the process did before. ``SCL_LLE_NUMBA=0`` turns it off.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..core.curves import apply_upsampled_curves, bilinear_taps, upsampled_curves_band

__all__ = ["NUMBA_ENV", "NUMBA_MIN_PIXELS", "curves_rows", "numba_available", "upsampled_curves"]

#: Environment variable that turns the numba kernel off when set to ``0``.
NUMBA_ENV = "SCL_LLE_NUMBA"
#: Smallest picture (height x width) the numba kernel is used for. Loading it costs about a second per process
#: and it saves about 0.08 s per megapixel on a 2-core CPU: below this, even a batch hardly repays it.
NUMBA_MIN_PIXELS = 8_000_000

_lock = threading.Lock()
_compiled_band: Callable[..., torch.Tensor] | None = None
_numba_rows: Callable[..., None] | None = None
_numba_failed = False


def numba_available() -> bool:
    """Whether the numba kernel can run here: numba installed and not turned off by ``SCL_LLE_NUMBA=0``."""
    return os.environ.get(NUMBA_ENV, "1") != "0" and importlib.util.find_spec("numba") is not None


def curves_rows(
    x: np.ndarray,
    small: np.ndarray,
    y_low: np.ndarray,
    y_high: np.ndarray,
    y_w_low: np.ndarray,
    y_w_high: np.ndarray,
    scale: int,
    out: np.ndarray,
) -> None:
    """The numba kernel's loop (plain Python and NumPy; numba compiles it): upsample and apply, row by row.

    Args:
        x: ``(3, h, W)`` float32, the rows of one image; ``W == scale * sw``.
        small: ``(3n, sh, sw)`` float32 curve maps at low resolution.
        y_low, y_high, y_w_low, y_w_high: ``(h,)`` source rows (int64) and weights (float32) of each row of ``x``
            (:func:`~scl_lle.core.curves.bilinear_taps`).
        scale: the upsampling factor along the width.
        out: ``(3, h, W)`` float32, the result (may be ``x``).
    """
    maps, _, low_width = small.shape
    rows = np.empty((maps, low_width + 2), dtype=np.float32)  # one output row's maps, edges repeated
    steps = np.empty((maps, low_width + 1), dtype=np.float32)  # differences of neighbouring columns
    value = np.empty(low_width, dtype=np.float32)
    r = np.empty(low_width, dtype=np.float32)
    shift = np.empty(scale, dtype=np.int64)
    fraction = np.empty(scale, dtype=np.float32)
    for phase in range(scale):  # column k * scale + phase sits at low-res position k + (phase + 0.5) / scale - 0.5
        centre = (phase + 0.5) / scale
        shift[phase] = 1 if centre >= 0.5 else 0
        fraction[phase] = centre - 0.5 + 1 - shift[phase]
    for y in range(x.shape[1]):
        a, b, wa, wb = y_low[y], y_high[y], y_w_low[y], y_w_high[y]
        for m in range(maps):
            for k in range(low_width):
                rows[m, k + 1] = small[m, a, k] * wa + small[m, b, k] * wb
            rows[m, 0] = rows[m, 1]
            rows[m, low_width + 1] = rows[m, low_width]
            for k in range(low_width + 1):
                steps[m, k] = rows[m, k + 1] - rows[m, k]
        for c in range(3):
            for phase in range(scale):
                s, f = shift[phase], fraction[phase]
                for k in range(low_width):
                    value[k] = x[c, y, k * scale + phase]
                for i in range(maps // 3):
                    start, step = rows[3 * i + c, s : s + low_width], steps[3 * i + c, s : s + low_width]
                    for k in range(low_width):
                        r[k] = start[k] + f * step[k]
                    for k in range(low_width):
                        v = value[k]
                        value[k] = v + r[k] * (v * v - v)
                for k in range(low_width):
                    out[c, y, k * scale + phase] = value[k]


def _numba_kernel() -> Callable[..., None] | None:
    """The compiled loop, compiled or loaded from numba's cache on first use; ``None`` if numba cannot (a warning
    says why, once, and the eager pass serves from then on)."""
    global _numba_rows, _numba_failed
    with _lock:
        if _numba_rows is None and not _numba_failed:
            try:
                _numba_rows = _compile_numba(cache=True)
            except Exception:  # nowhere to write numba's cache (read-only install, no home): compile per process
                try:
                    _numba_rows = _compile_numba(cache=False)
                except Exception as error:  # a numba that does not fit this numpy or platform: eager still works
                    _numba_failed = True
                    message = f"numba kernel unavailable ({type(error).__name__}: {error}); eager pass"
                    warnings.warn(message, stacklevel=2)
        return _numba_rows


def _compile_numba(cache: bool) -> Callable[..., None]:
    import numba

    kernel = numba.njit(nogil=True, cache=cache, boundscheck=False, error_model="numpy")(curves_rows)
    one = np.zeros(1, dtype=np.int64)
    pixels = np.zeros((3, 1, 2), dtype=np.float32)
    maps = np.zeros((3, 1, 1), dtype=np.float32)
    kernel(pixels, maps, one, one, one.astype(np.float32), one.astype(np.float32), 2, pixels)  # compiles it now
    return kernel


def _compiled_band_kernel() -> Callable[..., torch.Tensor]:
    global _compiled_band
    with _lock:
        if _compiled_band is None:
            _compiled_band = torch.compile(upsampled_curves_band, dynamic=True)
        return _compiled_band


def _numba_fits(image: torch.Tensor, small_maps: torch.Tensor, size: tuple[int, int]) -> bool:
    height, width = size
    return (
        height * width >= NUMBA_MIN_PIXELS
        and image.device.type == "cpu"
        and image.dtype == torch.float32
        and image.shape[-1] == width
        and width % small_maps.shape[-1] == 0
        and numba_available()
    )


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
        ``(B, 3, h, w)``, a new tensor (not clamped).
    """
    height, width = size
    kernel = _numba_kernel() if not compiled and _numba_fits(image, small_maps, size) else None
    if kernel is None:
        band_kernel = _compiled_band_kernel() if compiled else None
        return apply_upsampled_curves(image, small_maps, size, region, band_kernel=band_kernel)
    top, _, bottom, _ = region
    sh, sw = small_maps.shape[-2:]
    y_low, y_high, y_w_low, y_w_high = bilinear_taps(torch.arange(top, bottom), height, sh, image.device, image.dtype)
    taps = (y_low.numpy(), y_high.numpy(), y_w_low.numpy(), y_w_high.numpy())
    x = image.contiguous()
    small = small_maps.to(torch.float32).contiguous()
    out = torch.empty_like(x)
    for index in range(x.shape[0]):
        kernel(x[index].numpy(), small[index].numpy(), *taps, width // sw, out[index].numpy())
    return out
