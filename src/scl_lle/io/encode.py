"""Encoding a :class:`~scl_lle.io.picture.Picture` in the format its file ending names.

Samples are fitted to what the format stores (:func:`fit_to_format`); 16-bit colour (or grey with alpha) PNG is
written through OpenCV and 16-bit TIFF through tifffile (Pillow cannot hold them), HEIC through
:mod:`scl_lle.io.formats`, everything else through Pillow, with EXIF and the ICC profile where the format has them.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import ImageWriteError, WarningHandler, warn
from .files import HEIF_EXTENSIONS
from .formats import write_heif
from .picture import HAS_AVIF, Picture, picture_to_pil
from .samples import as_dtype

__all__ = ["WRITABLE_EXTENSIONS", "encode", "fit_to_format", "output_format"]

_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".pnm": "PPM",
    ".tga": "TGA",
    **({".avif": "AVIF"} if HAS_AVIF else {}),
    **dict.fromkeys(HEIF_EXTENSIONS, "HEIF"),  # without pillow-heif, writing says which extra to install
}
#: File endings that :func:`scl_lle.io.image.write_image` can write.
WRITABLE_EXTENSIONS = frozenset(_WRITE_FORMATS)
_HIGH_DEPTH_FORMATS = {"PNG", "TIFF"}
# Largest width or height each format can store (libjpeg: 65,500; WebP: 16,383; AV1: 65,536).
_MAX_SIDE = {"JPEG": 65_500, "WEBP": 16_383, "AVIF": 65_536}
# Formats that take a ``quality`` and carry EXIF and an ICC profile through Pillow.
_LOSSY_FORMATS = {"JPEG", "WEBP", "AVIF", "HEIF"}
_METADATA_FORMATS = {"PNG", "JPEG", "TIFF", "WEBP", "AVIF"}
# Largest EXIF block a JPEG APP1 marker holds (Pillow refuses larger ones).
_JPEG_MAX_EXIF = 65_533
_ALPHA_FORMATS = {"PNG", "TIFF", "WEBP", "AVIF", "TGA", "BMP", "HEIF"}


def output_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format name used to write ``path``, from its ending."""
    suffix = Path(path).suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise ImageWriteError(f"cannot write '{suffix or 'no extension'}' files")
    return _WRITE_FORMATS[suffix]


def fit_to_format(picture: Picture, fmt: str, on_warning: WarningHandler | None = None) -> Picture:
    """``picture`` as format ``fmt`` can store it: its sample type, alpha (dropped where ``fmt`` has none) and EXIF
    (left out, with a warning, when too large for a JPEG).

    Raises:
        ImageWriteError: ``fmt`` cannot hold the picture's width or height.
    """
    width, height = picture.size
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise ImageWriteError(
            f"{fmt} cannot hold {width}x{height} pixels (at most {limit:,} per side); write PNG or TIFF"
        )
    if fmt == "JPEG" and picture.exif and len(picture.exif) > _JPEG_MAX_EXIF:
        warn(f"EXIF of {len(picture.exif):,} bytes is over JPEG's 64 KB limit; written without EXIF", on_warning)
        picture = replace(picture, exif=None)
    pixels, alpha = picture.pixels, picture.alpha
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        alpha = None  # e.g. JPEG has no alpha channel
    if fmt == "HEIF":  # 8-bit stays 8-bit; 16-bit (and float) is written at 10 bits
        if pixels.dtype == np.float32:
            pixels = as_dtype(pixels, np.uint16)
    elif fmt in _HIGH_DEPTH_FORMATS:
        if pixels.dtype == np.float32 and (fmt != "TIFF" or pixels.ndim == 3 or alpha is not None):
            pixels = as_dtype(pixels, np.uint16)
    else:
        pixels = as_dtype(pixels, np.uint8)
    if alpha is not None:
        alpha = as_dtype(alpha, pixels.dtype)
    return replace(picture, pixels=pixels, alpha=alpha)


def encode(picture: Picture, target: Path, fmt: str, quality: int) -> None:
    """Write ``picture``, already fitted (:func:`fit_to_format`), to ``target`` as ``fmt``."""
    high_depth = picture.pixels.dtype == np.uint16 and (picture.pixels.ndim == 3 or picture.alpha is not None)
    if fmt == "HEIF":
        write_heif(picture, target, quality)
    elif high_depth and fmt == "PNG":
        target.write_bytes(_encode_png16(picture))
    elif high_depth and fmt == "TIFF":
        _write_tiff16(picture, target)
    else:
        _save_with_pillow(picture, target, fmt, quality)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png16(picture: Picture) -> bytes:
    """16-bit PNG (grey+alpha or colour) through OpenCV, with iCCP and eXIf chunks added after IHDR."""
    import cv2

    pixels = picture.pixels
    if pixels.ndim == 2:  # grey + alpha: PNG has it, OpenCV does not write it; store as RGBA
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    bgr = pixels[..., ::-1]
    if picture.alpha is not None:
        bgr = np.dstack((bgr, picture.alpha))
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ImageWriteError("the PNG encoder failed")
    data = encoded.tobytes()
    extra = b""
    if picture.icc_profile:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(picture.icc_profile))
    if picture.exif:
        extra += _png_chunk(b"eXIf", picture.exif.removeprefix(b"Exif\x00\x00"))
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + extra + data[ihdr_end:]


def _write_tiff16(picture: Picture, target: Path) -> None:
    import tifffile

    pixels = picture.pixels
    if picture.alpha is not None:
        pixels = np.dstack((pixels if pixels.ndim == 3 else pixels[..., None], picture.alpha))
    photometric = "rgb" if picture.pixels.ndim == 3 else "minisblack"
    tifffile.imwrite(
        target,
        pixels,
        photometric=photometric,
        planarconfig="contig",
        extrasamples=["unassalpha"] if picture.alpha is not None else None,
        compression="zlib",
        iccprofile=picture.icc_profile,
    )


def _save_with_pillow(picture: Picture, target: Path, fmt: str, quality: int) -> None:
    image = picture_to_pil(picture)
    options: dict[str, object] = {}
    if picture.icc_profile and fmt in _METADATA_FORMATS:
        options["icc_profile"] = picture.icc_profile
    if picture.exif and fmt in _METADATA_FORMATS:
        options["exif"] = picture.exif
    if fmt in _LOSSY_FORMATS:
        options["quality"] = int(quality)
    if fmt == "TIFF":
        options["compression"] = "tiff_deflate"
    image.save(target, format=fmt, **options)
