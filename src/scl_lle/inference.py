"""The inference engine: :class:`Enhancer` runs DCE-Net on tensors, arrays and Pillow images, in bounded memory.

Large images are processed in tiles. Each tile is given a margin of :data:`~scl_lle.model.RECEPTIVE_RADIUS`
pixels of real context for curve estimation, so the tiled result equals the untiled one. With ``scale > 1`` the
curve maps are estimated on the image shrunk by ``scale`` and upsampled bilinearly, tile by tile, to full
resolution (Zero-DCE++ style); upsampling and the eight curves are fused
(:func:`~scl_lle.model.apply_upsampled_curves`), so no full-resolution 24-channel maps are materialised.

Curve estimation (the network) runs in PyTorch (``backend="torch"``, channels-last on the CPU, optionally
``torch.compile``-d) or in ONNX Runtime (``backend="onnxruntime"``); everything else is the same for both.
``backend="auto"`` (the default) takes ONNX Runtime where it is measured faster: float32 on the CPU, when it is
installed (:func:`resolve_backend`).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image

from .exposure import OFF, Exposure, auto_target, parse_exposure, scale_maps, solve_gain, thumbnail_factor
from .finishing import DETAIL_RADIUS, detail_eps, split_detail
from .imageio import Picture, picture_from_pil, picture_to_pil
from .model import RECEPTIVE_RADIUS, DCENet, apply_upsampled_curves, downsample, upsampled_curves_band
from .weights import is_onnx_file, load_dcenet

__all__ = [
    "BACKENDS",
    "FAST_SCALE",
    "Enhancer",
    "apply_curve_maps",
    "base_layer",
    "enhance_tensor",
    "estimate_curve_maps",
    "finish_curves",
    "resolve_backend",
    "resolve_device",
]

Region = tuple[int, int, int, int]  # top, left, bottom, right
CurveEstimator = Callable[[torch.Tensor], torch.Tensor]

#: Where the curve-estimation network runs; ``"auto"`` picks one of the others (:func:`resolve_backend`).
BACKENDS = ("auto", "torch", "onnxruntime")

#: The ``--fast`` preset's scale: curves estimated at 1/8 of the size in each direction. The trade-off (time,
#: PSNR against full resolution) for scales 1-8 is measured in docs/PERFORMANCE.md.
FAST_SCALE = 8

# ITU-R BT.601 luma weights (Pillow's RGB -> L): grey pictures are enhanced as RGB and turned back to grey.
_LUMA = (0.299, 0.587, 0.114)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to :class:`torch.device`.

    Under ``torchrun`` (``LOCAL_RANK`` set) a CUDA device without an index becomes ``cuda:LOCAL_RANK``.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        else:
            mps = getattr(torch.backends, "mps", None)
            device = "mps" if mps is not None and mps.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and "LOCAL_RANK" in os.environ:
        resolved = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return resolved


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


def _regions(height: int, width: int, tile: int | None) -> Iterator[Region]:
    if not tile or (height <= tile and width <= tile):
        yield 0, 0, height, width
        return
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


def _as_estimator(model: DCENet | CurveEstimator) -> CurveEstimator:
    return model.curve_maps if isinstance(model, DCENet) else model


def _estimated_maps(
    estimate: CurveEstimator, image: torch.Tensor, tile: int | None
) -> Iterator[tuple[Region, torch.Tensor]]:
    """Curve maps of ``image`` ``(B, 3, H, W)`` region by region, each computed with full context."""
    height, width = image.shape[-2:]
    margin = RECEPTIVE_RADIUS
    for top, left, bottom, right in _regions(height, width, tile):
        y0, x0 = max(top - margin, 0), max(left - margin, 0)
        y1, x1 = min(bottom + margin, height), min(right + margin, width)
        maps = estimate(image[..., y0:y1, x0:x1])
        yield (top, left, bottom, right), maps[..., top - y0 : bottom - y0, left - x0 : right - x0]


def _apply_curves_into(out: torch.Tensor, image: torch.Tensor, maps: torch.Tensor) -> None:
    """``out[:] = apply_curves(image, maps)`` with in-place updates (one 3-channel temporary)."""
    out.copy_(image)
    for i in range(maps.shape[1] // 3):
        out.add_(torch.mul(out, out).sub_(out).mul_(maps[:, 3 * i : 3 * i + 3]))


def enhance_tensor(
    model: DCENet | CurveEstimator,
    image: torch.Tensor,
    scale: int = 1,
    tile_size: int | None = 1024,
    *,
    band_kernel: Callable[..., torch.Tensor] | None = None,
    apply_to: torch.Tensor | None = None,
) -> torch.Tensor:
    """Enhance ``(B, 3, H, W)`` in [0, 1] with ``model``, in tiles of ``tile_size`` (``None``: one piece).

    ``model`` is a :class:`~scl_lle.model.DCENet` or any function from an image tile to its curve maps (another
    runtime, a compiled network). With ``scale > 1`` the maps are estimated on the image shrunk ``scale`` times
    and applied with the fused upsample-and-curves pass (``band_kernel``: a compiled
    :func:`~scl_lle.model.upsampled_curves_band`, or ``None`` for eager). ``apply_to`` (same shape as
    ``image``, default ``image``): the picture the curves estimated from ``image`` are applied to, for example
    its base layer (:mod:`scl_lle.finishing`). Returns ``(B, 3, H, W)``.
    """
    target = image if apply_to is None else apply_to
    if target.shape != image.shape:
        raise ValueError(f"apply_to must have the image's shape {tuple(image.shape)}, got {tuple(target.shape)}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    scale = int(scale)
    estimate = _as_estimator(model)
    if scale == 1:
        out = torch.empty(image.shape, dtype=image.dtype, device=image.device)
        for (top, left, bottom, right), maps in _estimated_maps(estimate, image, tile_size):
            region = (..., slice(top, bottom), slice(left, right))
            _apply_curves_into(out[region], target[region], maps)
        return out.clamp_(0.0, 1.0)
    small_maps = estimate_curve_maps(estimate, image, scale, tile_size)
    return apply_curve_maps(target, small_maps, tile_size, band_kernel=band_kernel)


def estimate_curve_maps(
    model: DCENet | CurveEstimator, image: torch.Tensor, scale: int = 1, tile_size: int | None = 1024
) -> torch.Tensor:
    """Curve maps of ``(B, 3, H, W)`` estimated on the image shrunk ``scale`` times, in tiles of ``tile_size``.

    Returns ``(B, 3 * n, ceil(H / scale), ceil(W / scale))`` in [-1, 1], for :func:`apply_curve_maps`.
    """
    small = downsample(image, int(scale))
    small_maps: torch.Tensor | None = None
    for (top, left, bottom, right), maps in _estimated_maps(_as_estimator(model), small, tile_size):
        if small_maps is None:
            small_maps = torch.empty((*maps.shape[:2], *small.shape[-2:]), dtype=image.dtype, device=image.device)
        small_maps[..., top:bottom, left:right] = maps
    assert small_maps is not None
    return small_maps


def apply_curve_maps(
    image: torch.Tensor,
    small_maps: torch.Tensor,
    tile_size: int | None = 1024,
    *,
    band_kernel: Callable[..., torch.Tensor] | None = None,
) -> torch.Tensor:
    """Apply curve maps ``(B, 3 * n, h, w)`` (full or lower resolution) to ``(B, 3, H, W)``; clamped to [0, 1].

    Lower-resolution maps are upsampled bilinearly on the fly (the fused pass), in full-width strips of
    ``tile_size`` rows. Returns ``(B, 3, H, W)``.
    """
    height, width = image.shape[-2:]
    out = torch.empty(image.shape, dtype=image.dtype, device=image.device)
    if small_maps.shape[-2:] == image.shape[-2:]:
        _apply_curves_into(out, image, small_maps.to(image.dtype))
        return out.clamp_(0.0, 1.0)
    # Full-width strips: the fused pass holds only 3-channel full-resolution data, so memory stays bounded by
    # the strip height while long rows keep the per-operation overhead low.
    strip = tile_size or height
    for top in range(0, height, strip):
        bottom = min(top + strip, height)
        apply_upsampled_curves(
            image[..., top:bottom, :],
            small_maps,
            (height, width),
            (top, 0, bottom, width),
            band_kernel=band_kernel,
            out=out[..., top:bottom, :],
            clamp=True,
        )
    return out


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
    """Curve estimation in ONNX Runtime (the network exported by :func:`scl_lle.export.build_onnx`)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(tile.detach().to("cpu", torch.float32).numpy())
        (maps,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(maps).to(device=tile.device, dtype=tile.dtype)


def base_layer(image: torch.Tensor, tile_size: int | None = 1024) -> torch.Tensor:
    """The base layer of ``(B, 3, H, W)`` (:func:`~scl_lle.finishing.split_detail`), in strips of ``tile_size``
    rows with enough context that the result equals the one-piece computation. Computed in float32 whatever the
    image's dtype (the filter's variances cancel badly in half precision). Returns ``(B, 3, H, W)``."""
    eps = detail_eps(image).float()  # from the whole image, so every strip uses the same threshold
    height = image.shape[-2]
    if not tile_size or height <= tile_size:
        return split_detail(image.float(), eps=eps)[0].to(image.dtype)
    margin = 2 * DETAIL_RADIUS  # the guided filter averages twice over radius-wide windows
    out = torch.empty_like(image)
    for top in range(0, height, tile_size):
        bottom = min(top + tile_size, height)
        y0, y1 = max(top - margin, 0), min(bottom + margin, height)
        base = split_detail(image[..., y0:y1, :].float(), eps=eps)[0]
        out[..., top:bottom, :] = base[..., top - y0 : bottom - y0, :]
    return out


def finish_curves(
    image: torch.Tensor, curves: Callable[[torch.Tensor], torch.Tensor], tile_size: int | None = 1024
) -> torch.Tensor:
    """Apply ``curves`` (a function of a ``(B, 3, H, W)`` picture) the finished way (:mod:`scl_lle.finishing`):
    to the base layer of ``image``, with the detail layer added back at unit gain. Returns ``(B, 3, H, W)`` in
    [0, 1]; curves that are the identity (gain 0) return ``image``."""
    base = base_layer(image, tile_size)
    out = curves(base)
    return out.add_(image).sub_(base).clamp_(0.0, 1.0)


def _keep_unchanged(out: torch.Tensor, image: torch.Tensor, gain: torch.Tensor | float) -> torch.Tensor:
    """``out`` ``(B, 3, H, W)`` with the images whose gain is 0 (identity curves) replaced by ``image`` exactly."""
    if isinstance(gain, torch.Tensor) and bool((gain == 0).any()):
        keep = (gain == 0).to(out.device).view(-1, 1, 1, 1)
        out = torch.where(keep, image, out)
    return out


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
    raise TypeError(f"unsupported pixel type {array.dtype}: use uint8, uint16 or float in [0, 1]")


def _from_unit_float(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        return np.round(array * 255.0).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(array * 65535.0).astype(np.uint16)
    return array.astype(dtype)


class Enhancer:
    """Low-light enhancement with a DCE-Net.

    Args:
        weights: ``None`` for the embedded default model, a pretrained name, a path to a ``.safetensors`` or
            ``.pth`` file, or a :class:`~scl_lle.model.DCENet` instance. With ``backend="onnxruntime"`` also a
            ``.onnx`` file written by :func:`scl_lle.export.export_onnx` (the network alone).
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
        threads: CPU threads for the network (``torch.set_num_threads``, which is process-wide, and ONNX
            Runtime's intra-op threads); ``None`` keeps PyTorch's setting (its default, or ``OMP_NUM_THREADS``,
            which ``torchrun`` sets to 1 per process).
        channels_last: run the network on channels-last tensors; ``None``: on the CPU (measured faster) and on
            CUDA in half precision.
        compile: ``torch.compile`` the network (torch backend) and the fused upsample-and-curves pass
            (``scale > 1``). Faster per image after a one-time compilation of tens of seconds (cached on disk
            by PyTorch); needs a C++ compiler on the CPU. Falls back to eager with a warning if it fails.
        finish: apply the curves to the base layer with the detail (mostly noise) added back at unit gain
            (:mod:`scl_lle.finishing`); ``False`` applies the curves alone, as the paper does.
        exposure: how bright the result is (:mod:`scl_lle.exposure`): ``"auto"`` (a target chosen from each
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
        tile_size: int | None = 1024,
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
            from .export import onnxruntime_session

            fallback = requested == "auto" and not is_onnx_file(weights)
            if fallback and not isinstance(weights, DCENet):
                source = load_dcenet(weights)  # errors in the weights surface here, not as an ONNX failure
            try:
                self._session = onnxruntime_session(source, device=self.device, threads=threads)
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
            f"tile_size={self.tile_size}, channels_last={self.channels_last}, compile={self.compile}, "
            f"finish={self.finish}, exposure={self.exposure!r})"
        )

    def _run(self, x: torch.Tensor, exposure: Exposure) -> torch.Tensor:
        """Enhance ``(B, 3, H, W)`` on the enhancer's device: maps estimated tile by tile, scaled by the
        exposure's gain, applied (finished or not). Images whose gain is 0 (already at or above the target)
        come back exactly as they were."""
        small_maps = None
        if self.scale > 1:
            small_maps = estimate_curve_maps(self._estimate, x, self.scale, self.tile_size)
        gain = self._gain(x, small_maps, exposure)
        unchanged = isinstance(gain, torch.Tensor) and bool((gain == 0).all())
        if unchanged:
            return x.clone()
        if small_maps is None:
            base = self._estimate

            def estimate(tile: torch.Tensor) -> torch.Tensor:
                return scale_maps(base(tile), gain)

            def curves(picture: torch.Tensor) -> torch.Tensor:
                return enhance_tensor(estimate, x, 1, self.tile_size, apply_to=picture)

        else:
            maps = scale_maps(small_maps, gain)

            def curves(picture: torch.Tensor) -> torch.Tensor:
                return apply_curve_maps(picture, maps, self.tile_size, band_kernel=self._band_kernel)

        return _keep_unchanged(self._apply(x, curves), x, gain)

    def _apply(self, x: torch.Tensor, curves: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return finish_curves(x, curves, self.tile_size) if self.finish else curves(x)

    def _gain(self, x: torch.Tensor, maps: torch.Tensor | None, exposure: Exposure) -> torch.Tensor | float:
        """The gain on the curve maps that realises ``exposure`` for ``x`` ``(B, 3, H, W)``: ``(B,)``, or 1.0
        for ``"off"``. Solved on a thumbnail: every ``f``-th pixel of ``x`` (sampled, not averaged, so the
        brightness histogram and with it the mean after the curves are kept) with the curve maps at that grid:
        ``maps`` (low-resolution maps already estimated) shrunk to it, or, without them, maps the network
        estimates on the thumbnail (one small extra forward)."""
        if exposure == OFF:
            return 1.0
        if maps is None:
            factor = thumbnail_factor(*x.shape[-2:])
            thumb_maps = self._estimate(downsample(x, factor))
        else:
            shrink = thumbnail_factor(*maps.shape[-2:])
            factor = self.scale * shrink
            thumb_maps = downsample(maps, shrink)
        thumb = x[..., ::factor, ::factor]
        target = auto_target(thumb) if isinstance(exposure, str) else exposure
        return solve_gain(thumb, thumb_maps, target)

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
        x = batch.to(device=self.device, dtype=self.dtype)
        out = self._guarded(self._run, x, setting)
        out = out.to(device=images.device, dtype=images.dtype)
        return out if images.ndim == 4 else out.squeeze(0)

    def _guarded(self, function: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
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
        return self._guarded(lambda t: estimate_curve_maps(self._estimate, t, self.scale, self.tile_size), x)

    def exposure_gain(
        self, images: torch.Tensor, maps: torch.Tensor, exposure: Exposure | None = None
    ) -> torch.Tensor | float:
        """The gain on ``maps`` (from :meth:`curve_maps`) that realises ``exposure`` for ``(B, 3, H, W)`` in [0, 1]:
        ``(B,)`` float32, or 1.0 for ``"off"``. Scale the maps with :func:`~scl_lle.exposure.scale_maps`."""
        setting = self._exposure(exposure)
        x = images.to(device=self.device, dtype=self.dtype)
        return self._guarded(lambda t, m: self._gain(t, m, setting), x, maps.to(device=self.device, dtype=self.dtype))

    def apply_curve_maps(
        self, images: torch.Tensor, maps: torch.Tensor, exposure: Exposure | None = None
    ) -> torch.Tensor:
        """Apply maps from :meth:`curve_maps` to ``(B, 3, H, W)`` in [0, 1]; same shape back, enhancer's device.

        ``exposure``: as for calling the enhancer. The maps are scaled by the gain that reaches it
        (:meth:`exposure_gain`), so every curve stays monotone from [0, 1] onto [0, 1]; ``"off"`` applies them as
        given (maps scaled beforehand, such as a video's smoothed gains). Finished as set by ``finish``.
        """
        x = images.to(device=self.device, dtype=self.dtype)
        maps = maps.to(device=self.device, dtype=self.dtype)
        setting = self._exposure(exposure)

        def run(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            gain = self._gain(t, m, setting)
            scaled = scale_maps(m, gain)

            def curves(picture: torch.Tensor) -> torch.Tensor:
                return apply_curve_maps(picture, scaled, self.tile_size, band_kernel=self._band_kernel)

            return _keep_unchanged(self._apply(t, curves), t, gain)

        return self._guarded(run, x, maps)

    def enhance_array(self, pixels: np.ndarray, exposure: Exposure | None = None) -> np.ndarray:
        """Enhance ``(H, W)`` grey or ``(H, W, 3)`` RGB pixels (uint8, uint16 or float in [0, 1]).

        Grey images are enhanced as RGB and turned back into grey (BT.601 luma). Returns the same shape and
        dtype. ``exposure``: as for calling the enhancer.
        """
        pixels = np.asarray(pixels)
        grey = pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1)
        if not grey and (pixels.ndim != 3 or pixels.shape[2] != 3):
            raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3) pixels, got shape {pixels.shape}")
        unit = _to_unit_float(pixels)
        rgb = np.repeat(unit.reshape(*unit.shape[:2], 1), 3, axis=2) if grey else unit
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
        out = self(tensor, exposure)[0].permute(1, 2, 0).numpy()
        if grey:
            out = (out @ np.asarray(_LUMA, dtype=np.float32)).reshape(pixels.shape)
        return _from_unit_float(out, pixels.dtype)

    def enhance_picture(self, picture: Picture, exposure: Exposure | None = None) -> Picture:
        """Enhance a decoded :class:`~scl_lle.imageio.Picture`; alpha and metadata pass through unchanged."""
        return Picture(
            pixels=self.enhance_array(picture.pixels, exposure),
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
