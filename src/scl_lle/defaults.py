"""Defaults and choices of the engine and the apps: one place for each, and no PyTorch.

The modules that use them (:mod:`scl_lle.engine`, :mod:`scl_lle.apps`, :mod:`scl_lle.models.onnx`) import them
from here, and so does the command line, which builds ``scl-lle --help`` from them without loading PyTorch. Only
:mod:`scl_lle.io.picture` (NumPy, Pillow) is imported, for whether AVIF can be written.
"""

from __future__ import annotations

from .io.picture import HAS_AVIF

__all__ = [
    "AUTO_SCALE_MIN",
    "AUTO_SCALE_SIDE",
    "BACKENDS",
    "DEFAULT_OPSET",
    "DEFAULT_SMOOTHING",
    "DEFAULT_TILE",
    "DEFAULT_VIDEO_BATCH",
    "FAST_SCALE",
    "MIN_OPSET",
    "OUTPUT_FORMATS",
    "auto_scale",
]

#: Where the curve-estimation network runs; ``"auto"`` picks one of the others
#: (:func:`scl_lle.engine.backends.resolve_backend`).
BACKENDS = ("auto", "torch", "onnxruntime", "onnxruntime-int8")

#: The ``--fast`` preset's scale: ``"auto"`` (:func:`auto_scale`). The trade-off (time, PSNR against full
#: resolution, NIQE) by scale is measured in docs/PERFORMANCE.md.
FAST_SCALE = "auto"
#: ``scale="auto"``: the curves are estimated on the picture shrunk by at least this factor ...
AUTO_SCALE_MIN = 8
#: ... and so that its long side is about this many pixels: the network's cost stays about the same for any
#: picture size, as Zero-DCE++ does by a fixed scale for its photo size.
AUTO_SCALE_SIDE = 256


def auto_scale(height: int, width: int) -> int:
    """The scale ``"auto"`` gives a picture of ``(height, width)``: 8 up to 2,176 pixels on the long side (1080p
    included), then long side / 256 rounded (16 for 12 MP)."""
    return max(AUTO_SCALE_MIN, round(max(height, width) / AUTO_SCALE_SIDE))


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
