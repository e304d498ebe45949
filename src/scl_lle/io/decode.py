"""Decoding with Pillow (and OpenCV for 16-bit colour, which Pillow reduces to 8 bits): every format but HEIC
and RAW (:mod:`scl_lle.io.formats`).

Hostile or broken files fail with an :class:`~scl_lle.io.errors.ImageReadError` saying why, never another
exception; the pixel count is checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageReadError, ImageTooLargeError, WarningHandler, check_pixel_count, warn
from .metadata import read_exif, upright
from .picture import HAS_AVIF, Picture, picture_from_pil
from .samples import as_dtype

__all__ = ["read_with_pillow"]


def read_with_pillow(
    path: Path, kind: str | None, max_pixels: int | None, on_warning: WarningHandler | None
) -> Picture:
    """Read ``path`` (sniffed as ``kind``, or ``None``) with Pillow: its first frame, upright, with ICC and EXIF.

    See :func:`scl_lle.io.image.read_image` for what is raised.
    """
    if kind == "AVIF" and not HAS_AVIF:
        raise ImageReadError("AVIF needs Pillow 11.3 or newer built with AVIF: pip install -U pillow")
    image = _open(path, kind)
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageReadError(f"no pixels: the header says {width}x{height}")
        check_pixel_count(width, height, max_pixels)  # first: reading a PNG's EXIF decodes it
        orientation, exif = read_exif(image)  # drops the orientation from the image's own EXIF too: see _as_stored
        turned = image.format == "TIFF" and _is_high_depth_colour(image, path) and _opencv_turns_tiffs()
        if not turned:
            _as_stored(image)
        width, height = image.size
        picture = _decode(image, path)
        frames = _frame_count(image)
    if picture.pixels.shape[:2] != (height, width):
        raise ImageReadError(f"decoded size {picture.pixels.shape[:2]} differs from the header's {width}x{height}")
    picture.format = image.format
    picture.exif = exif
    if not turned:
        picture.pixels, picture.alpha = upright(picture.pixels, picture.alpha, orientation)
    if frames > 1:
        warn(f"only the first of {frames} frames is used", on_warning)
    return picture


def _as_stored(image: Image.Image) -> None:
    """Have Pillow decode ``image`` as stored, for :func:`upright` to turn: every format the same way.

    Pillow (13) opens a TIFF whose EXIF orientation is 5-8 with its size already turned, and turns the pixels
    while loading if its EXIF still holds the orientation (:func:`read_exif` has taken it out). Loaded at the
    turned size without the turn, an RGB TIFF failed and a grey one came out scrambled; Pillow's own turn
    scrambles grey TIFFs as well. So the size goes back to the stored one (Pillow's ``_tile_size``).
    """
    stored = getattr(image, "_tile_size", None)
    if image.format == "TIFF" and isinstance(stored, tuple) and len(stored) == 2 and stored != image.size:
        image._size = stored


@functools.cache
def _opencv_turns_tiffs() -> bool:
    """Whether OpenCV's TIFF decoder turns a picture by its orientation tag itself (OpenCV 5 does, even with
    ``IMREAD_UNCHANGED``), for :func:`_read_high_depth_colour`: tried once on a 3x2 16-bit TIFF turned 180 degrees."""
    import cv2
    import tifffile

    stored = np.arange(18, dtype=np.uint16).reshape(2, 3, 3)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, stored, photometric="rgb", extratags=[(274, "H", 1, 3, False)])
    decoded = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    return decoded is not None and decoded.shape == (2, 3, 3) and bool((decoded[..., ::-1] == stored[::-1, ::-1]).all())


def _open(path: Path, kind: str | None) -> Image.Image:
    """``Image.open(path)``, its header read; every failure as an :class:`ImageReadError` saying why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise ImageReadError("no such file") from None
    except IsADirectoryError:
        raise ImageReadError("is a folder, not a file") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except UnidentifiedImageError:
        if kind == "AVIF":  # Pillow's AVIF opener decodes the header and refuses a broken one as "unidentified"
            raise ImageReadError("truncated or corrupt AVIF file (its header is broken)") from None
        raise ImageReadError("not an image (unrecognised file format)") from None
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"too large: {error}") from None
    except OSError as error:
        raise ImageReadError(f"truncated or corrupt image header ({error})") from None
    except MemoryError:
        raise ImageReadError("out of memory while reading the header") from None
    except Exception as error:  # hostile headers make Pillow raise ValueError, struct.error, ...
        raise ImageReadError(f"corrupt image header ({type(error).__name__}: {error})") from None


def _decode(image: Image.Image, path: Path) -> Picture:
    """The pixels of an opened ``image`` (first frame); every decoder failure as an :class:`ImageReadError`."""
    try:
        if _is_high_depth_colour(image, path):
            pixels, alpha = _read_high_depth_colour(path)
            return Picture(pixels, alpha, image.format, image.info.get("icc_profile") or None)
        image.load()
        return picture_from_pil(image)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError("out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error) as error:
        raise ImageReadError(f"truncated or corrupt image data ({error})") from None
    except Exception as error:  # any other decoder failure on hostile data is still this file's fault
        raise ImageReadError(f"corrupt image data ({type(error).__name__}: {error})") from None


def _frame_count(image: Image.Image) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # a broken later frame does not spoil the first
        return 1


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as handle:
        header = handle.read(26)
    return header[24] if len(header) >= 26 and header[12:16] == b"IHDR" else 8


def _is_high_depth_colour(image: Image.Image, path: Path) -> bool:
    """Pillow decodes 16-bit colour PNG/TIFF to 8 bits; detect them to decode with OpenCV instead."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    if image.format == "PNG":
        return _png_bit_depth(path) == 16
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        return max(bits) > 8
    return False


def _read_high_depth_colour(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit colour PNG/TIFF through OpenCV: ``(H, W, 3)`` RGB ``uint16`` and ``(H, W)`` alpha or ``None``."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise ImageReadError("truncated or corrupt 16-bit image data")
    if decoded.dtype != np.uint16:
        decoded = as_dtype(decoded, np.uint16) if decoded.dtype == np.uint8 else decoded.astype(np.uint16)
    rgb = decoded[..., 2::-1]
    alpha = decoded[..., 3] if decoded.shape[2] == 4 else None
    return np.ascontiguousarray(rgb), alpha
