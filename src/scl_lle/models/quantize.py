"""DCE-Net in 8-bit integers for ONNX Runtime on the CPU (``backend="onnxruntime-int8"``).

The float graph of :mod:`scl_lle.models.onnx` (the network alone) with its weights stored as 7-bit integers in
int8, one scale per output channel (``reduce_range``: x86 CPUs without VNNI multiply uint8 by int8 in pairs
summed into 16 bits, which full 8-bit weights can overflow), and its activations as uint8, one scale per tensor,
in ONNX's QDQ form (QuantizeLinear / DequantizeLinear pairs, default domain), which ONNX Runtime's CPU provider
turns into integer convolutions. The network's input is quantised to 256 levels too; the curves are still applied
to the picture's own samples, at full precision, by the engine.

The activations' ranges are calibrated on generated pictures (:func:`calibration_images`: smooth scenes with
edges and grain, from near black to bright), not on a data set, so any weights can be quantised where they are
loaded, in a fraction of a second, and the result does not depend on files a user may not have. Quantised once
per weights per process (:func:`quantize_onnx` keeps the last few), and kept on disk for later processes by the
engine (:mod:`scl_lle.models.graph_cache`). What it gains in time on this project's CPU
is measured by ``benchmarks/speed.py``, what it costs in quality by ``benchmarks/int8_agreement.py``
(docs/PERFORMANCE.md); the engine also refuses a quantised graph whose curve maps stray from the float graph's
on a test image (:data:`PROBE_TOLERANCE`, :class:`QuantizationError`).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .hub import WeightsError
from .onnx import require

__all__ = [
    "CALIBRATION_COUNT",
    "CALIBRATION_SIDE",
    "PROBE_TOLERANCE",
    "QuantizationError",
    "calibration_images",
    "quantize_onnx",
]

#: How many generated pictures calibrate the activation ranges, and their side in pixels.
CALIBRATION_COUNT = 8
CALIBRATION_SIDE = 64
#: The largest difference between the int8 and the float graph's curve maps (in [-1, 1]) on the engine's test
#: image that is accepted; the default model's is below 0.01.
PROBE_TOLERANCE = 0.05
_CACHE_SIZE = 4


class QuantizationError(WeightsError):
    """Weights that run in float32 but not in int8: the quantiser fails on them, or their int8 curve maps stray
    from the float ones by more than :data:`PROBE_TOLERANCE`."""


_cache: OrderedDict[str, bytes] = OrderedDict()
_lock = threading.Lock()


def calibration_images(count: int = CALIBRATION_COUNT, side: int = CALIBRATION_SIDE, seed: int = 0) -> list[np.ndarray]:
    """``count`` generated pictures ``(1, 3, side, side)`` float32 in [0, 1], the same for the same arguments.

    Each is a smooth random colour field (coarser or finer from one picture to the next), a bright block with
    hard edges, and Gaussian grain, scaled to a mean level from near black to bright and given a tone curve, so
    the network sees dark noisy photos and well-lit ones, as in use.
    """
    rng = np.random.default_rng(seed)
    pictures = []
    for index in range(count):
        cells = 4 * (1 + index % 4)
        coarse = rng.random((3, cells, cells), dtype=np.float32)
        rows = np.linspace(0, cells - 1, side).round().astype(int)
        field = coarse[:, rows][:, :, rows]
        field = (field + np.roll(field, side // (2 * cells), axis=1) + np.roll(field, side // (2 * cells), axis=2)) / 3
        top, left = rng.integers(0, side // 2, size=2)
        field[:, top : top + side // 3, left : left + side // 3] += 0.5
        field = field + rng.normal(0.0, 0.08, field.shape).astype(np.float32)
        level = (index + 1) / count
        picture = np.clip(np.clip(field, 0.0, 1.0) * level, 0.0, 1.0) ** (1 + index % 3)
        pictures.append(picture[None].astype(np.float32))
    return pictures


def quantize_onnx(data: bytes) -> bytes:
    """The int8 (QDQ) version of a float DCE-Net graph ``data`` (the network alone, as :func:`build_onnx` gives or
    :func:`read_onnx` checked): weights int8 per output channel, activations uint8 by min-max calibration on
    :func:`calibration_images`. Needs ``onnxruntime`` (its quantisation tools) and ``onnx``. Thread-safe; the
    root logger is left as it was (the quantiser's ``logging.*`` calls would otherwise configure it)."""
    key = hashlib.sha256(data).hexdigest()
    with _lock:
        if (cached := _cache.get(key)) is not None:
            _cache.move_to_end(key)
            return cached
        onnx = require("onnx")
        require("onnxruntime")
        from onnxruntime import quantization as q

        model = onnx.load_from_string(data)
        constants = {tensor.name for tensor in model.graph.initializer}
        image = next(i.name for i in model.graph.input if i.name not in constants)
        # The quantiser's pre-processing (shape inference, graph fusions) is for larger graphs; DCE-Net's has
        # nothing for it to do. Marked as done, so the quantiser does not advise it on stderr.
        model.metadata_props.add(key="onnx.quant.pre_process", value="onnxruntime.quant")

        class Calibration(q.CalibrationDataReader):
            def __init__(self) -> None:
                self.pictures = iter(calibration_images())

            def get_next(self) -> dict[str, np.ndarray] | None:
                picture = next(self.pictures, None)
                return None if picture is None else {image: picture}

        root = logging.getLogger()
        guard = logging.NullHandler() if not root.handlers else None  # stops logging.basicConfig() in the calls
        if guard is not None:
            root.addHandler(guard)
        try:
            # Weights near 1e-37 (dead channels, as in the released Zero-DCE checkpoint) give a bias scale that
            # underflows to 0, and numpy warns of the division by it; the quantiser clips such a bias to the int32
            # range, the channel stays dead, and the check on the test image (engine.backends) judges the result.
            with tempfile.TemporaryDirectory(prefix="scl-lle-int8-") as folder, np.errstate(all="ignore"):
                target = Path(folder) / "int8.onnx"
                q.quantize_static(
                    model,
                    str(target),
                    Calibration(),
                    quant_format=q.QuantFormat.QDQ,
                    activation_type=q.QuantType.QUInt8,
                    weight_type=q.QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,
                    calibrate_method=q.CalibrationMethod.MinMax,
                )
                quantized = target.read_bytes()
        finally:
            if guard is not None:
                root.removeHandler(guard)
        _cache[key] = quantized
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return quantized
