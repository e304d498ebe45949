"""Where the engine runs: the device, the backend that estimates the curve maps, and the process's rank.

Curve estimation (the network) runs in PyTorch (``backend="torch"``, channels-last on the CPU, optionally
``torch.compile``-d) or in ONNX Runtime (``backend="onnxruntime"``, the graph of :mod:`scl_lle.models.onnx`;
``"onnxruntime-int8"``, that graph in 8-bit integers, :mod:`scl_lle.models.quantize`, CPU only); everything else
in the engine is the same for all. ``backend="auto"`` (the default) takes the int8 graph on the CPU with
``dtype=float32``, when ONNX Runtime is installed (:func:`resolve_backend`), and its float32 twin for numpy
pictures of more than 8 bits (:class:`OnnxEstimator`). :func:`curve_estimator` makes the
estimator of the chosen backend: a callable ``(B, 3, h, w)`` in [0, 1] -> ``(B, 3n, h, w)`` in [-1, 1].
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..defaults import BACKENDS
from ..models.dcenet import DCENet
from ..models.graph_cache import graph_key, load_graph, store_graph
from ..models.hub import WeightsError, _first_line, check_probe, is_onnx_file, load_dcenet, probe_image
from ..models.onnx import _model_of, build_onnx, read_onnx, require
from ..models.quantize import PROBE_TOLERANCE, QuantizationError, quantize_onnx
from .threads import cpu_threads

__all__ = [
    "CurveEstimator",
    "available_devices",
    "curve_estimator",
    "onnxruntime_session",
    "resolve_backend",
    "resolve_device",
    "shard_from_env",
]

#: Largest difference from PyTorch's curve maps on the test image that a float32 graph read from the graph cache
#: may show (the ONNX export's own agreement is about 1e-6).
FLOAT32_AGREEMENT = 1e-4
#: Curve maps ``(B, 3n, h, w)`` in [-1, 1] of a tile ``(B, 3, h, w)`` in [0, 1].
CurveEstimator = Callable[[torch.Tensor], torch.Tensor]


def resolve_device(device: str | torch.device = "auto", backend: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU (the CPU for ``backend="onnxruntime-int8"``, which runs
    only there); anything else is passed to :class:`torch.device`.

    Under ``torchrun`` (``LOCAL_RANK`` set) a CUDA device without an index becomes ``cuda:LOCAL_RANK``.
    """
    if str(device) == "auto" and backend == "onnxruntime-int8":
        device = "cpu"
    elif str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}; available here: {', '.join(available_devices())}") from None
    if resolved.type == "cuda" and resolved.index is None and "LOCAL_RANK" in os.environ:
        resolved = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if resolved.type == "cuda" and (
        not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()
    ):
        why = "this PyTorch has no CUDA support" if torch.version.cuda is None else "no such CUDA GPU is visible"
        raise ValueError(f"device {str(device)!r}: {why}; available here: {', '.join(available_devices())}")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(
            f"device {str(device)!r}: MPS is not available; available here: {', '.join(available_devices())}"
        )
    return resolved


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices() -> list[str]:
    """The device names :func:`resolve_device` accepts on this machine: ``auto``, ``cpu``, ``cuda[:N]``, ``mps``."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if _mps_available():
        names.append("mps")
    return names


def _onnxruntime_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def resolve_backend(
    backend: str,
    device: str | torch.device,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    weights: str | os.PathLike[str] | DCENet | None = None,
) -> str:
    """The backend ``"auto"`` stands for; other names come back unchanged.

    ``"auto"`` is ``"onnxruntime-int8"`` for float32 on the CPU without ``compile`` when the ``onnx`` and
    ``onnxruntime`` packages are installed: at full resolution, where the network's cost dominates, it is the
    fastest there, at nearly the float32 result (docs/PERFORMANCE.md, "`--backend auto` runs the network in int8
    on the CPU"); pictures of more than 8 bits still run in float32 (:class:`OnnxEstimator`). ``.onnx`` weights,
    which only ONNX Runtime reads, get ``"onnxruntime"`` with ``compile`` or off the CPU or float32. Everything
    else gets PyTorch (CUDA, MPS, half precision, ``compile=True``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    int8 = torch.device(device).type == "cpu" and dtype == torch.float32 and not compile
    if is_onnx_file(weights):
        return "onnxruntime-int8" if int8 else "onnxruntime"
    return "onnxruntime-int8" if int8 and _onnxruntime_installed() else "torch"


def _session_options(ort: Any, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A memory pattern is planned (and kept) per input shape, and tiles come in several shapes: without it the
    # peak memory is lower at the same speed (measure with benchmarks/memory.py and benchmarks/speed.py).
    options.enable_mem_pattern = False
    # No busy-waiting between runs: the engine's PyTorch threads run right after each call (upsampling, curves)
    # and would compete with spinning ONNX Runtime workers for the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def onnxruntime_session(
    weights: str | os.PathLike[str] | DCENet | None,
    *,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    int8: bool = False,
) -> Any:
    """An ONNX Runtime session that estimates curve maps (the network-alone export).

    ``weights``: a ``.onnx`` file from :func:`scl_lle.apps.export.export_onnx` (the network alone; checked by
    :func:`~scl_lle.models.onnx.read_onnx`, then run on the test image of the PyTorch checks; a
    :class:`~scl_lle.models.hub.WeightsError` if it does not fit), or anything
    :class:`~scl_lle.engine.enhancer.Enhancer` takes (exported in memory). CUDA devices use ONNX Runtime's CUDA
    provider, which must be installed (``onnxruntime-gpu``). ``threads``: intra-op threads (``None``: PyTorch's
    thread count, so both backends use the same). ``int8``: run the graph quantised by
    :func:`~scl_lle.models.quantize.quantize_onnx` (CPU only; checked on the test image against the float graph).
    """
    return _onnxruntime_sessions(weights, device, threads, int8)[0]


def _onnxruntime_sessions(
    weights: str | os.PathLike[str] | DCENet | None, device: str | torch.device, threads: int | None, int8: bool
) -> tuple[Any, Any | None]:
    """:func:`onnxruntime_session`'s session, and with ``int8`` the float32 session it was checked against."""
    ort = require("onnxruntime")
    device = torch.device(device)
    path = Path(weights) if is_onnx_file(weights) else None  # type: ignore[arg-type]
    options = _session_options(ort, threads)
    model = None if path is not None else _model_of(weights)
    data, channels = read_onnx(path) if model is None else _float_graph(ort, model, options)  # type: ignore[arg-type]
    if int8:
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime-int8 backend runs on the CPU, not {device} (use --device cpu)")
        key = graph_key(model, "int8") if model is not None else None  # .onnx files: quantised in each process
        return _int8_session(ort, data, options, channels, path or "the weights", key)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDA provider here (install onnxruntime-gpu) or use --device cpu")
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    elif device.type == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
    if path is None:
        return ort.InferenceSession(data, options, providers=providers), None
    session, maps = _probed_session(ort, data, options, providers, path)
    check_probe(path, maps, channels)
    _check_any_size(session, path, channels)
    return session, None


def _probed_session(
    ort: Any, data: bytes, options: Any, providers: list[Any], name: object
) -> tuple[Any, torch.Tensor]:
    """A session of the graph ``data`` and its curve maps on :func:`probe_image`; a :class:`WeightsError` naming
    ``name`` if ONNX Runtime cannot build or run it."""
    try:
        session = ort.InferenceSession(data, options, providers=providers)
        (maps, *_) = session.run(None, {session.get_inputs()[0].name: probe_image().numpy()})
    except Exception as error:
        raise WeightsError(f"{name}: ONNX Runtime cannot run it on a test image ({_first_line(error)})") from None
    return session, torch.from_numpy(np.asarray(maps))


def _check_any_size(session: Any, name: object, channels: int) -> None:
    """Refuse (:class:`WeightsError` naming ``name``) a graph whose curve maps do not take the input's size: run
    again at 24 x 40, as a graph fixed or cropped to the 32 x 32 test image passes that one."""
    height, width = 24, 40
    try:
        (maps, *_) = session.run(None, {session.get_inputs()[0].name: probe_image(height, width).numpy()})
    except Exception as error:
        raise WeightsError(
            f"{name}: ONNX Runtime cannot run it on a {height}x{width} image ({_first_line(error)})"
        ) from None
    if (shape := tuple(np.shape(maps))) != (1, channels, height, width):
        raise WeightsError(
            f"{name}: gives an output of shape {shape} for a (1, 3, {height}, {width}) test image; the engine needs "
            f"curve maps of the input's size, {(1, channels, height, width)}"
        )


def _float_graph(ort: Any, model: DCENet, options: Any) -> tuple[bytes, int]:
    """The float32 graph of ``model`` (CPU, float32, eval) and its curve-map channels: from the graph cache
    (:mod:`scl_lle.models.graph_cache`) where a stored graph gives PyTorch's curve maps on :func:`probe_image`
    within :data:`FLOAT32_AGREEMENT`, else built by :func:`~scl_lle.models.onnx.build_onnx` and stored."""
    key, channels = graph_key(model, "float32"), 3 * model.iterations
    with torch.no_grad():
        expected = model.curve_maps(probe_image())
    cached = load_graph(key)
    if cached is not None and _cached_session(ort, cached, options, expected, FLOAT32_AGREEMENT) is not None:
        return cached, channels
    data = build_onnx(model).SerializeToString()
    store_graph(key, data)
    return data, channels


def _cached_session(ort: Any, data: bytes, options: Any, expected: torch.Tensor, tolerance: float) -> Any | None:
    """A CPU session of a graph read from the graph cache if its curve maps on :func:`probe_image` are within
    ``tolerance`` of ``expected``; ``None`` if not, or if ONNX Runtime cannot run it."""
    try:
        session, maps = _probed_session(ort, data, options, ["CPUExecutionProvider"], "a cached graph")
    except WeightsError:
        return None
    agrees = maps.shape == expected.shape and float((maps - expected).abs().max()) <= tolerance
    return session if agrees else None


def _int8_session(
    ort: Any, data: bytes, options: Any, channels: int, name: object, key: str | None = None
) -> tuple[Any, Any]:
    """A CPU session of the float graph ``data`` quantised to int8, and the float graph's session; refused
    (:class:`QuantizationError` naming ``name``) if the quantiser fails or its curve maps on :func:`probe_image`
    differ from the float graph's by more than :data:`~scl_lle.models.quantize.PROBE_TOLERANCE` (weights whose
    activations the calibration does not cover). ``key``: where the int8 graph is kept in the graph cache
    (:mod:`scl_lle.models.graph_cache`; ``None``: not kept); a stored graph is used if it passes the same check."""
    providers = ["CPUExecutionProvider"]
    float32, exact = _probed_session(ort, data, options, providers, name)
    check_probe(name, exact, channels)
    if key is None:  # a user's .onnx file (the engine's own graph is built from the weights)
        _check_any_size(float32, name, channels)
    cached = load_graph(key) if key is not None else None
    session = _cached_session(ort, cached, options, exact, PROBE_TOLERANCE) if cached is not None else None
    if session is not None:
        return session, float32
    try:
        quantized = quantize_onnx(data)
    except Exception as error:
        raise QuantizationError(f"{name}: cannot be quantised to int8 ({_first_line(error)})") from None
    try:
        session, maps = _probed_session(ort, quantized, options, providers, f"{name} (int8)")
        check_probe(f"{name} (int8)", maps, channels)
    except WeightsError as error:
        raise QuantizationError(str(error)) from None
    if (error := float((maps - exact).abs().max())) > PROBE_TOLERANCE:
        raise QuantizationError(
            f"{name}: in int8 its curve maps differ from float32 by {error:.3f} on a test image (more than "
            f"{PROBE_TOLERANCE}); use --backend onnxruntime"
        )
    if key is not None:
        store_graph(key, quantized)
    return session, float32


class TorchEstimator:
    """Curve estimation in PyTorch: channels-last input where it pays, optionally ``torch.compile``-d."""

    def __init__(self, model: DCENet, channels_last: bool, compiled: bool) -> None:
        self.model = model
        self.channels_last = channels_last
        self.forward: CurveEstimator = model.curve_maps
        if compiled:
            self.forward = torch.compile(model.curve_maps, options={"freezing": True})

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            tile = tile.contiguous(memory_format=torch.channels_last)
        return self.forward(tile)


class OnnxEstimator:
    """Curve estimation in ONNX Runtime (the network exported by :func:`scl_lle.models.onnx.build_onnx`).

    ``exact``: for an int8 session under ``backend="auto"``, the float32 estimator it was checked against, which
    the enhancer runs on pictures of more than 8 bits: int8 activations step the curve maps by a few thousandths
    where float32 maps vary smoothly, which 16-bit gradations would show (``benchmarks/int8_agreement.py``).
    """

    def __init__(self, session: Any, exact: OnnxEstimator | None = None) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.exact = exact
        #: A graph exported for batch 1 (``torch.onnx.export`` with only height and width dynamic) gets one picture
        #: or video frame at a time.
        self.one_at_a_time = session.get_inputs()[0].shape[0] == 1

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(tile.detach().to("cpu", torch.float32).numpy())
        if self.one_at_a_time and len(array) > 1:
            maps = np.concatenate([self.session.run(None, {self.input_name: item[None]})[0] for item in array])
        else:
            (maps,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(maps).to(device=tile.device, dtype=tile.dtype)


def curve_estimator(
    weights: str | os.PathLike[str] | DCENet | None,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    channels_last: bool,
    compile: bool,
    threads: int | None,
    workers: int,
) -> tuple[str, CurveEstimator, DCENet | None]:
    """The curve estimator of ``weights`` on ``backend`` (``"auto"`` resolved by :func:`resolve_backend`):
    ``(backend name, estimator, the PyTorch model or None)``; arguments as for
    :class:`~scl_lle.engine.enhancer.Enhancer`. Under ``"auto"``, with a warning, weights refused in int8 run in
    float32 ONNX Runtime, and a failing ONNX Runtime falls back to PyTorch; ``workers`` > 1 runs the session
    single-threaded (the workers run tiles side by side)."""
    requested = backend
    backend = resolve_backend(backend, device, dtype, compile, weights)
    source = weights
    if backend in ("onnxruntime", "onnxruntime-int8"):
        if dtype != torch.float32:
            raise ValueError(f"the {backend} backend takes float32 pictures; use dtype=torch.float32")
        fallback = requested == "auto" and not is_onnx_file(weights)
        if fallback and not isinstance(weights, DCENet):
            source = load_dcenet(weights)  # errors in the weights surface here, not as an ONNX failure
        try:
            backend, estimator = _onnx_estimator(source, backend, device, 1 if workers > 1 else threads, requested)
            return backend, estimator, None
        except Exception as error:  # a broken ONNX install under "auto": PyTorch is always there
            if not fallback:
                raise
            warnings.warn(f"ONNX Runtime failed ({type(error).__name__}: {error}); using PyTorch", stacklevel=3)
    model = source if isinstance(source, DCENet) else load_dcenet(source)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return "torch", TorchEstimator(model, channels_last, compile), model


def _onnx_estimator(
    source: str | os.PathLike[str] | DCENet | None,
    backend: str,
    device: torch.device,
    threads: int | None,
    requested: str,
) -> tuple[str, OnnxEstimator]:
    """``(backend, estimator)`` for an ONNX Runtime ``backend``. When ``"auto"`` was ``requested``, an int8 estimator
    keeps its float32 one as ``exact``, and weights refused in int8
    (:class:`~scl_lle.models.quantize.QuantizationError`) run in float32, with a warning."""
    auto = requested == "auto"
    if backend == "onnxruntime-int8":
        try:
            session, float32 = _onnxruntime_sessions(source, device, threads, int8=True)
            return backend, OnnxEstimator(session, OnnxEstimator(float32) if auto else None)
        except QuantizationError as error:
            if not auto:
                raise
            warnings.warn(f"running the network in float32 ONNX Runtime: {error}", stacklevel=4)
    return "onnxruntime", OnnxEstimator(_onnxruntime_sessions(source, device, threads, int8=False)[0])


def shard_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` from the ``RANK`` and ``WORLD_SIZE`` variables that ``torchrun`` sets; ``(0, 1)``."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as error:
        raise ValueError(f"RANK and WORLD_SIZE must be whole numbers: {error}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return rank, world
