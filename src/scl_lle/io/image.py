"""Reading and writing photos with their fidelity intact: :func:`read_image` and :func:`write_image`.

- EXIF orientation is applied on reading (and reset to "normal" in the EXIF that is written back);
- EXIF and the ICC profile are carried to the output;
- 16-bit PNG and TIFF (grey or colour) stay 16-bit; grey stays grey; alpha is passed through unchanged;
- HEIC/HEIF (10/12-bit kept as 16-bit) and camera RAW (16-bit) are read through :mod:`scl_lle.io.formats`, with the
  optional ``formats`` extra; without it such a file fails alone with a message naming the extra;
- a pixel-count limit guards against decompression bombs;
- every failure is an :class:`ImageReadError` / :class:`ImageWriteError` with a reason a person can act on;
- what is lost on the way (frames after the first, EXIF too large for JPEG) is told through ``on_warning``
  (default: an :class:`~scl_lle.io.errors.ImageWarning`).

Pixels travel as a :class:`~scl_lle.io.picture.Picture`: numpy arrays ``(H, W)`` grey or ``(H, W, 3)`` RGB, dtype
``uint8``, ``uint16`` or ``float32`` (in [0, 1]); alpha, when present, is a separate ``(H, W)`` array of the same
dtype. The steps live beside this module: :mod:`~scl_lle.io.sniff` (what a file holds),
:mod:`~scl_lle.io.decode` (Pillow/OpenCV), :mod:`~scl_lle.io.formats` (HEIC, RAW), :mod:`~scl_lle.io.metadata`
(EXIF), :mod:`~scl_lle.io.encode` (writing each format), :mod:`~scl_lle.io.files` (endings, atomic writes).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .decode import read_with_pillow
from .encode import encode, fit_to_format, output_format
from .errors import ImageReadError, ImageWriteError, WarningHandler, show_path
from .files import HEIF_EXTENSIONS, RAW_EXTENSIONS, atomic_write
from .formats import RawOptions, read_heif, read_raw
from .picture import Picture
from .sniff import sniff_container

__all__ = ["DEFAULT_MAX_PIXELS", "ImageReadError", "ImageWriteError", "read_image", "write_image"]

#: Default limit on width x height; larger images are refused before their pixels are decoded.
DEFAULT_MAX_PIXELS = 150_000_000


def read_image(
    path: str | os.PathLike[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    on_warning: WarningHandler | None = None,
    raw: RawOptions | None = None,
) -> Picture:
    """Read an image file, upright, with its ICC profile and EXIF.

    Of a multi-frame file (animated GIF/PNG/WebP, multi-page TIFF) the first frame is read; ``on_warning`` is
    then called with a one-line message (default: an :class:`~scl_lle.io.errors.ImageWarning` is issued).

    HEIC/HEIF files (recognised by their first bytes, or by their ending when those say nothing) are read with
    pillow-heif, camera RAW files (by ending, :data:`~scl_lle.io.files.RAW_EXTENSIONS`) with rawpy, decoded as
    ``raw`` says (:class:`scl_lle.io.formats.RawOptions`; default: camera white balance, full size): both need
    the ``formats`` extra.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels (``None`` or 0: no limit).
        ImageReadError: missing, empty, unreadable, not an image, truncated or corrupt, or its decoder is not
            installed.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in RAW_EXTENSIONS:
        return read_raw(path, max_pixels, raw)
    kind = sniff_container(path)
    if kind == "HEIF" or (kind is None and suffix in HEIF_EXTENSIONS):
        return read_heif(path, max_pixels, on_warning)
    return read_with_pillow(path, kind, max_pixels, on_warning)


def _check_file(path: Path) -> None:
    """Refuse what is not a non-empty regular file, before any decoder opens it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageReadError("no such file") from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except OSError as error:
        raise ImageReadError(f"cannot read this file ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError("is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise ImageReadError("not a regular file")
    if info.st_size == 0:
        raise ImageReadError("empty file (0 bytes)")


def write_image(
    path: str | os.PathLike[str],
    picture: Picture,
    *,
    quality: int = 95,
    overwrite: bool = False,
    on_warning: WarningHandler | None = None,
) -> Path:
    """Write ``picture`` atomically in the format given by the file ending of ``path``.

    Samples are converted to what the format stores (JPEG, BMP, WebP, AVIF: 8-bit; PNG and TIFF: 8 or 16-bit,
    TIFF also float grey; HEIC: 8-bit, or 10-bit from 16-bit, with the ``formats`` extra); alpha is kept where
    the format has it. ``quality`` (1-100) applies to JPEG, WebP, AVIF and HEIC.
    EXIF too large for a JPEG (over 64 KB) is left out and ``on_warning`` called (default: an
    :class:`~scl_lle.io.errors.ImageWarning`).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ImageWriteError: the format cannot be written, cannot hold the picture's size, or the encoder failed.
    """
    path = Path(path)
    fmt = output_format(path)
    fitted = fit_to_format(picture, fmt, on_warning)
    try:
        with atomic_write(path, overwrite=overwrite) as temporary:
            encode(fitted, temporary, fmt, quality)
    except FileExistsError:
        raise
    except ImageWriteError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ImageWriteError(f"cannot write {show_path(path.name)}: {error}") from None
    return path
