"""EXIF on the way through: the orientation is applied to the pixels (and its tag dropped), tags describing the
source file's pixel layout are dropped, and malformed EXIF is dropped rather than costing the picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["apply_orientation", "exif_without_orientation", "read_exif", "upright"]

_EXIF_ORIENTATION = 0x0112
# Tags that describe how a TIFF stores its pixels (size, samples, compression, strips/tiles, palette, ICC).
# Pillow returns a TIFF's own tag directory as its EXIF; carried into another file they contradict its pixels
# (a palette TIFF's ColorMap and PhotometricInterpretation made its enhanced RGB TIFF unreadable), so are dropped.
_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323, 324, 325}
    | {330, 338, 339, 340, 341, 347, 529, 530, 531, 532, 34675}
    | set(range(512, 522))
)


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an ``(H, W, ...)`` array the way EXIF orientation ``1``..``8`` says, so it displays upright."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def upright(pixels: np.ndarray, alpha: np.ndarray | None, orientation: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``pixels`` ``(H, W[, 3])`` and ``alpha`` ``(H, W)`` turned upright as EXIF ``orientation`` says (contiguous
    copies when turned, the arrays themselves for ``1`` or an unknown value)."""
    if orientation not in range(2, 9):
        return pixels, alpha
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
    return pixels, alpha


def _clean_exif(exif: Image.Exif) -> bytes | None:
    """``exif`` without the orientation and pixel-layout tags, as bytes; ``None`` when nothing is left."""
    for tag in _LAYOUT_TAGS.union({_EXIF_ORIENTATION}).intersection(exif):
        del exif[tag]
    return exif.tobytes() if len(exif) else None


def read_exif(image: Image.Image) -> tuple[int, bytes | None]:
    """The EXIF orientation of an opened Pillow ``image`` (``1`` when none) and its EXIF bytes to carry to the
    output (see :func:`exif_without_orientation`); malformed EXIF gives ``(1, None)`` or keeps the orientation."""
    orientation = 1
    try:
        exif = image.getexif()
        orientation = exif.get(_EXIF_ORIENTATION, 1)
        return orientation, _clean_exif(exif)
    except Exception:  # what cannot be read or re-encoded is dropped
        return orientation, None


def exif_without_orientation(data: bytes | None) -> bytes | None:
    """EXIF bytes from a decoder that applied the orientation itself, with that tag (and layout tags) dropped;
    ``None`` when empty or unreadable (malformed EXIF must not cost the picture)."""
    if not data:
        return None
    try:
        exif = Image.Exif()
        exif.load(data)
        return _clean_exif(exif)
    except Exception:
        return None
