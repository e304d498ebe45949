"""The inference engine: :class:`Enhancer` runs DCE-Net on tensors, arrays and Pillow images, in bounded memory.

Large images are processed in tiles. Each tile is given a margin of :data:`~scl_lle.models.dcenet.RECEPTIVE_RADIUS`
pixels of real context for curve estimation, so the tiled result equals the untiled one. With ``scale > 1`` the
curve maps are estimated on the image shrunk by ``scale`` and upsampled bilinearly, tile by tile, to full
resolution (Zero-DCE++ style); upsampling and the eight curves are fused
(:func:`~scl_lle.models.dcenet.apply_upsampled_curves`), so no full-resolution 24-channel maps are materialised.

Curve estimation (the network) runs in PyTorch (``backend="torch"``, channels-last on the CPU, optionally
``torch.compile``-d) or in ONNX Runtime (``backend="onnxruntime"``); everything else is the same for both.
``backend="auto"`` (the default) takes ONNX Runtime where it is measured faster: float32 on the CPU, when it is
installed (:func:`resolve_backend`).

On the CPU the tiles are shared among ``threads`` worker threads, each running its tile's operations on one core
(PyTorch's and ONNX Runtime's own thread pools are held at one thread meanwhile). Many small operations split
across threads each end at a barrier where every thread waits for the slowest; when another process holds a
core that wait is a scheduler time slice per operation, and the fast path was measured 12x slower on a busy
machine. Whole tiles per thread need no barrier: a busy core slows its own tiles only (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from ..io.image import Picture, picture_from_pil, picture_to_pil
from ..io.pixels import TileReader, TileWriter
from ..models.dcenet import RECEPTIVE_RADIUS, DCENet, apply_upsampled_curves, downsample, upsampled_curves_band
from ..models.hub import is_onnx_file, load_dcenet
from .exposure import OFF, Exposure, auto_target, parse_exposure, scale_maps, solve_gain, thumbnail_factor
from .finishing import (
    DETAIL_RADIUS,
    NOISE_BLOCK,
    estimate_noise,
    noise_band_rows,
    noise_eps,
    noise_of_bands,
    split_detail,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_TILE",
    "FAST_SCALE",
    "EnhanceError",
    "Enhancer",
    "resolve_backend",
    "resolve_device",
]

Region = tuple[int, int, int, int]  # top, left, bottom, right
CurveEstimator = Callable[[torch.Tensor], torch.Tensor]
#: A progress callback: ``(work done, work in all)``, both counted in tiles.
Progress = Callable[[int, int], None]
_T = TypeVar("_T")

#: Where the curve-estimation network runs; ``"auto"`` picks one of the others (:func:`resolve_backend`).
BACKENDS = ("auto", "torch", "onnxruntime")

#: The ``--fast`` preset's scale: curves estimated at 1/8 of the size in each direction. The trade-off (time,
#: PSNR against full resolution) for scales 1-8 is measured in docs/PERFORMANCE.md.
FAST_SCALE = 8

#: Side of the square tiles the network runs on at full resolution (the engine's working set grows with its
#: square, not with the picture: peak memory by tile size and picture size is in docs/RELIABILITY.md).
DEFAULT_TILE = 512


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to :class:`torch.device`.

    Under ``torchrun`` (``LOCAL_RANK`` set) a CUDA device without an index becomes ``cuda:LOCAL_RANK``.
    """
    if str(device) == "auto":
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

    ``"auto"`` is ONNX Runtime for ``.onnx`` weights, and for float32 on the CPU without ``compile`` when the
    ``onnx`` and ``onnxruntime`` packages are installed: there it runs the network about twice as fast as PyTorch
    in less memory (docs/PERFORMANCE.md). Everywhere else (CUDA, MPS, half precision, ``compile=True``) it is
    PyTorch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if is_onnx_file(weights):
        return "onnxruntime"
    cpu_float32 = torch.device(device).type == "cpu" and dtype == torch.float32 and not compile
    return "onnxruntime" if cpu_float32 and _onnxruntime_installed() else "torch"


