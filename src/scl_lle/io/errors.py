"""What goes wrong reading and writing photos, and how it is told: the errors, the warning, one-line messages.

Every failure to read is an :class:`ImageReadError` and every failure to write an :class:`ImageWriteError`, each
with a reason a person can act on; what is lost on the way (later frames, EXIF too large for JPEG) is told
through an ``on_warning`` callback (default: an :class:`ImageWarning`).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

__all__ = [
    "ImageReadError",
    "ImageTooLargeError",
    "ImageWarning",
    "ImageWriteError",
    "WarningHandler",
    "check_pixel_count",
    "one_line",
    "show_path",
    "warn",
]


class ImageReadError(Exception):
    """An input file could not be read as an image; the message says why."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than the configured limit."""


class ImageWriteError(Exception):
    """An output file could not be written; the message says why."""


class ImageWarning(UserWarning):
    """Something of the file was not carried through (later frames, oversized EXIF); the image still was."""


#: Called with a one-line message when something of a file is not carried through.
WarningHandler = Callable[[str], None]


def warn(message: str, on_warning: WarningHandler | None) -> None:
    """Tell ``message`` to ``on_warning``, or issue it as an :class:`ImageWarning` when that is ``None`` (shown
    at the first caller outside this package's ``io`` folder, e.g. the line that called ``read_image``)."""
    if on_warning is None:
        here, frame, level = os.path.dirname(__file__), sys._getframe(), 1
        while frame.f_back is not None and os.path.dirname(frame.f_code.co_filename) == here:
            frame, level = frame.f_back, level + 1
        warnings.warn(message, ImageWarning, stacklevel=level)
    else:
        on_warning(message)


def check_pixel_count(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a ``width`` x ``height`` image over ``max_pixels`` (``None`` or 0: no limit) before it is decoded.

    Raises:
        ImageTooLargeError: saying the size, the limit and how to raise it.
    """
    if max_pixels and width * height > max_pixels:
        raise ImageTooLargeError(
            f"too large: {width}x{height} is {_pixel_count(width * height)}, over the limit of "
            f"{_pixel_count(max_pixels)} (raise it with --max-pixels / max_pixels=)"
        )


def _pixel_count(pixels: int) -> str:
    """``12.2 megapixels``, or for fewer than 100,000 the count itself (``9,600 pixels``), never ``0.0``."""
    return f"{pixels / 1e6:.1f} megapixels" if pixels >= 100_000 else f"{pixels:,} pixels"


def show_path(path: str | os.PathLike[str]) -> str:
    """``path`` for a one-line message: as it is when printable, else quoted with escapes (``'a\\nb.png'``)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so a message stays one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
