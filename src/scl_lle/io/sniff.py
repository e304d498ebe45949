"""What a file holds, by its first bytes whatever its name: image formats and video containers.

Used to read HEIC saved under another ending, to name what came on stdin, and to keep an image named as a video
(``photo.mp4``) away from the video decoder.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

__all__ = ["SNIFFED_IMAGE_FORMATS", "image_named_as_video", "sniff_container"]

#: What :func:`sniff_container` calls images (Pillow format names; containers are lower case).
SNIFFED_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP", "AVIF", "HEIF"})
_SIGNATURES = [  # (offset, bytes, name)
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"BM", "BMP"),
    (8, b"WEBP", "WEBP"),
    # ISO base media files whose major brand is a still image (AVIF, HEIF/HEIC) come before the video rule.
    *((4, b"ftyp" + brand, "AVIF") for brand in (b"avif", b"avis")),
    *(
        (4, b"ftyp" + brand, "HEIF")
        for brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
    ),
    (4, b"ftyp", "mp4"),  # ISO base media: .mp4, .m4v, .mov, .3gp
    (0, b"\x1a\x45\xdf\xa3", "matroska"),  # EBML: .mkv, .webm
    (8, b"AVI ", "avi"),
]


def sniff_container(path: str | os.PathLike[str]) -> str | None:
    """What the first bytes of a file say it holds, whatever its name.

    Returns an image format from :data:`SNIFFED_IMAGE_FORMATS` (``"PNG"``, ``"JPEG"``, ...), a video container
    (``"mp4"`` for MP4/QuickTime, ``"matroska"`` for MKV/WebM, ``"avi"``), or ``None``: unrecognised,
    unreadable or not a regular file (a FIFO or device is never opened).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    if head[4:12] in (b"ftypmif1", b"ftypmsf1") and _iso_brands(head) & {b"avif", b"avis"}:
        return "AVIF"  # a generic HEIF major brand with AV1 pictures: AVIF, which pillow-heif does not read
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


def _iso_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of the ISO base media ``ftyp`` box that ``head`` begins with."""
    size = min(struct.unpack(">I", head[:4])[0], len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, size - 3, 4)}


def image_named_as_video(path: str | os.PathLike[str]) -> str | None:
    """Why a file with a video ending must not go to the video decoder: its first bytes are an image's (then it
    would come out as a one-frame video). ``None`` otherwise; the decoder refuses anything else it cannot read."""
    kind = sniff_container(path)
    if kind in SNIFFED_IMAGE_FORMATS:
        return f"named {Path(path).suffix} but holds a {kind} image; rename it"
    return None
