"""The decoded picture (:class:`Picture`: pixels, alpha and what must be carried to the output) and its
conversions to and from Pillow images.

Pixels travel as numpy arrays: ``(H, W)`` grey or ``(H, W, 3)`` RGB, dtype ``uint8``, ``uint16`` or
``float32`` (in [0, 1]); alpha, when present, is a separate ``(H, W)`` array of the same dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, features

from .samples import as_dtype

__all__ = ["HAS_AVIF", "Picture", "picture_from_pil", "picture_to_pil"]

#: Whether this Pillow reads and writes AVIF (Pillow 11.3+ built with libavif).
HAS_AVIF = bool(features.check("avif"))

# Modes whose pixels Pillow converts to RGB; an ICC profile describing the original space no longer applies.
_FOREIGN_SPACES = {"CMYK", "LAB", "HSV", "YCbCr"}


@dataclass
class Picture:
    """Decoded pixels plus what must be carried to the output file.

    Attributes:
        pixels: ``(H, W)`` grey or ``(H, W, 3)`` RGB; ``uint8``, ``uint16`` or ``float32`` in [0, 1].
        alpha: ``(H, W)`` of the same dtype, or ``None``.
        format: the Pillow format name of the source (``"PNG"``, ``"JPEG"``, ...), or ``None``.
        icc_profile: the embedded ICC profile, or ``None``.
        exif: EXIF bytes with the orientation already applied (tag reset), or ``None``.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    format: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.pixels.shape[1], self.pixels.shape[0]


def _plain_mode(image: Image.Image) -> Image.Image:
    """``image`` in one of the modes :func:`picture_from_pil` reads directly: grey stays grey, palette and
    other colour spaces become RGB(A)."""
    mode = image.mode
    if mode == "1":
        return image.convert("L")
    if mode == "La":
        return image.convert("LA")
    if mode in ("P", "PA"):
        return image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    if mode == "RGBa":
        return image.convert("RGBA")
    if mode == "RGBX" or mode in _FOREIGN_SPACES:
        return image.convert("RGB")
    return image


def picture_from_pil(image: Image.Image) -> Picture:
    """Convert a decoded Pillow image of any mode to a :class:`Picture` (orientation is not applied here).

    Grey modes stay grey, 16-bit grey stays ``uint16``, ``F`` becomes ``float32`` clipped to [0, 1], palette
    and other colour spaces become RGB(A).
    """
    icc = None if image.mode in _FOREIGN_SPACES else image.info.get("icc_profile") or None
    image = _plain_mode(image)
    mode, alpha = image.mode, None
    if mode in ("RGBA", "LA"):
        array = np.asarray(image)
        pixels, alpha = array[..., :-1], array[..., -1]
        if mode == "LA":
            pixels = pixels[..., 0]
    elif mode.startswith("I;16"):
        pixels = np.asarray(image).astype(np.uint16)
    elif mode == "I":
        pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    elif mode == "F":
        pixels = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0)
    elif mode in ("RGB", "L"):
        pixels = np.asarray(image)
    else:
        pixels = np.asarray(image.convert("RGB"))
    return Picture(pixels=np.ascontiguousarray(pixels), alpha=alpha, format=image.format, icc_profile=icc)


def picture_to_pil(picture: Picture) -> Image.Image:
    """A Pillow image of the picture's pixels (8-bit grey/RGB(A), 16-bit grey ``I;16``, float grey ``F``).

    16-bit colour cannot be held by Pillow; it is reduced to 8 bits here (files keep 16 bits: see
    :func:`scl_lle.io.image.write_image`).
    """
    pixels, alpha = picture.pixels, picture.alpha
    if pixels.ndim == 2 and alpha is None and pixels.dtype == np.uint16:
        image = Image.frombytes("I;16", (pixels.shape[1], pixels.shape[0]), pixels.astype("<u2").tobytes())
    elif pixels.ndim == 2 and alpha is None and pixels.dtype == np.float32:
        image = Image.frombytes("F", (pixels.shape[1], pixels.shape[0]), pixels.astype("<f4").tobytes())
    else:
        pixels8 = as_dtype(pixels, np.uint8)
        if alpha is not None:
            channels = pixels8[..., None] if pixels8.ndim == 2 else pixels8
            merged = np.dstack((channels, as_dtype(alpha, np.uint8)))
            image = Image.fromarray(merged, mode="LA" if pixels8.ndim == 2 else "RGBA")
        else:
            image = Image.fromarray(pixels8, mode="L" if pixels8.ndim == 2 else "RGB")
    if picture.icc_profile:
        image.info["icc_profile"] = picture.icc_profile
    if picture.exif:
        image.info["exif"] = picture.exif
    return image
