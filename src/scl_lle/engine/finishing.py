"""Finishing: how the enhancer applies DCE-Net's curves so that dark photos do not come out grainy.

A curve that lifts a dark pixel six-fold also lifts its noise six-fold: the curve maps are smooth, so they act
like a local gain on everything, signal and noise alike (docs/MODEL_CARD.md, "Finishing"). The finishing applies
the curves to a base layer and adds the detail layer back at unit gain:

    base, detail = split_detail(image)           # image = base + detail
    enhanced = curves(base) + detail

:func:`split_detail` computes the base with a guided filter over 3x3 windows steered by the luminance, whose
threshold follows the photo's own noise (:func:`estimate_noise`, :func:`detail_eps`): local contrast within a few
noise deviations (mostly noise) goes to the detail layer and is not amplified; structure above it stays in the
base and is enhanced by the curves as before. Clean photos are left nearly as the curves alone would leave them;
noisy ones lose much of their amplified grain: what survives the small average is still amplified (on a flat
noisy patch, tests/test_finishing.py, the default model's noise gain falls by about a third, not to 1).

It is per image, deterministic and cheap (box filters). ``Enhancer(finish=False)`` (CLI ``--no-finish``) applies
the curves alone, as the paper does. The constants were chosen on the project's evaluation sets (LIME, DICM, LOL
eval15); the measurements are in docs/MODEL_CARD.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..core.colour import luminance

if TYPE_CHECKING:
    from .tiling import TileReader

__all__ = [
    "BASE_REACH",
    "DETAIL_RADIUS",
    "NOISE_BLOCK",
    "NOISE_MULTIPLE",
    "base_at_centres",
    "base_at_samples",
    "box_filter",
    "detail_eps",
    "estimate_noise",
    "guided_filter",
    "noise_band_rows",
    "noise_eps",
    "noise_of_bands",
    "read_detail_eps",
    "split_detail",
]

#: Radius of the base layer's guided filter (a 3x3 window): only the finest scale is treated as detail.
DETAIL_RADIUS = 1
#: The guided filter's regularisation is ``(NOISE_MULTIPLE * sigma) ** 2``, ``sigma`` the input's noise
#: (:func:`estimate_noise`): local contrast within a few noise deviations counts as detail (mostly noise), stronger
#: structure stays in the base layer and is enhanced by the curves. Clean photos are left nearly as they were.
NOISE_MULTIPLE = 3.0


def box_filter(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over ``(2 radius + 1)`` square windows of ``(B, C, H, W)``, borders replicated; same shape.

    Separable sums of shifted slices (faster on the CPU than ``avg_pool2d`` for the small radii used here).
    """
    if radius < 1:
        return image
    size = 2 * radius + 1
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    height, width = image.shape[-2:]
    rows = padded[..., 0:height, :].clone()
    for shift in range(1, size):
        rows += padded[..., shift : shift + height, :]
    out = rows[..., 0:width].clone()
    for shift in range(1, size):
        out += rows[..., shift : shift + width]
    return out.div_(size * size)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float | torch.Tensor) -> torch.Tensor:
    """Edge-preserving smoothing of ``source`` ``(B, C, H, W)`` steered by ``guide`` ``(B, 1, H, W)``.

    He et al.'s guided filter: in each window ``source ~ a * guide + b`` by least squares with ridge ``eps``; the
    result is the window-averaged fit. Edges of ``guide`` with variance well above ``eps`` are kept, flat areas
    are averaged. Returns ``(B, C, H, W)``.
    """
    mean_guide = box_filter(guide, radius)
    mean_source = box_filter(source, radius)
    covariance = box_filter(guide * source, radius) - mean_guide * mean_source
    variance = box_filter(guide * guide, radius) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_source - a * mean_guide
    return box_filter(a, radius) * guide + box_filter(b, radius)


def noise_eps(noise: torch.Tensor) -> torch.Tensor:
    """The guided filter's ``eps`` for images with noise deviations ``noise`` ``(B,)``:
    ``(NOISE_MULTIPLE * noise) ** 2`` (at least 1e-6), ``(B, 1, 1, 1)`` float32."""
    return (NOISE_MULTIPLE * noise.float()).square().clamp(min=1e-6).view(-1, 1, 1, 1)


def detail_eps(image: torch.Tensor) -> torch.Tensor:
    """The guided filter's ``eps`` for ``(B, 3, H, W)`` in [0, 1] (:func:`noise_eps` of :func:`estimate_noise`):
    ``(B, 1, 1, 1)`` in the image's dtype."""
    return noise_eps(estimate_noise(image)).to(image.dtype)


#: How far from a pixel the base layer's value depends on the image: the guided filter's two box filters.
BASE_REACH = 2 * DETAIL_RADIUS


