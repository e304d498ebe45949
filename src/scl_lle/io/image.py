"""Reading and writing photos with their fidelity intact.

- EXIF orientation is applied on reading (and reset to "normal" in the EXIF that is written back);
- EXIF and the ICC profile are carried to the output;
- 16-bit PNG and TIFF (grey or colour) stay 16-bit; grey stays grey; alpha is passed through unchanged;
- HEIC/HEIF (10/12-bit kept as 16-bit) and camera RAW (16-bit) are read through :mod:`scl_lle.io.formats`, with the
  optional ``formats`` extra; without it such a file fails alone with a message naming the extra;
- a pixel-count limit guards against decompression bombs;
- every failure is an :class:`ImageReadError` / :class:`ImageWriteError` with a reason a person can act on;
- what is lost on the way (frames after the first, EXIF too large for JPEG) is told through ``on_warning``
  (default: an :class:`ImageWarning`).

Pixels travel as numpy arrays: ``(H, W)`` grey or ``(H, W, 3)`` RGB, dtype ``uint8``, ``uint16`` or
``float32`` (in [0, 1]); alpha, when present, is a separate ``(H, W)`` array of the same dtype.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from .files import atomic_write

if TYPE_CHECKING:
    from .formats import RawOptions

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "HAS_AVIF",
    "HEIF_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "SNIFFED_IMAGE_FORMATS",
    "WRITABLE_EXTENSIONS",
    "ImageReadError",
    "ImageTooLargeError",
    "ImageWarning",
    "ImageWriteError",
    "Picture",
    "apply_orientation",
    "one_line",
    "picture_from_pil",
    "picture_to_pil",
    "read_image",
    "show_path",
    "sniff_container",
    "write_image",
]

#: Default limit on width x height; larger images are refused before their pixels are decoded.
DEFAULT_MAX_PIXELS = 150_000_000

#: Whether this Pillow reads and writes AVIF (Pillow 11.3+ built with libavif).
HAS_AVIF = bool(features.check("avif"))

#: HEIC/HEIF endings (read and written with pillow-heif, the ``formats`` extra).
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
#: Camera RAW endings (read with rawpy/LibRaw, the ``formats`` extra; never written).
RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".rwl"}
    | {".kdc", ".dcr", ".pef", ".srw", ".3fr", ".erf", ".mef", ".mos", ".mrw", ".iiq", ".x3f"}
)
#: File endings picked up when a folder is given as input. HEIC and RAW files are picked up without the
#: ``formats`` extra too (and AVIF without a Pillow that reads it): each then fails alone, saying what to install.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".tga", ".avif"}
    | HEIF_EXTENSIONS
    | RAW_EXTENSIONS
)

_EXIF_ORIENTATION = 0x0112
# Tags that describe how a TIFF stores its pixels (size, samples, compression, strips/tiles, palette, ICC).
# Pillow returns a TIFF's own tag directory as its EXIF; carried into another file they contradict its pixels
# (a palette TIFF's ColorMap and PhotometricInterpretation made its enhanced RGB TIFF unreadable), so are dropped.
_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323, 324, 325}
    | {330, 338, 339, 340, 341, 347, 529, 530, 531, 532, 34675}
    | set(range(512, 522))
)
# Modes whose pixels Pillow converts to RGB; an ICC profile describing the original space no longer applies.
_FOREIGN_SPACES = {"CMYK", "LAB", "HSV", "YCbCr"}
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
#: File endings that :func:`write_image` can write.
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


class ImageReadError(Exception):
    """An input file could not be read as an image; the message says why."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than the configured limit."""


class ImageWriteError(Exception):
    """An output file could not be written; the message says why."""


class ImageWarning(UserWarning):
    """Something of the file was not carried through (later frames, oversized EXIF); the image still was."""


WarningHandler = Callable[[str], None]


def _warn(message: str, on_warning: WarningHandler | None) -> None:
    if on_warning is None:
        warnings.warn(message, ImageWarning, stacklevel=3)
    else:
        on_warning(message)


def show_path(path: str | os.PathLike[str]) -> str:
    """``path`` for a one-line message: as it is when printable, else quoted with escapes (``'a\\nb.png'``)."""
    text = os.fsdecode(path)
    return text if text.isprintable() else repr(text)


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so a message stays one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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


