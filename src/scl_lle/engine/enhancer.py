"""The inference engine: :class:`Enhancer` runs DCE-Net on tensors, arrays and Pillow images, in bounded memory.

Large images are processed in tiles (:mod:`scl_lle.engine.tiling`). Each tile is given a margin of
:data:`~scl_lle.models.dcenet.RECEPTIVE_RADIUS` pixels of real context for curve estimation, so the tiled result
equals the untiled one. With ``scale > 1`` the curve maps are estimated on the image shrunk by ``scale`` and
upsampled bilinearly, tile by tile, to full resolution (Zero-DCE++ style); upsampling and the eight curves are
fused (:mod:`scl_lle.engine.fused_pass`), so no full-resolution 24-channel maps are
materialised. The network runs in PyTorch or ONNX Runtime (:mod:`scl_lle.engine.backends`); the exposure
(:mod:`scl_lle.engine.exposure`) and the finishing (:mod:`scl_lle.engine.finishing`) are the same for both.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from .._renamed import UNSET, renamed
from ..core.curves import apply_curves_into, downsample
from ..defaults import DEFAULT_TILE, auto_scale
from ..io.picture import Picture, picture_from_pil, picture_to_pil
from ..models.dcenet import RECEPTIVE_RADIUS, DCENet
from .backends import CurveEstimator, TorchEstimator, curve_estimator, resolve_device
from .exposure import OFF, Exposure, keep_input, parse_exposure, scale_maps
from .finishing import BASE_REACH, read_detail_eps, split_detail
from .fused_pass import upsampled_curves, upsampled_curves_into
from .picture_exposure import EnhanceError, finite_maps, picture_gain, picture_weights, weighted_maps
from .threads import cpu_threads, set_cpu_threads
from .tiling import Progress, Region, TilePool, TileReader, TileWriter

__all__ = ["EnhanceError", "Enhancer"]

_T = TypeVar("_T")


class Enhancer:
    """Low-light enhancement with a DCE-Net.

    Args:
        weights: ``None`` for the embedded default model, a pretrained name, a path to a ``.safetensors`` or
            ``.pth`` file, or a :class:`~scl_lle.models.dcenet.DCENet` instance. With an ONNX Runtime backend also a
            ``.onnx`` file written by :func:`scl_lle.apps.export.export_onnx` (the network alone).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        scale: estimate the curves on the image shrunk by this integer factor (faster, slightly smoother);
            ``"auto"`` (the ``--fast`` preset's): per picture, by :func:`~scl_lle.defaults.auto_scale`.
        tile: process images larger than this many pixels per side in tiles (bounded memory, same result);
            ``None`` processes every image in one piece (``--tile``; ``tile_size`` is its old name).
        dtype: the compute dtype (``torch.float32``; ``float16`` / ``bfloat16`` on GPUs; torch backend only).
        backend: where the curve-estimation network runs: ``"torch"``, ``"onnxruntime"`` (needs the ``onnx``
            and ``onnxruntime`` packages; it runs a copy of the weights taken now; outputs within 1e-4 of torch),
            ``"onnxruntime-int8"`` (that network in 8-bit integers, :mod:`scl_lle.models.quantize`; CPU only;
            faster, within two 8-bit levels) or ``"auto"``: int8 on the CPU when ONNX Runtime is installed (but
            float32 for numpy pictures of more than 8 bits), PyTorch otherwise (:func:`~scl_lle.engine.backends.
            resolve_backend`; the name is in ``.backend``). Tiling, ``scale``, curves and finishing are shared.
        threads: CPU threads: the worker threads that share the tiles (PyTorch's count is also set,
            :func:`~scl_lle.engine.threads.set_cpu_threads`); ``None``: PyTorch's setting (its default, or
            ``OMP_NUM_THREADS``, which ``torchrun`` sets to 1 per process). With more than one, PyTorch's own
            threads are held at one while a picture is enhanced (:mod:`scl_lle.engine.threads`) and restored after.
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
        local_weighting: at a level (``exposure`` not ``"off"``), lift dark regions of a photo more and bright ones
            (skies, lamps) less, at the same mean brightness (:func:`~scl_lle.engine.exposure.local_weights`): more
            natural photos, but less accurate segmentation of dark street frames (docs/MODEL_CARD.md, "Local
            weighting"). Off by default.

    Calling the enhancer on a float tensor ``(B, 3, H, W)`` (or ``(3, H, W)``) in [0, 1] returns the enhanced
    tensor with the same shape, dtype and device.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | DCENet | None = None,
        device: str | torch.device = "auto",
        scale: int | str = 1,
        tile: int | None = DEFAULT_TILE,
        dtype: torch.dtype = torch.float32,
        *,
        tile_size: int | None = UNSET,
        backend: str = "auto",
        threads: int | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        finish: bool = True,
        exposure: Exposure = "auto",
        local_weighting: bool = False,
    ) -> None:
        self.exposure = parse_exposure(exposure)
        self.local_weighting = bool(local_weighting)
        if scale != "auto" and (isinstance(scale, str) or int(scale) != scale or scale < 1):
            raise ValueError(f"scale must be an integer >= 1 or 'auto', got {scale!r}")
        tile = renamed("Enhancer", "tile_size", "tile", tile_size, tile)
        if tile is not None and tile < 1:
            raise ValueError(f"tile must be positive or None, got {tile}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if threads is not None:
            set_cpu_threads(threads)
        self.device = resolve_device(device, backend)
        if self.device.type == "cpu":
            # Subnormal floats (below about 1e-38), which the network's activations reach on some photos, take a
            # slow microcode path on many x86 CPUs: one DICM photo took 140 s instead of 3.6 s. Flushing them to
            # zero (process-wide, like torch.set_num_threads) changes no output by a visible amount.
            torch.set_flush_denormal(True)
        self.dtype = dtype
        self.scale: int | str = scale if scale == "auto" else int(scale)
        self.tile = tile
        self.threads = threads
        self.compile = bool(compile)
        # Tile-parallel on the CPU (compiled graphs keep PyTorch's own threading).
        self._pool = TilePool((threads or cpu_threads()) if self.device.type == "cpu" and not compile else 1)
        self.finish = bool(finish)
        if channels_last is None:
            half = dtype in (torch.float16, torch.bfloat16)
            channels_last = self.device.type == "cpu" or (self.device.type == "cuda" and half)
        self.channels_last = bool(channels_last)
        self.backend, self._estimate, self.model = curve_estimator(
            weights,
            backend,
            self.device,
            dtype,
            channels_last=self.channels_last,
            compile=self.compile,
            threads=threads,
            workers=self.workers,
        )

    @property
    def workers(self) -> int:
        """Threads that share a picture's tiles: ``threads`` (or PyTorch's count) on the CPU, else 1."""
        return self._pool.workers

    def __repr__(self) -> str:
        return (
            f"Enhancer(backend={self.backend}, device={self.device}, dtype={self.dtype}, scale={self.scale}, "
            f"tile={self.tile}, workers={self.workers}, channels_last={self.channels_last}, "
            f"compile={self.compile}, finish={self.finish}, exposure={self.exposure!r}, "
            f"local_weighting={self.local_weighting})"
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
        by tile at ``scale`` 1, or once on the image shrunk ``scale`` times. They are weighted region by region where
        :func:`~scl_lle.engine.picture_exposure.picture_weights` gives weights (``local_weighting``), and scaled by the
        exposure's gain; images whose gain is 0 (already at or above the target) come back exactly as they were.
        Each tile is read with a margin of real context for the network and the finishing's filter, so the tiled
        result equals the one-piece result, and the memory used is bounded by the tile size. ``progress``: called
        with ``(tiles done, tiles in all)`` before the first tile and as tiles complete (from the calling thread).
        """
        height, width = size = reader.height, reader.width
        estimate, weights = self._network(reader), picture_weights(reader, exposure, self.local_weighting)
        if maps is None and (scale := self.scale_for(height, width)) > 1:
            maps = self._estimate_maps(reader.downsample(scale, pool=self._pool), estimate)
        eps, gain = self._eps_and_gain(reader, maps, exposure, self.finish, weights)
        identity = isinstance(gain, torch.Tensor) and bool((gain == 0).all())
        network, scaled = maps is None and not identity, None
        if maps is not None and not identity:  # weighted into a copy (with weights), then scaled in it
            scaled = finite_maps(scale_maps(weighted_maps(maps, weights), gain, inplace=weights is not None))
        eps = None if identity else eps
        margin = max(RECEPTIVE_RADIUS if network else 0, BASE_REACH if eps is not None else 0)
        direct = scaled is not None and eps is None and not self.compile and self.dtype == torch.float32

        def enhance_region(region: Region) -> None:
            top, left, bottom, right = region
            if direct and upsampled_curves_into(reader.pixels(region), writer.pixels(region), scaled, size, region):
                return  # the fused pass straight from the picture's pixels into the output's
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
                local = weighted_maps(estimate(x), weights, size, (y0, x0, y1, x1))  # this region's weights
                apply_curves_into(out, base, finite_maps(scale_maps(local, gain))[inner])
            elif scaled is not None and scaled.shape[-2:] == (height, width):
                out = torch.empty_like(base)
                apply_curves_into(out, base, scaled[..., top:bottom, left:right].to(base.dtype))
            else:
                assert scaled is not None
                out = upsampled_curves(base, scaled, (height, width), region, compiled=self.compile)
            if eps is not None:
                out.add_(x[inner]).sub_(base)  # the detail layer back at unit gain
            writer.write(top, left, keep_input(out.clamp_(0.0, 1.0), x[inner], gain))

        # Square tiles where the network runs at full resolution (least margin per pixel); elsewhere full-width
        # strips of the same area (long rows keep the per-operation overhead of the fused curves low).
        self._pool.run(enhance_region, self._pool.split(height, width, self.tile, square=network), progress)

    def _network(self, reader: TileReader) -> CurveEstimator:
        """The curve estimator for what ``reader`` holds: the backend's, but for numpy pictures of more than 8 bits
        (uint16, float) the float32 network an int8 one keeps (``exact``, under ``backend="auto"``)."""
        exact, dtype = getattr(self._estimate, "exact", None), reader.array_dtype
        return exact if exact is not None and dtype is not None and dtype != np.uint8 else self._estimate

    def _estimate_maps(self, image: torch.Tensor, estimate: CurveEstimator | None = None) -> torch.Tensor:
        """Curve maps ``(B, 3n, h, w)`` of the whole of ``image`` ``(B, 3, h, w)`` by ``estimate`` (the backend's),
        region by region with full context, the regions shared among the workers."""
        estimate = estimate or self._estimate
        height, width = image.shape[-2:]
        result: list[torch.Tensor] = []
        lock = threading.Lock()

        def estimate_region(region: Region) -> None:
            top, left, bottom, right = region
            y0, x0 = max(top - RECEPTIVE_RADIUS, 0), max(left - RECEPTIVE_RADIUS, 0)
            y1, x1 = min(bottom + RECEPTIVE_RADIUS, height), min(right + RECEPTIVE_RADIUS, width)
            maps = estimate(image[..., y0:y1, x0:x1])[..., top - y0 : bottom - y0, left - x0 : right - x0]
            with lock:
                if not result:
                    result.append(maps.new_empty((*maps.shape[:2], height, width)))
            result[0][..., top:bottom, left:right] = maps

        self._pool.run(estimate_region, self._pool.split(height, width, self.tile, square=True))
        return result[0]

    def _eps_and_gain(
        self,
        reader: TileReader,
        maps: torch.Tensor | None,
        exposure: Exposure,
        finish: bool,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | float]:
        """The finishing's filter setting (``None`` without ``finish``) and the gain
        (:func:`~scl_lle.engine.picture_exposure.picture_gain`), on one thread."""

        def estimate(factor: int) -> torch.Tensor:
            return self._estimate_maps(reader.downsample(factor, pool=self._pool), self._network(reader))

        with self._pool.serial():
            eps = read_detail_eps(reader.read, reader.height, reader.width) if finish else None
            return eps, picture_gain(reader, maps, exposure, estimate, eps, weights)

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
                if self.model is not None:
                    self._estimate = TorchEstimator(self.model, self.channels_last, False)
        with torch.inference_mode():
            return function(*args)

    def curve_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Estimate the curve maps of ``(B, 3, H, W)`` in [0, 1] at this enhancer's ``scale``.

        Returns ``(B, 3 * n, ceil(H / scale), ceil(W / scale))`` in [-1, 1] on the enhancer's device and dtype,
        to be edited (smoothed across video frames) and applied with :meth:`apply_curve_maps`.
        """
        x = images.to(device=self.device, dtype=self.dtype)
        return self._guarded(lambda t: self._estimate_maps(downsample(t, self.scale_for(*t.shape[-2:]))), x)

    def scale_for(self, height: int, width: int) -> int:
        """The scale a picture of ``(height, width)`` gets: ``scale``, or for ``"auto"`` :func:`auto_scale`."""
        return auto_scale(height, width) if self.scale == "auto" else int(self.scale)

    def exposure_gain(
        self, images: torch.Tensor, maps: torch.Tensor, exposure: Exposure | None = None, *, as_applied: bool = False
    ) -> torch.Tensor | float:
        """The gain on ``maps`` (from :meth:`curve_maps`) that realises ``exposure`` for ``(B, 3, H, W)`` in [0, 1]:
        ``(B,)`` float32, or 1.0 for ``"off"``, for the maps as given: scale them with
        :func:`~scl_lle.engine.exposure.scale_maps` and apply them at ``"off"`` (a video does). ``as_applied``: the
        gain for the maps as :meth:`apply_curve_maps` applies them, with the local weights it gives them under
        ``local_weighting`` (the web preview's; the same without local weighting)."""
        setting = self._exposure(exposure)
        reader = TileReader(images, self.device, self.dtype)
        finish = self.finish and setting != OFF

        def gain(m: torch.Tensor) -> torch.Tensor | float:
            weights = picture_weights(reader, setting, as_applied and self.local_weighting)
            return self._eps_and_gain(reader, m, setting, finish, weights)[1]

        return self._guarded(gain, maps.to(device=self.device, dtype=self.dtype))

    def apply_curve_maps(
        self, images: torch.Tensor, maps: torch.Tensor, exposure: Exposure | None = None
    ) -> torch.Tensor:
        """Apply maps from :meth:`curve_maps` to ``(B, 3, H, W)`` in [0, 1]; same shape back, enhancer's device.

        ``exposure``: as for calling the enhancer. The maps are weighted region by region (under
        ``local_weighting``, :func:`~scl_lle.engine.picture_exposure.picture_weights`) and scaled by the gain that
        reaches it (:meth:`exposure_gain`), so every curve stays monotone from [0, 1] onto [0, 1]; ``"off"`` applies
        them as given (maps scaled beforehand, such as a video's smoothed gains, without local weights). Finished as set
        by ``finish``.
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
        """Enhance a decoded :class:`~scl_lle.io.picture.Picture`; alpha and metadata pass through unchanged.
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
