"""Sample types of numpy pictures, without PyTorch: ``uint8``, ``uint16`` or ``float32`` in [0, 1].

The file readers and writers convert between them here (a writer stores what its format holds); the engine's
tile-by-tile conversion to [0, 1] floats is :mod:`scl_lle.io.pixels`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PEAKS", "as_dtype"]

#: The value that stands for 1.0 in integer samples of each type.
PEAKS: dict[np.dtype, int] = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


def as_dtype(array: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """``array`` (any shape; ``uint8``, ``uint16`` or float in [0, 1]) as integer samples of ``dtype``.

    Integers are rescaled exactly, rounded to nearest (``uint8`` -> ``uint16`` multiplies by 257); floats are
    clipped to [0, 1] and rounded. ``array`` itself is returned when it already has ``dtype``.
    """
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    peak = PEAKS[dtype]
    source_peak = PEAKS.get(array.dtype)
    if source_peak is None:
        return np.round(np.clip(array, 0.0, 1.0) * float(peak)).astype(dtype)
    wide = array.astype(np.uint32) * peak  # below 2**32: 65535 * 65535
    return ((wide + source_peak // 2) // source_peak).astype(dtype)
