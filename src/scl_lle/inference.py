"""The inference engine: :class:`Enhancer` runs DCE-Net on tensors, arrays and Pillow images, in bounded memory.

Large images are processed in tiles. Each tile is given a margin of :data:`~scl_lle.model.RECEPTIVE_RADIUS`
pixels of real context for curve estimation, so the tiled result equals the untiled one. With ``scale > 1`` the
curve maps are estimated on the image shrunk by ``scale`` and upsampled bilinearly, tile by tile, to full
resolution (Zero-DCE++ style).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from .imageio import Picture, picture_from_pil, picture_to_pil
from .model import RECEPTIVE_RADIUS, DCENet, apply_curves, downsample, upsample_maps
from .weights import load_dcenet

__all__ = ["Enhancer", "enhance_tensor", "resolve_device"]

Region = tuple[int, int, int, int]  # top, left, bottom, right

# ITU-R BT.601 luma weights (Pillow's RGB -> L): grey pictures are enhanced as RGB and turned back to grey.
_LUMA = (0.299, 0.587, 0.114)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to :class:`torch.device`."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _regions(height: int, width: int, tile: int | None) -> Iterator[Region]:
    if not tile or (height <= tile and width <= tile):
        yield 0, 0, height, width
        return
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, left, min(top + tile, height), min(left + tile, width)


def _estimated_maps(model: DCENet, image: torch.Tensor, tile: int | None) -> Iterator[tuple[Region, torch.Tensor]]:
    """Curve maps of ``image`` ``(B, 3, H, W)`` region by region, each computed with full context."""
    height, width = image.shape[-2:]
    margin = RECEPTIVE_RADIUS
    for top, left, bottom, right in _regions(height, width, tile):
        y0, x0 = max(top - margin, 0), max(left - margin, 0)
        y1, x1 = min(bottom + margin, height), min(right + margin, width)
        maps = model.curve_maps(image[..., y0:y1, x0:x1])
        yield (top, left, bottom, right), maps[..., top - y0 : bottom - y0, left - x0 : right - x0]


def enhance_tensor(model: DCENet, image: torch.Tensor, scale: int = 1, tile_size: int | None = 1024) -> torch.Tensor:
    """Enhance ``(B, 3, H, W)`` in [0, 1] with ``model``, in tiles of ``tile_size`` (``None``: one piece).

    With ``scale > 1`` the maps are estimated on the image shrunk ``scale`` times. Returns ``(B, 3, H, W)``.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    scale = int(scale)
    height, width = image.shape[-2:]
    if scale == 1:
        if len(list(_regions(height, width, tile_size))) == 1:
            return apply_curves(image, model.curve_maps(image)).clamp_(0.0, 1.0)
        out = torch.empty_like(image)
        for (top, left, bottom, right), maps in _estimated_maps(model, image, tile_size):
            out[..., top:bottom, left:right] = apply_curves(image[..., top:bottom, left:right], maps)
        return out.clamp_(0.0, 1.0)
    small = downsample(image, scale)
    small_maps = torch.empty(
        (image.shape[0], 3 * model.iterations, *small.shape[-2:]), dtype=image.dtype, device=image.device
    )
    for (top, left, bottom, right), maps in _estimated_maps(model, small, tile_size):
        small_maps[..., top:bottom, left:right] = maps
    out = torch.empty_like(image)
    for region in _regions(height, width, tile_size):
        top, left, bottom, right = region
        maps = upsample_maps(small_maps, (height, width), region)
        out[..., top:bottom, left:right] = apply_curves(image[..., top:bottom, left:right], maps)
    return out.clamp_(0.0, 1.0)


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
            ``.pth`` file, or a :class:`~scl_lle.model.DCENet` instance.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        scale: estimate the curves on the image shrunk by this integer factor (faster, slightly smoother).
        tile_size: process images larger than this many pixels per side in tiles (bounded memory, same result);
            ``None`` processes every image in one piece.
        dtype: the compute dtype (``torch.float32``; ``float16`` / ``bfloat16`` on GPUs).

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
    ) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}")
        if tile_size is not None and tile_size < 1:
            raise ValueError(f"tile_size must be positive or None, got {tile_size}")
        self.device = resolve_device(device)
        self.dtype = dtype
        self.scale = int(scale)
        self.tile_size = tile_size
        model = weights if isinstance(weights, DCENet) else load_dcenet(weights)
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)

    def __repr__(self) -> str:
        return f"Enhancer(device={self.device}, dtype={self.dtype}, scale={self.scale}, tile_size={self.tile_size})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Enhance ``(B, 3, H, W)`` or ``(3, H, W)`` float in [0, 1]; same shape, dtype and device back."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError("expected a floating-point torch.Tensor in [0, 1]")
        if images.ndim not in (3, 4) or images.shape[-3] != 3:
            raise ValueError(f"expected shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        batch = images if images.ndim == 4 else images.unsqueeze(0)
        with torch.inference_mode():
            x = batch.to(device=self.device, dtype=self.dtype)
            out = enhance_tensor(self.model, x, self.scale, self.tile_size)
            out = out.to(device=images.device, dtype=images.dtype)
        return out if images.ndim == 4 else out.squeeze(0)

    def enhance_array(self, pixels: np.ndarray) -> np.ndarray:
        """Enhance ``(H, W)`` grey or ``(H, W, 3)`` RGB pixels (uint8, uint16 or float in [0, 1]).

        Grey images are enhanced as RGB and turned back into grey (BT.601 luma). Returns the same shape and
        dtype.
        """
        pixels = np.asarray(pixels)
        grey = pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1)
        if not grey and (pixels.ndim != 3 or pixels.shape[2] != 3):
            raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3) pixels, got shape {pixels.shape}")
        unit = _to_unit_float(pixels)
        rgb = np.repeat(unit.reshape(*unit.shape[:2], 1), 3, axis=2) if grey else unit
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
        out = self(tensor)[0].permute(1, 2, 0).numpy()
        if grey:
            out = (out @ np.asarray(_LUMA, dtype=np.float32)).reshape(pixels.shape)
        return _from_unit_float(out, pixels.dtype)

    def enhance_picture(self, picture: Picture) -> Picture:
        """Enhance a decoded :class:`~scl_lle.imageio.Picture`; alpha and metadata pass through unchanged."""
        return Picture(
            pixels=self.enhance_array(picture.pixels),
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