def _regions(height: int, width: int, tile: int | None, square: bool = True) -> Iterator[Region]:
    """Regions covering ``(height, width)``: ``tile`` x ``tile`` squares, or (``square=False``) full-width strips
    of about the same area; one piece without ``tile`` or when the image fits in one square."""
    if not tile or (height <= tile and width <= tile):
        yield 0, 0, height, width
        return
    if not square:
        rows = max(1, tile * tile // width)
        for top in range(0, height, rows):
            yield top, 0, min(top + rows, height), width
        return
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op threads (process-wide) set to ``count`` for the block, then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _worker_setup() -> None:
    # Denormal flushing is a per-thread CPU flag: each worker sets it, as the enhancer did for its caller.
    torch.set_flush_denormal(True)


def _apply_curves_into(out: torch.Tensor, image: torch.Tensor, maps: torch.Tensor) -> None:
    """``out[:] = apply_curves(image, maps)`` with in-place updates (one 3-channel temporary)."""
    out.copy_(image)
    for i in range(maps.shape[1] // 3):
        out.add_(torch.mul(out, out).sub_(out).mul_(maps[:, 3 * i : 3 * i + 3]))


_COMPILED_BAND: Callable[..., torch.Tensor] | None = None


def _compiled_band_kernel() -> Callable[..., torch.Tensor]:
    global _COMPILED_BAND
    if _COMPILED_BAND is None:
        _COMPILED_BAND = torch.compile(upsampled_curves_band, dynamic=True)
    return _COMPILED_BAND


class _TorchEstimator:
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


class _OnnxEstimator:
    """Curve estimation in ONNX Runtime (the network exported by :func:`scl_lle.apps.export.build_onnx`)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(tile.detach().to("cpu", torch.float32).numpy())
        (maps,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(maps).to(device=tile.device, dtype=tile.dtype)


class EnhanceError(RuntimeError):
    """The enhancement of one picture failed (for example, the network gave non-finite curve maps)."""


def _finite(maps: torch.Tensor) -> torch.Tensor:
    """``maps`` unchanged, or :class:`EnhanceError` if any value is NaN or infinite (which would write black)."""
    if not bool(torch.isfinite(maps.sum(dtype=torch.float32))):  # a NaN or inf anywhere; no full-size temporaries
        raise EnhanceError("the network gave non-finite curve maps for this picture (broken or overflowing weights?)")
    return maps


def _keep_unchanged(out: torch.Tensor, image: torch.Tensor, gain: torch.Tensor | float) -> torch.Tensor:
    """``out`` ``(B, 3, h, w)`` with the images whose gain is 0 (identity curves) replaced by ``image`` exactly."""
    if isinstance(gain, torch.Tensor) and bool((gain == 0).any()):
        keep = (gain == 0).to(out.device).view(-1, 1, 1, 1)
        out = torch.where(keep, image, out)
    return out


class Enhancer:
    """Low-light enhancement with a DCE-Net.

    Args:
        weights: ``None`` for the embedded default model, a pretrained name, a path to a ``.safetensors`` or
            ``.pth`` file, or a :class:`~scl_lle.models.dcenet.DCENet` instance. With ``backend="onnxruntime"`` also a
            ``.onnx`` file written by :func:`scl_lle.apps.export.export_onnx` (the network alone).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        scale: estimate the curves on the image shrunk by this integer factor (faster, slightly smoother).
        tile_size: process images larger than this many pixels per side in tiles (bounded memory, same result);
            ``None`` processes every image in one piece.
        dtype: the compute dtype (``torch.float32``; ``float16`` / ``bfloat16`` on GPUs; torch backend only).
        backend: where the curve-estimation network runs: ``"torch"``, ``"onnxruntime"`` (needs the ``onnx``
            and ``onnxruntime`` packages; it runs a copy of the weights taken now) or ``"auto"``: ONNX Runtime
            for float32 on the CPU when it is installed, PyTorch otherwise (:func:`resolve_backend`; the
            resolved name is in ``.backend``). Tiling, ``scale`` and the curves are the same for all; the
            outputs agree within 1e-4.
        threads: CPU threads: the worker threads that share the tiles (``torch.set_num_threads`` is also
            set, process-wide); ``None``: PyTorch's setting (its default, or ``OMP_NUM_THREADS``, which
            ``torchrun`` sets to 1 per process). With more than one, PyTorch's own threads are held at one while
            a picture is enhanced (see the module docstring) and restored after.
        channels_last: run the network on channels-last tensors; ``None``: on the CPU (measured faster) and on
            CUDA in half precision.
        compile: ``torch.compile`` the network (torch backend) and the fused upsample-and-curves pass
            (``scale > 1``). Faster per image after a one-time compilation of tens of seconds (cached on disk
            by PyTorch); needs a C++ compiler on the CPU. Falls back to eager with a warning if it fails.
        finish: apply the curves to the base layer with the detail (mostly noise) added back at unit gain
            (:mod:`scl_lle.engine.finishing`); ``False`` applies the curves alone, as the paper does.
        exposure: how bright the result is (:mod:`scl_lle.engine.exposure`): ``"auto"`` (a target chosen from each
            photo; photos that are already well exposed come back nearly unchanged), ``"off"`` (the network's
            curves at full strength, as the paper applies them) or a mean brightness in (0, 1). Every call can
            override it.

    Calling the enhancer on a float tensor ``(B, 3, H, W)`` (or ``(3, H, W)``) in [0, 1] returns the enhanced
    tensor with the same shape, dtype and device.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | DCENet | None = None,
        device: str | torch.device = "auto",
        scale: int = 1,
        tile_size: int | None = DEFAULT_TILE,
        dtype: torch.dtype = torch.float32,
        *,
        backend: str = "auto",
        threads: int | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        finish: bool = True,
        exposure: Exposure = "auto",
    ) -> None:
        self.exposure = parse_exposure(exposure)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}")
        if tile_size is not None and tile_size < 1:
            raise ValueError(f"tile_size must be positive or None, got {tile_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            # Subnormal floats (below about 1e-38), which the network's activations reach on some photos, take a
            # slow microcode path on many x86 CPUs: one DICM photo took 140 s instead of 3.6 s. Flushing them to
            # zero (process-wide, like torch.set_num_threads) changes no output by a visible amount.
            torch.set_flush_denormal(True)
        requested = backend
        backend = resolve_backend(backend, self.device, dtype, bool(compile), weights)
        self.dtype = dtype
        self.scale = int(scale)
        self.tile_size = tile_size
        self.threads = threads
        self.compile = bool(compile)
        # Tile-parallel on the CPU (compiled graphs keep PyTorch's own threading).
        self.workers = (threads or torch.get_num_threads()) if self.device.type == "cpu" and not compile else 1
        self._helpers: ThreadPoolExecutor | None = None  # workers - 1 threads, made on first use
        self.finish = bool(finish)
        if channels_last is None:
            half = dtype in (torch.float16, torch.bfloat16)
            channels_last = self.device.type == "cpu" or (self.device.type == "cuda" and half)
        self.channels_last = bool(channels_last)
        self._band_kernel: Callable[..., torch.Tensor] | None = None
        self.model: DCENet | None = None
        self._estimate: CurveEstimator
        source = weights
        if backend == "onnxruntime":
            if dtype != torch.float32:
                raise ValueError("the onnxruntime backend computes in float32; use dtype=torch.float32")
            from ..apps.export import onnxruntime_session

            fallback = requested == "auto" and not is_onnx_file(weights)
            if fallback and not isinstance(weights, DCENet):
                source = load_dcenet(weights)  # errors in the weights surface here, not as an ONNX failure
            try:
                session_threads = 1 if self.workers > 1 else threads  # the workers run tiles side by side
                self._session = onnxruntime_session(source, device=self.device, threads=session_threads)
                self._estimate = _OnnxEstimator(self._session)
            except Exception as error:  # a broken ONNX install under "auto": PyTorch is always there
                if not fallback:
                    raise
                warnings.warn(f"ONNX Runtime failed ({type(error).__name__}: {error}); using PyTorch", stacklevel=2)
                backend = "torch"
        self.backend = backend
        if backend == "torch":
            model = source if isinstance(source, DCENet) else load_dcenet(source)
            model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.model = model
            self._estimate = _TorchEstimator(model, self.channels_last, self.compile)
        if self.compile:
            self._band_kernel = _compiled_band_kernel()

    def __repr__(self) -> str:
        return (
            f"Enhancer(backend={self.backend}, device={self.device}, dtype={self.dtype}, scale={self.scale}, "
            f"tile_size={self.tile_size}, workers={self.workers}, channels_last={self.channels_last}, "
            f"compile={self.compile}, "
            f"finish={self.finish}, exposure={self.exposure!r})"
        )

    def _process(
        self,
        reader: TileReader,
        writer: TileWriter,
        exposure: Exposure,
        maps: torch.Tensor | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Enhance what ``reader`` holds into ``writer``, one tile at a time.

        ``maps``: curve maps ``(B, 3n, h, w)`` (from :meth:`curve_maps`) to apply; ``None``: estimated here, tile
        by tile at ``scale`` 1, or once on the image shrunk ``scale`` times. They are scaled by the exposure's
        gain; images whose gain is 0 (already at or above the target) come back exactly as they were. Each tile
        is read with a margin of real context for the network and the finishing's filter, so the tiled result
        equals the one-piece result, and the memory used is bounded by the tile size. ``progress``: called with
        ``(tiles done, tiles in all)`` before the first tile and as tiles complete (from the calling thread).
        """
        height, width = reader.height, reader.width
        if maps is None and self.scale > 1:
            maps = self._estimate_maps(reader.downsample(self.scale))
        gain = self._gain(reader, maps, exposure)
        identity = isinstance(gain, torch.Tensor) and bool((gain == 0).all())
        network = maps is None and not identity
        scaled = None if maps is None or identity else _finite(scale_maps(maps, gain))
        eps = self._detail_eps(reader) if self.finish and not identity else None
        margin = max(RECEPTIVE_RADIUS if network else 0, 2 * DETAIL_RADIUS if eps is not None else 0)

        def enhance_region(region: Region) -> None:
            top, left, bottom, right = region
            y0, x0 = max(top - margin, 0), max(left - margin, 0)
            y1, x1 = min(bottom + margin, height), min(right + margin, width)
            x = reader.read(y0, x0, y1, x1)
            inner = (..., slice(top - y0, bottom - y0), slice(left - x0, right - x0))
            if identity:
                writer.write(top, left, x[inner])
                return
            base = split_detail(x.float(), eps=eps)[0].to(x.dtype)[inner] if eps is not None else x[inner]
            if network:
                out = torch.empty_like(base)
                _apply_curves_into(out, base, _finite(scale_maps(self._estimate(x), gain))[inner])
            elif scaled is not None and scaled.shape[-2:] == (height, width):
                out = torch.empty_like(base)
                _apply_curves_into(out, base, scaled[..., top:bottom, left:right].to(base.dtype))
            else:
                assert scaled is not None
                out = apply_upsampled_curves(base, scaled, (height, width), region, band_kernel=self._band_kernel)
            if eps is not None:
                out.add_(x[inner]).sub_(base)  # the detail layer back at unit gain
            writer.write(top, left, _keep_unchanged(out.clamp_(0.0, 1.0), x[inner], gain))

        # Square tiles where the network runs at full resolution (least margin per pixel); elsewhere full-width
        # strips of the same area (long rows keep the per-operation overhead of the fused curves low).
        self._each_region(enhance_region, self._split(height, width, square=network), progress)

    def _split(self, height: int, width: int, square: bool) -> list[Region]:
        """The regions of a ``(height, width)`` picture. With several workers, each holds a tile at a time: tiles
        of ``tile_size / sqrt(workers)`` keep the memory in use near that of one ``tile_size`` tile, and pictures
        with fewer regions than workers are cut finer (down to 64 pixels) so that every worker has a share."""
        tile = self.tile_size
        if tile is not None and self.workers > 1:
            tile = max(min(64, tile), round(tile / self.workers**0.5))
        regions = list(_regions(height, width, tile, square))
        while self.workers > 1 and len(regions) < self.workers:
            tile = -(-max(height, width) // 2) if tile is None else -(-tile // 2)
            if tile < 64:
                break
            regions = list(_regions(height, width, tile, square))
        return regions

    def _each_region(
        self, work: Callable[[Region], None], regions: Sequence[Region], progress: Progress | None = None
    ) -> None:
        """``work(region)`` for every region: here, or on the CPU shared among ``workers`` threads, this one
        included (PyTorch's own threads held at one meanwhile). ``progress(done, total)`` is called from this
        thread with every count from 0 to ``total`` once, in order, as regions complete; an exception in any
        region (or in ``progress``) stops the others from taking new ones and is raised here once the running
        ones have ended."""
        total = len(regions)
        if progress is not None:
            progress(0, total)
        if self.workers < 2 or total < 2:
            for done, region in enumerate(regions, 1):
                work(region)
                if progress is not None:
                    progress(done, total)
            return
        pending, lock = iter(regions), threading.Lock()
        done, failures, reported = [0], [], [0]

        def report(upto: int) -> None:  # every count once, in order, from this thread
            if progress is not None:
                for count in range(reported[0] + 1, upto + 1):
                    progress(count, total)
            reported[0] = max(reported[0], upto)

        def take() -> Region | None:
            with lock:
                return None if failures else next(pending, None)

        def finished() -> int:
            with lock:
                done[0] += 1
                return done[0]

        def helper() -> None:
            with torch.inference_mode():
                while (region := take()) is not None:
                    try:
                        work(region)
                    except BaseException as error:
                        with lock:
                            failures.append(error)
                        return
                    finished()

        # This thread works too (its allocator arena stays in use: less memory) and reports progress; the helper
        # threads are the enhancer's own, kept between pictures (their arenas stay warm).
        if self._helpers is None:
            self._helpers = ThreadPoolExecutor(self.workers - 1, "scl-lle-tiles", initializer=_worker_setup)
        with _torch_threads(1):
            helpers = [self._helpers.submit(helper) for _ in range(self.workers - 1)]
            try:
                while (region := take()) is not None:
                    work(region)
                    report(finished())
            except BaseException as error:
                with lock:
                    failures.insert(0, error)
                raise
            finally:
                wait(helpers)
        if failures:
            raise failures[0]
        report(total)

    def _estimate_maps(self, image: torch.Tensor) -> torch.Tensor:
        """Curve maps ``(B, 3n, h, w)`` of the whole of ``image`` ``(B, 3, h, w)``, region by region with full
        context, the regions shared among the workers."""
        height, width = image.shape[-2:]
        result: list[torch.Tensor] = []
        lock = threading.Lock()

        def estimate_region(region: Region) -> None:
            top, left, bottom, right = region
            y0, x0 = max(top - RECEPTIVE_RADIUS, 0), max(left - RECEPTIVE_RADIUS, 0)
            y1, x1 = min(bottom + RECEPTIVE_RADIUS, height), min(right + RECEPTIVE_RADIUS, width)
            maps = self._estimate(image[..., y0:y1, x0:x1])[..., top - y0 : bottom - y0, left - x0 : right - x0]
            with lock:
                if not result:
                    result.append(maps.new_empty((*maps.shape[:2], height, width)))
            result[0][..., top:bottom, left:right] = maps

        self._each_region(estimate_region, self._split(height, width, square=True))
        return result[0]

    def _detail_eps(self, reader: TileReader) -> torch.Tensor:
        """The finishing filter's ``eps`` ``(B, 1, 1, 1)`` of the whole picture, from the row bands that
        :func:`~scl_lle.engine.finishing.estimate_noise` samples (read one at a time)."""
        height, width = reader.height, reader.width
        if min(height, width) < NOISE_BLOCK + 2:  # a tiny picture: read whole
            return noise_eps(estimate_noise(reader.read(0, 0, height, width)))
        rows = noise_band_rows(height)
        return noise_eps(noise_of_bands(reader.read(top, 0, top + NOISE_BLOCK + 2, width) for top in rows))

    def _gain(self, reader: TileReader, maps: torch.Tensor | None, exposure: Exposure) -> torch.Tensor | float:
        """The gain on the curve maps that realises ``exposure`` for the picture ``reader`` holds: ``(B,)``, or
        1.0 for ``"off"``. Solved on a thumbnail: every ``f``-th pixel (sampled, not averaged, so the brightness
        histogram and with it the mean after the curves are kept) with the curve maps at that grid: ``maps``
        (already estimated) shrunk to it, or, without them, maps the network estimates on the picture shrunk
        ``f`` times (one small extra forward)."""
        if exposure == OFF:
            return 1.0
        if maps is None:
            factor = thumbnail_factor(reader.height, reader.width)
            thumb_maps = self._estimate(reader.downsample(factor))
        else:
            shrink = thumbnail_factor(*maps.shape[-2:])
            factor = self.scale * shrink
            thumb_maps = downsample(maps, shrink)
        thumb = reader.strided(factor)
        target = auto_target(thumb) if isinstance(exposure, str) else exposure
        return solve_gain(thumb, _finite(thumb_maps), target)

    def _exposure(self, exposure: Exposure | None) -> Exposure:
        return self.exposure if exposure is None else parse_exposure(exposure)

    def __call__(self, images: torch.Tensor, exposure: Exposure | None = None) -> torch.Tensor:
        """Enhance ``(B, 3, H, W)`` or ``(3, H, W)`` float in [0, 1]; same shape, dtype and device back.

        ``exposure``: ``"auto"``, ``"off"`` or a mean brightness in (0, 1); ``None``: the enhancer's setting.
        """
        setting = self._exposure(exposure)
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError("expected a floating-point torch.Tensor in [0, 1]")
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"expected shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        writer = TileWriter(batch)
        self._guarded(self._process, TileReader(batch, self.device, self.dtype), writer, setting)
        out = writer.result
        assert isinstance(out, torch.Tensor)
        return out if images.ndim == 4 else out.squeeze(0)

    def _guarded(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function`` without autograd; if ``torch.compile`` fails, warn and fall back to eager."""
        if self.compile:
            try:
                with torch.no_grad():  # compiled graphs are built for no_grad, not inference_mode
                    return function(*args)
            except Exception as error:  # no C++ compiler, unsupported platform: eager is always there
                warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); running eager", stacklevel=3)
                self.compile = False
                self._band_kernel = None
                if self.model is not None:
                    self._estimate = _TorchEstimator(self.model, self.channels_last, False)
        with torch.inference_mode():
            return function(*args)

    def curve_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Estimate the curve maps of ``(B, 3, H, W)`` in [0, 1] at this enhancer's ``scale``.

        Returns ``(B, 3 * n, ceil(H / scale), ceil(W / scale))`` in [-1, 1] on the enhancer's device and dtype,
        to be edited (smoothed across video frames) and applied with :meth:`apply_curve_maps`.
        """
        x = images.to(device=self.device, dtype=self.dtype)
        return self._guarded(lambda t: self._estimate_maps(downsample(t, self.scale)), x)

    def exposure_gain(
        self, images: torch.Tensor, maps: torch.Tensor, exposure: Exposure | None = None
    ) -> torch.Tensor | float:
        """The gain on ``maps`` (from :meth:`curve_maps`) that realises ``exposure`` for ``(B, 3, H, W)`` in [0, 1]:
        ``(B,)`` float32, or 1.0 for ``"off"``. Scale the maps with :func:`~scl_lle.engine.exposure.scale_maps`."""
        setting = self._exposure(exposure)
        reader = TileReader(images, self.device, self.dtype)
        return self._guarded(lambda m: self._gain(reader, m, setting), maps.to(device=self.device, dtype=self.dtype))

    def apply_curve_maps(
        self, images: torch.Tensor, maps: torch.Tensor, exposure: Exposure | None = None
    ) -> torch.Tensor:
        """Apply maps from :meth:`curve_maps` to ``(B, 3, H, W)`` in [0, 1]; same shape back, enhancer's device.

        ``exposure``: as for calling the enhancer. The maps are scaled by the gain that reaches it
        (:meth:`exposure_gain`), so every curve stays monotone from [0, 1] onto [0, 1]; ``"off"`` applies them as
        given (maps scaled beforehand, such as a video's smoothed gains). Finished as set by ``finish``.
        """
        x = images.to(device=self.device, dtype=self.dtype)
        writer = TileWriter(x)
        maps = maps.to(device=self.device, dtype=self.dtype)
        self._guarded(self._process, TileReader(x, self.device, self.dtype), writer, self._exposure(exposure), maps)
        assert isinstance(writer.result, torch.Tensor)
        return writer.result

    def enhance_array(
        self, pixels: np.ndarray, exposure: Exposure | None = None, progress: Progress | None = None
    ) -> np.ndarray:
        """Enhance ``(H, W)`` grey or ``(H, W, 3)`` RGB pixels (uint8, uint16 or float in [0, 1]).

        Grey images are enhanced as RGB and turned back into grey (BT.601 luma). Returns the same shape and
        dtype. ``exposure``: as for calling the enhancer. The picture is read and written a tile at a time (no
        float copy of it is made), so the memory used beyond the input and the result is bounded by the tile
        size. ``progress``: called with ``(tiles done, tiles in all)`` before the first tile and as tiles complete
        (an exception it raises stops the enhancement).
        """
        pixels = np.asarray(pixels)
        reader = TileReader(pixels, self.device, self.dtype)
        writer = TileWriter(pixels)
        self._guarded(self._process, reader, writer, self._exposure(exposure), None, progress)
        assert isinstance(writer.result, np.ndarray)
        return writer.result

    def enhance_picture(
        self, picture: Picture, exposure: Exposure | None = None, progress: Progress | None = None
    ) -> Picture:
        """Enhance a decoded :class:`~scl_lle.io.image.Picture`; alpha and metadata pass through unchanged.
        ``progress``: as for :meth:`enhance_array`."""
        return Picture(
            pixels=self.enhance_array(picture.pixels, exposure, progress),
            alpha=picture.alpha,
            format=picture.format,
            icc_profile=picture.icc_profile,
            exif=picture.exif,
        )

    def enhance_image(self, image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        """Enhance a Pillow image or a numpy array and return the same kind.

        Arrays: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA;
        uint8, uint16 or float in [0, 1]; alpha is returned unchanged. Pillow images keep their mode where it
        can hold the result (palette, CMYK and other colour spaces come back as RGB or RGBA).
        """
        if isinstance(image, Image.Image):
            return picture_to_pil(self.enhance_picture(picture_from_pil(image)))
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[2] in (2, 4):
            enhanced = self.enhance_array(array[..., :-1])
            if enhanced.ndim == 2:
                enhanced = enhanced[..., None]
            return np.concatenate((enhanced, array[..., -1:]), axis=2)
        return self.enhance_array(array)
