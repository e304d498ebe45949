"""Defaults and choices of the engine and the apps: one place for each, and no PyTorch.

The modules that use them (:mod:`scl_lle.engine`, :mod:`scl_lle.apps`, :mod:`scl_lle.models.onnx`) import them
from here, and so does the command line, which builds ``scl-lle --help`` from them without loading PyTorch. Only
:mod:`scl_lle.io.picture` (NumPy, Pillow) is imported, for whether AVIF can be written.
"""

from __future__ import annotations

from .io.picture import HAS_AVIF

__all__ = [
    "BACKENDS",
    "DEFAULT_OPSET",
    "DEFAULT_SMOOTHING",
    "DEFAULT_TILE",
    "DEFAULT_VIDEO_BATCH",
    "FAST_SCALE",
    "MIN_OPSET",
    "OUTPUT_FORMATS",
]

#: Where the curve-estimation network runs; ``"auto"`` picks one of the others
#: (:func:`scl_lle.engine.backends.resolve_backend`).
BACKENDS = ("auto", "torch", "onnxruntime")

#: The ``--fast`` preset's scale: curves estimated at 1/8 of the size in each direction. The trade-off (time,
#: PSNR against full resolution) for scales 1-8 is measured in docs/PERFORMANCE.md.
FAST_SCALE = 8

#: Side of the square tiles the network runs on at full resolution (the engine's working set grows with its
#: square, not with the picture: peak memory by tile size and picture size is in docs/RELIABILITY.md).
DEFAULT_TILE = 512

#: ``format`` choices: ``same`` keeps each input's file type where it can be written, else PNG (so camera RAW
#: comes out as 16-bit PNG). ``heic`` needs the ``formats`` extra.
OUTPUT_FORMATS = {
    "same": None,
    "png": ".png",
    "jpg": ".jpg",
    "tiff": ".tiff",
    "webp": ".webp",
    **({"avif": ".avif"} if HAS_AVIF else {}),
    "heic": ".heic",
}

#: Videos: default weight of the running curve maps in :class:`scl_lle.apps.smoothing.CurveSmoother` (0 turns
#: smoothing off).
DEFAULT_SMOOTHING = 0.9

#: Videos: frames decoded and enhanced together on the device by default.
DEFAULT_VIDEO_BATCH = 8

#: ONNX opset written by default (Clip with min/max inputs needs 11; 17 is widely supported by runtimes).
DEFAULT_OPSET = 17
MIN_OPSET = 11