def base_at_centres(mosaic: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The base layer (:func:`split_detail` with ``eps`` ``(B, 1, 1, 1)``) at the centres of a mosaic of
    ``(2 BASE_REACH + 1)``-pixel squares ``(B, 3, h k, w k)`` (``TileReader.neighbourhoods(step, BASE_REACH)``):
    ``(B, 3, h, w)`` float32, each value what the whole picture's base layer has at that square's centre."""
    side = 2 * BASE_REACH + 1
    base = split_detail(mosaic.float(), eps=eps.float())[0]
    return base[..., BASE_REACH::side, BASE_REACH::side]


def base_at_samples(reader: TileReader, step: int, eps: torch.Tensor) -> torch.Tensor:
    """The whole picture's base layer (:func:`split_detail` with ``eps`` ``(B, 1, 1, 1)``) at the pixels
    ``reader.strided(step)`` samples: ``(B, 3, ceil(H / step), ceil(W / step))`` float32.

    From the mosaic of the squares around them (:func:`base_at_centres`), or, where that mosaic would hold more
    pixels than the picture (``step`` under ``2 BASE_REACH + 1``: pictures up to about 1 MP), from the whole
    picture with its edges replicated ``BASE_REACH`` pixels out, which gives exactly the same values (neither
    filter reaches further) in a fraction of the time.
    """
    side = 2 * BASE_REACH + 1
    if step >= side:
        return base_at_centres(reader.neighbourhoods(step, BASE_REACH), eps)
    height, width = reader.height, reader.width
    picture = F.pad(reader.read(0, 0, height, width).float(), (BASE_REACH,) * 4, mode="replicate")
    base = split_detail(picture, eps=eps.float())[0]
    return base[..., BASE_REACH : BASE_REACH + height : step, BASE_REACH : BASE_REACH + width : step]


def split_detail(
    image: torch.Tensor, radius: int = DETAIL_RADIUS, eps: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(B, 3, H, W)`` in [0, 1] into ``(base, detail)``, ``image = base + detail``.

    ``base`` is the guided filter of each channel steered by the luminance (so the three channels share edges
    and the filter adds no colour fringes), ``detail`` the remainder (noise and the finest texture, zero mean).
    ``eps``: the filter's regularisation, a float or ``(B, 1, 1, 1)``; ``None``: :func:`detail_eps` of ``image``.
    """
    base = guided_filter(luminance(image), image, radius, detail_eps(image) if eps is None else eps)
    return base, image - base


NOISE_BLOCK = 16  # rows and columns of the blocks estimate_noise takes its quantile over
_NOISE_BANDS = 64  # row bands sampled by estimate_noise on large images
_LAPLACE = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))


def noise_band_rows(height: int, block: int = NOISE_BLOCK) -> list[int]:
    """First rows of the ``block + 2``-row bands :func:`estimate_noise` reads from an image ``height`` rows high.

    Up to 64 bands: every block of rows (consecutive bands overlap by the Laplacian's 2 rows), so every pixel
    counts; more: every k-th of the disjoint bands, 64 or a few more (enough for the quantile, and cheap).
    """
    bands = height // (block + 2)
    if bands > _NOISE_BANDS:
        step = bands // _NOISE_BANDS
        return list(range(0, bands * (block + 2), step * (block + 2)))
    return list(range(0, height - block - 1, block))


def noise_of_bands(bands: Iterable[torch.Tensor], block: int = NOISE_BLOCK, quantile: float = 0.1) -> torch.Tensor:
    """:func:`estimate_noise` from the bands it reads (:func:`noise_band_rows`), each ``(B, 3, block + 2, W)`` in
    [0, 1] with ``W >= block + 2``: ``(B,)``. Bands can be read one at a time from a picture never held whole."""
    kernel = torch.tensor(_LAPLACE).view(1, 1, 3, 3)
    blocks = []
    for band in bands:
        luma = luminance(band.float())
        response = F.conv2d(luma, kernel.to(luma.device)).abs()
        blocks.append(F.avg_pool2d(response, block).flatten(1))
    per_block = torch.cat(blocks, dim=1)
    return torch.quantile(per_block, quantile, dim=1) * (torch.pi / 2) ** 0.5 / 6.0


def estimate_noise(image: torch.Tensor, block: int = NOISE_BLOCK, quantile: float = 0.1) -> torch.Tensor:
    """Standard deviation of the noise in ``(B, 3, H, W)`` in [0, 1], per image: ``(B,)``.

    Immerkaer's estimator (the mean absolute response to a Laplacian difference mask, which cancels smooth
    signal) taken over ``block``-pixel blocks of the luminance; the ``quantile`` block is kept, so edges and
    texture, which inflate the estimate, are left out. Large images are sampled in row bands
    (:func:`noise_band_rows`).
    """
    height, width = image.shape[-2:]
    if min(height, width) >= block + 2:
        rows = noise_band_rows(height, block)
        return noise_of_bands((image[..., top : top + block + 2, :] for top in rows), block, quantile)
    luma = luminance(image.float())
    if min(height, width) < 3:  # too small to tell noise from signal
        return torch.zeros(luma.shape[0], dtype=luma.dtype, device=luma.device)
    kernel = torch.tensor(_LAPLACE, dtype=luma.dtype, device=luma.device).view(1, 1, 3, 3)
    per_pixel = F.conv2d(luma, kernel).abs().flatten(1)  # too small for whole blocks: every response counts
    return torch.quantile(per_pixel, quantile, dim=1) * (torch.pi / 2) ** 0.5 / 6.0


def read_detail_eps(read: Callable[[int, int, int, int], torch.Tensor], height: int, width: int) -> torch.Tensor:
    """The guided filter's ``eps`` ``(B, 1, 1, 1)`` of a ``(height, width)`` picture that is read region by region:
    ``read(top, left, bottom, right)`` gives ``(B, 3, h, w)`` in [0, 1]. Only the row bands that
    :func:`estimate_noise` samples are read (one at a time), so the whole picture is never held as floats."""
    if min(height, width) < NOISE_BLOCK + 2:  # a tiny picture: read whole
        return noise_eps(estimate_noise(read(0, 0, height, width)))
    rows = noise_band_rows(height)
    return noise_eps(noise_of_bands(read(top, 0, top + NOISE_BLOCK + 2, width) for top in rows))