def _check_pixel_count(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise ImageTooLargeError(
            f"too large: {width}x{height} is {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f} (raise it with --max-pixels / max_pixels=)"
        )


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
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise ImageReadError("truncated or corrupt 16-bit image data")
    if decoded.dtype != np.uint16:
        decoded = decoded.astype(np.uint16) * 257 if decoded.dtype == np.uint8 else decoded.astype(np.uint16)
    rgb = decoded[..., 2::-1]
    alpha = decoded[..., 3] if decoded.shape[2] == 4 else None
    return np.ascontiguousarray(rgb), alpha


def picture_from_pil(image: Image.Image) -> Picture:
    """Convert a decoded Pillow image of any mode to a :class:`Picture` (orientation is not applied here).

    Grey modes stay grey, 16-bit grey stays ``uint16``, ``F`` becomes ``float32`` clipped to [0, 1], palette
    and other colour spaces become RGB(A).
    """
    mode = image.mode
    icc = image.info.get("icc_profile") or None
    if mode in _FOREIGN_SPACES:
        icc = None
    alpha = None
    if mode in ("1", "L", "LA", "La", "PA", "P", "RGBa", "RGBX") or mode in _FOREIGN_SPACES:
        if mode == "1":
            image = image.convert("L")
        elif mode == "La":
            image = image.convert("LA")
        elif mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        elif mode == "RGBa":
            image = image.convert("RGBA")
        elif mode not in ("L", "LA"):
            image = image.convert("RGB")
        mode = image.mode
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


def _frame_count(image: Image.Image) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # a broken later frame does not spoil the first
        return 1


def _clean_exif(exif: Image.Exif) -> bytes | None:
    """``exif`` without the orientation and pixel-layout tags, as bytes; ``None`` when nothing is left."""
    for tag in _LAYOUT_TAGS.union({_EXIF_ORIENTATION}).intersection(exif):
        del exif[tag]
    return exif.tobytes() if len(exif) else None


def _exif_without_orientation(data: bytes | None) -> bytes | None:
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


def read_image(
    path: str | os.PathLike[str],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    on_warning: WarningHandler | None = None,
    raw: RawOptions | None = None,
) -> Picture:
    """Read an image file, upright, with its ICC profile and EXIF.

    Of a multi-frame file (animated GIF/PNG/WebP, multi-page TIFF) the first frame is read; ``on_warning`` is
    then called with a one-line message (default: an :class:`ImageWarning` is issued).

    HEIC/HEIF files (recognised by their first bytes, or by their ending when those say nothing) are read with
    pillow-heif, camera RAW files (by ending, :data:`RAW_EXTENSIONS`) with rawpy, decoded as ``raw`` says
    (:class:`scl_lle.io.formats.RawOptions`; default: camera white balance, full size): both need the ``formats``
    extra.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels (``None`` or 0: no limit).
        ImageReadError: missing, empty, unreadable, not an image, truncated or corrupt, or its decoder is not
            installed.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in RAW_EXTENSIONS:
        from .formats import read_raw

        return read_raw(path, max_pixels, raw)
    kind = sniff_container(path)
    if kind == "HEIF" or (kind is None and suffix in HEIF_EXTENSIONS):
        from .formats import read_heif

        return read_heif(path, max_pixels, on_warning)
    if kind == "AVIF" and not HAS_AVIF:
        raise ImageReadError("AVIF needs Pillow 11.3 or newer built with AVIF: pip install -U pillow")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except ImageReadError:
        raise
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
    with image:
        width, height = image.size
        if width < 1 or height < 1:
            raise ImageReadError(f"no pixels: the header says {width}x{height}")
        _check_pixel_count(path, width, height, max_pixels)
        orientation, exif_bytes = 1, None
        try:  # malformed EXIF must not cost the picture: what cannot be read or re-encoded is dropped
            exif = image.getexif()
            orientation = exif.get(_EXIF_ORIENTATION, 1)
            exif_bytes = _clean_exif(exif)
        except Exception:
            exif_bytes = None
        try:
            if _is_high_depth_colour(image, path):
                pixels, alpha = _read_high_depth_colour(path)
                picture = Picture(pixels, alpha, image.format, image.info.get("icc_profile") or None)
            else:
                image.load()
                picture = picture_from_pil(image)
        except ImageReadError:
            raise
        except MemoryError:
            raise ImageReadError("out of memory while decoding") from None
        except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error) as error:
            raise ImageReadError(f"truncated or corrupt image data ({error})") from None
        except Exception as error:  # any other decoder failure on hostile data is still this file's fault
            raise ImageReadError(f"corrupt image data ({type(error).__name__}: {error})") from None
        frames = _frame_count(image)
    if picture.pixels.shape[:2] != (height, width):
        raise ImageReadError(f"decoded size {picture.pixels.shape[:2]} differs from the header's {width}x{height}")
    picture.format = image.format
    picture.exif = exif_bytes
    if orientation in range(2, 9):
        picture.pixels = np.ascontiguousarray(apply_orientation(picture.pixels, orientation))
        if picture.alpha is not None:
            picture.alpha = np.ascontiguousarray(apply_orientation(picture.alpha, orientation))
    if frames > 1:
        _warn(f"only the first of {frames} frames is used", on_warning)
    return picture


def output_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format name used to write ``path``, from its ending."""
    suffix = Path(path).suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise ImageWriteError(f"cannot write '{suffix or 'no extension'}' files")
    return _WRITE_FORMATS[suffix]


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _to_uint16(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16:
        return array
    if array.dtype == np.uint8:
        return array.astype(np.uint16) * 257
    return np.round(np.clip(array, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _fit_to_format(picture: Picture, fmt: str) -> Picture:
    """Convert sample type and alpha to what ``fmt`` can store."""
    pixels, alpha = picture.pixels, picture.alpha
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        alpha = None  # e.g. JPEG has no alpha channel
    if fmt == "HEIF":  # 8-bit stays 8-bit; 16-bit (and float) is written at 10 bits
        if pixels.dtype == np.float32:
            pixels = _to_uint16(pixels)
    elif fmt in _HIGH_DEPTH_FORMATS:
        if pixels.dtype == np.float32 and (fmt != "TIFF" or pixels.ndim == 3 or alpha is not None):
            pixels = _to_uint16(pixels)
    else:
        pixels = _to_uint8(pixels)
    if alpha is not None and alpha.dtype != pixels.dtype:
        alpha = _to_uint16(alpha) if pixels.dtype == np.uint16 else _to_uint8(alpha)
    return replace(picture, pixels=pixels, alpha=alpha)


def picture_to_pil(picture: Picture) -> Image.Image:
    """A Pillow image of the picture's pixels (8-bit grey/RGB(A), 16-bit grey ``I;16``, float grey ``F``).

    16-bit colour cannot be held by Pillow; it is reduced to 8 bits here (files keep 16 bits: see
    :func:`write_image`).
    """
    pixels, alpha = picture.pixels, picture.alpha
    if pixels.ndim == 2 and alpha is None and pixels.dtype == np.uint16:
        image = Image.frombytes("I;16", (pixels.shape[1], pixels.shape[0]), pixels.astype("<u2").tobytes())
    elif pixels.ndim == 2 and alpha is None and pixels.dtype == np.float32:
        image = Image.frombytes("F", (pixels.shape[1], pixels.shape[0]), pixels.astype("<f4").tobytes())
    else:
        pixels8 = _to_uint8(pixels)
        if alpha is not None:
            channels = pixels8[..., None] if pixels8.ndim == 2 else pixels8
            image = Image.fromarray(np.dstack((channels, _to_uint8(alpha))), mode="LA" if pixels8.ndim == 2 else "RGBA")
        else:
            image = Image.fromarray(pixels8, mode="L" if pixels8.ndim == 2 else "RGB")
    if picture.icc_profile:
        image.info["icc_profile"] = picture.icc_profile
    if picture.exif:
        image.info["exif"] = picture.exif
    return image


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
    :class:`ImageWarning`).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ImageWriteError: the format cannot be written, cannot hold the picture's size, or the encoder failed.
    """
    path = Path(path)
    fmt = output_format(path)
    width, height = picture.size
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(width, height) > limit:
        raise ImageWriteError(
            f"{fmt} cannot hold {width}x{height} pixels (at most {limit:,} per side); write PNG or TIFF"
        )
    if fmt == "JPEG" and picture.exif and len(picture.exif) > _JPEG_MAX_EXIF:
        _warn(f"EXIF of {len(picture.exif):,} bytes is over JPEG's 64 KB limit; written without EXIF", on_warning)
        picture = replace(picture, exif=None)
    fitted = _fit_to_format(picture, fmt)
    high_depth = fitted.pixels.dtype == np.uint16 and (fitted.pixels.ndim == 3 or fitted.alpha is not None)
    try:
        with atomic_write(path, overwrite=overwrite) as temporary:
            if fmt == "HEIF":
                from .formats import write_heif

                write_heif(fitted, temporary, quality)
            elif high_depth and fmt == "PNG":
                temporary.write_bytes(_encode_png16(fitted))
            elif high_depth and fmt == "TIFF":
                _write_tiff16(fitted, temporary)
            else:
                _save_with_pillow(fitted, temporary, fmt, quality)
    except FileExistsError:
        raise
    except ImageWriteError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise ImageWriteError(f"cannot write {show_path(path.name)}: {error}") from None
    return path


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
