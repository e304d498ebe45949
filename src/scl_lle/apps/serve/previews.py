"""A photo's preview: its curve maps estimated once, then re-rendered at any exposure without a network pass.

The preview is the photo shrunk so that its long side is at most ``ServeLimits.preview_side`` (the whole photo
when it is smaller). :func:`prepare_preview` estimates its curve maps as the enhancer would; :func:`render_preview`
then only solves the exposure gain and applies the kept maps (and the finishing), which takes a fraction of a
second, so the page's exposure control answers at once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ...core.curves import apply_curves_into, downsample, upsample_maps
from ...engine.enhancer import EnhanceError, Enhancer
from ...engine.exposure import AUTO, OFF, Exposure, thumbnail_factor
from ...engine.finishing import detail_eps, split_detail
from ...engine.picture_exposure import picture_weights, weighted_maps
from ...engine.tiling import TileReader
from ...io.pixels import from_unit, tensor_view, to_unit
from ...io.samples import as_dtype

__all__ = ["Preview", "jpeg", "prepare_preview", "preview_pixels", "render_preview"]

PREVIEW_QUALITY = 90  # JPEG quality of previews (shown in the page, never downloaded)


@dataclass(eq=False)
class Preview:
    """A photo's preview prepared for one speed mode: all an exposure change needs (no network pass)."""

    image: torch.Tensor  # (1, 3, h, w) in [0, 1], the enhancer's device and dtype
    base: torch.Tensor  # the finishing's base layer of ``image`` (``image`` itself without finishing)
    maps: torch.Tensor  # (1, 3n, h, w): the curve maps at the preview's size
    gain_image: torch.Tensor  # what Enhancer.exposure_gain is given (with gain_maps): the same gain as for
    gain_maps: torch.Tensor  # (image, the maps as estimated), without shrinking full-size maps every time
    weights: torch.Tensor | None  # (1, 1, gh, gw): the maps' local weights, for an enhancer with local weighting,
    # at every exposure but "off" (the enhancer's for the full preview, which are those it finds for gain_image too)
    gains: dict[tuple[Exposure, bool], float] = field(default_factory=dict)  # solved so far: (exposure, local)
    local_maps: torch.Tensor | None = None  # ``maps`` weighted as the enhancer applies them (made once; as large)


def preview_pixels(pixels: np.ndarray, side: int) -> np.ndarray:
    """A decoded picture's pixels as 8-bit RGB ``(h, w, 3)``, shrunk so that the long side is at most ``side``."""
    pixels = as_dtype(pixels, np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    image = image.convert("RGB")
    height, width = image.height, image.width
    if max(height, width) > side:
        factor = side / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image)


def prepare_preview(enhancer: Enhancer, pixels: np.ndarray) -> Preview:
    """Estimate the curve maps of the preview ``pixels`` (8-bit RGB ``(h, w, 3)``) once, as ``enhancer`` would."""
    image = to_unit(tensor_view(pixels).permute(2, 0, 1).unsqueeze(0), enhancer.dtype, enhancer.device)
    small = enhancer.curve_maps(image)
    if not bool(torch.isfinite(small.sum(dtype=torch.float32))):
        raise EnhanceError("the network gave non-finite curve maps for this picture (broken or overflowing weights?)")
    with torch.inference_mode():
        size = (image.shape[-2], image.shape[-1])
        maps = small if small.shape[-2:] == image.shape[-2:] else upsample_maps(small, size)
        if enhancer.scale == 1:  # picture_gain's thumbnail of full-size maps, taken once
            shrink = thumbnail_factor(*small.shape[-2:])
            gain_image, gain_maps = image[..., ::shrink, ::shrink], downsample(small, shrink)
        else:
            gain_image, gain_maps = image, small
        if enhancer.finish:
            float_image = image.float()
            base = split_detail(float_image, eps=detail_eps(float_image))[0].to(image.dtype)
        else:
            base = image
        # Whatever the enhancer's setting: renders with and without local weighting share the preview
        weights = picture_weights(TileReader(image, enhancer.device, enhancer.dtype), AUTO, local_weighting=True)
    return Preview(image, base, maps, gain_image, gain_maps, weights)


def render_preview(enhancer: Enhancer, preview: Preview, exposure: Exposure) -> torch.Tensor:
    """The preview enhanced at ``exposure``: the gain solved, the kept maps scaled by it and applied (with the
    finishing's detail added back, and the local weights under the enhancer's ``local_weighting``), as
    :meth:`Enhancer.apply_curve_maps` does; ``(1, 3, h, w)`` in [0, 1]."""
    local = enhancer.local_weighting and exposure != OFF
    if (exposure, local) not in preview.gains:
        gain = enhancer.exposure_gain(preview.gain_image, preview.gain_maps, exposure, as_applied=True)
        # -1: "off" (the maps as they are); 0: already at or above the target (the image as it is)
        preview.gains[exposure, local] = float(gain[0]) if isinstance(gain, torch.Tensor) else -1.0
    factor = preview.gains[exposure, local]
    if factor == 0.0:
        return preview.image  # unchanged, as the engine leaves it
    width = preview.image.shape[-1]
    # On the CPU in bands of about 64k pixels, which stay in the cache through the eight curves (3x faster)
    rows = max(1, (1 << 16) // width) if preview.image.device.type == "cpu" else None
    with torch.inference_mode():
        out = torch.empty_like(preview.base)
        maps = _weighted(enhancer, preview, preview.weights if local else None)
        apply_curves_into(out, preview.base, maps, None if factor < 0 else factor, rows)
        if enhancer.finish:
            out.add_(preview.image).sub_(preview.base)  # the detail layer back at unit gain
        return out.clamp_(0.0, 1.0)


def _weighted(enhancer: Enhancer, preview: Preview, weights: torch.Tensor | None) -> torch.Tensor:
    """The preview's curve maps at its size with ``weights`` as the enhancer gives them: multiplied into the maps
    the network gave (at ``scale`` > 1 the small ones, which are then upsampled), so preview and download agree.
    Made at the first render with the weights and kept, so later exposure changes cost no more than without."""
    if weights is None:
        return preview.maps
    if preview.local_maps is None:
        if enhancer.scale == 1:
            preview.local_maps = weighted_maps(preview.maps, weights)
        else:
            preview.local_maps = upsample_maps(weighted_maps(preview.gain_maps, weights), preview.maps.shape[-2:])
    return preview.local_maps


def jpeg(pixels: torch.Tensor | np.ndarray) -> bytes:
    """``(1, 3, h, w)`` in [0, 1] or ``(h, w, 3)`` uint8 as JPEG bytes (a preview)."""
    if isinstance(pixels, torch.Tensor):
        pixels = from_unit(pixels[0].permute(1, 2, 0), torch.uint8).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()
