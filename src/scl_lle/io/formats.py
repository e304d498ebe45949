"""Photos as people shoot them: HEIC/HEIF from phones (pillow-heif) and camera RAW (rawpy, i.e. LibRaw).

Both decoders come with the optional ``formats`` extra (``pip install 'scl-lle[formats]'``) and are imported only
when such a file is met, so ``import scl_lle`` stays light and nothing changes without them; without them such a
file fails alone with :func:`missing_extra`'s one-line message. :func:`scl_lle.io.image.read_image` and
:func:`~scl_lle.io.image.write_image` call into this module; the file endings live in :mod:`scl_lle.io.files`
(``HEIF_EXTENSIONS``, ``RAW_EXTENSIONS``).

HEIF: 10/12-bit pictures are read as ``uint16`` (scaled to the full 16-bit range) and 16-bit pictures are written
as 10-bit HEIF (HEVC Main 10: what phones write and what every HEVC decoder reads); 8-bit stays 8-bit. libheif
applies the file's rotation and mirroring while decoding, so the EXIF orientation tag is dropped, not applied again.
EXIF and the ICC profile are carried both ways.

RAW: decoded with LibRaw to 16-bit RGB with the camera's white balance (or LibRaw's automatic one), sRGB primaries
and the sRGB tone curve, and no automatic brightening. The enhancer works on display-referred, sRGB-like
pictures (its curves were learnt on such photos), so linear sensor data would look nearly black to it and be
brightened far too much; LibRaw's ``no_auto_bright`` keeps the exposure as shot (a dark scene stays dark and
highlights are not clipped by LibRaw's 1 % white point), leaving the brightening to the enhancer and its
exposure control. The sensor's orientation is applied by LibRaw. What LibRaw reports of the shot (ISO, exposure
time, aperture, focal length, time, artist, lens) and, for TIFF-based RAWs, the camera make and model are
carried as EXIF; the rest of the RAW's EXIF (maker notes and the like) is not.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageReadError, ImageWriteError, WarningHandler, check_pixel_count, warn
from .metadata import exif_without_orientation
from .picture import Picture

__all__ = [
    "FORMATS_EXTRA",
    "RAW_WHITE_BALANCES",
    "RawOptions",
    "heif_installed",
    "missing_extra",
    "read_heif",
    "read_raw",
    "write_heif",
]

#: How to install the optional decoders.
FORMATS_EXTRA = "pip install 'scl-lle[formats]'"
#: ``RawOptions.white_balance`` choices: the camera's as-shot white balance, or LibRaw's estimate from the picture.
RAW_WHITE_BALANCES = ("camera", "auto")
# Bit depth 16-bit pictures are written at as HEIF (HEVC Main 10; Main 12 is not read by most decoders).
_HEIF_WRITE_DEPTH = 10
# sRGB's tone curve as LibRaw's (power, toe slope); LibRaw's default (2.222, 4.5) is BT.709's.
_SRGB_GAMMA = (2.4, 12.92)


def heif_installed() -> bool:
    """Whether pillow-heif is installed (looked up without importing it)."""
    import importlib.util

    return importlib.util.find_spec("pillow_heif") is not None


def missing_extra(kind: str) -> str:
    """The one-line message for a ``kind`` of file (``"HEIC"``, ``"RAW"``) whose decoder is not installed."""
    return f"{kind} needs the 'formats' extra: {FORMATS_EXTRA}"


@dataclass(frozen=True)
class RawOptions:
    """How camera RAW files are decoded (``scl-lle enhance --raw-half-size --raw-white-balance``).

    Attributes:
        half_size: decode at half the width and height (LibRaw's ``half_size``: each 2x2 sensor block becomes
            one pixel, no demosaicing): about 4x faster and a quarter of the memory.
        white_balance: ``"camera"`` (as shot; LibRaw's daylight balance where the file has none) or ``"auto"``
            (estimated from the picture by LibRaw).
    """

    half_size: bool = False
    white_balance: str = "camera"

    def __post_init__(self) -> None:
        if self.white_balance not in RAW_WHITE_BALANCES:
            raise ValueError(
                f"raw white balance must be one of {', '.join(RAW_WHITE_BALANCES)}, got {self.white_balance!r}"
            )


_registered = False


def _import_pillow_heif(kind: str, error: type[Exception]) -> Any:
    """pillow-heif, its Pillow opener registered on first use (so ``Image.open`` reads HEIF from then on)."""
    global _registered
    try:
        import pillow_heif
    except ImportError:
        raise error(missing_extra(kind)) from None
    if not _registered:
        pillow_heif.register_heif_opener()
        _registered = True
    return pillow_heif


def _reason(error: BaseException) -> str:
    """A decoder's reason on one line: bytes decoded, whitespace folded, libheif's "Invalid input: " dropped."""
    text = (
        " ".join(arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg) for arg in error.args)
        or type(error).__name__
    )
    return " ".join(text.split()).removeprefix("Invalid input: ")


def _heif_pixels(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """pillow-heif's 16-bit samples (a 10/12-bit value shifted to the top bits) scaled to the full 16-bit range."""
    if array.dtype != np.uint16 or not 8 < bit_depth < 16:
        return np.ascontiguousarray(array)
    top = (1 << bit_depth) - 1
    values = (array >> (16 - bit_depth)).astype(np.uint32)
    return ((values * 65535 + top // 2) // top).astype(np.uint16)


def read_heif(path: Path, max_pixels: int | None, on_warning: WarningHandler | None = None) -> Picture:
    """Read a HEIF/HEIC file: upright, with EXIF and ICC, at its bit depth (10/12-bit as ``uint16``).
    The size from the header is checked against ``max_pixels`` before decoding."""
    kind = "HEIC"
    pillow_heif = _import_pillow_heif(kind, ImageReadError)
    try:
        heif = pillow_heif.open_heif(path, convert_hdr_to_8bit=False)
        image = heif[heif.primary_index]
        width, height = image.size
        mode, info, count = image.mode, image.info, len(heif)
    except MemoryError:
        raise ImageReadError("out of memory while reading the header") from None
    except Exception as error:  # ValueError, EOFError, SyntaxError, RuntimeError: libheif's reasons
        raise ImageReadError(f"truncated or corrupt {kind} file ({_reason(error)})") from None
    if width < 1 or height < 1:
        raise ImageReadError(f"no pixels: the header says {width}x{height}")
    check_pixel_count(width, height, max_pixels)
    try:
        if mode in ("RGB", "RGBA", "RGB;16", "RGBA;16", "L", "I;16", "L;16"):
            array = _heif_pixels(np.asarray(image), int(info.get("bit_depth", 8)))
        else:  # premultiplied alpha and other rare layouts: through Pillow, at 8 bits
            array = np.asarray(image.to_pillow().convert("RGBA" if image.has_alpha else "RGB"))
    except MemoryError:
        raise ImageReadError("out of memory while decoding") from None
    except Exception as error:
        raise ImageReadError(f"truncated or corrupt {kind} file ({_reason(error)})") from None
    if array.shape[:2] != (height, width):
        raise ImageReadError(f"decoded size {array.shape[:2]} differs from the header's {width}x{height}")
    pixels, alpha = array, None
    if array.ndim == 3 and array.shape[2] == 4:
        pixels, alpha = array[..., :3], array[..., 3]
    if count > 1:
        warn(f"only the primary image of the {count} in this {kind} file is used", on_warning)
    return Picture(
        pixels=np.ascontiguousarray(pixels),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        format="HEIF",
        icc_profile=info.get("icc_profile") or None,
        exif=exif_without_orientation(info.get("exif")),
    )


def write_heif(picture: Picture, target: Path, quality: int) -> None:
    """Write ``picture`` (already fitted: ``uint8`` or ``uint16``) as HEIC: 16-bit as 10-bit, with EXIF and ICC."""
    pillow_heif = _import_pillow_heif("HEIC", ImageWriteError)
    pixels, alpha = picture.pixels, picture.alpha
    if alpha is not None:
        channels = pixels[..., None] if pixels.ndim == 2 else pixels
        if pixels.ndim == 2:  # grey + alpha: stored as RGBA
            channels = np.repeat(channels, 3, axis=2)
        pixels = np.dstack((channels, alpha))
    high = pixels.dtype == np.uint16
    if high:  # to 10 bits, rounded, in the top bits where pillow-heif takes them
        shift = 16 - _HEIF_WRITE_DEPTH
        top = (1 << _HEIF_WRITE_DEPTH) - 1
        pixels = (((pixels.astype(np.uint32) * top + 32767) // 65535) << shift).astype(np.uint16)
    mode = ("L" if pixels.ndim == 2 else "RGB" if pixels.shape[2] == 3 else "RGBA") + (";16" if high else "")
    height, width = pixels.shape[:2]
    options: dict[str, Any] = {"quality": int(quality), "bit_depth": _HEIF_WRITE_DEPTH if high else 8}
    if picture.exif:
        options["exif"] = picture.exif
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    try:
        heif = pillow_heif.from_bytes(mode, (width, height), np.ascontiguousarray(pixels).tobytes())
        heif.save(target, **options)
    except MemoryError:
        raise ImageWriteError("out of memory while encoding HEIC") from None
    except Exception as error:  # RuntimeError, ValueError, OSError from libheif and x265
        raise ImageWriteError(f"the HEIC encoder failed ({error})") from None


def _tiff_make_and_model(path: Path) -> dict[int, str]:
    """Make and Model from the first directory of a TIFF-based RAW (DNG, CR2, NEF, ARW, KDC, ...); {} if none."""
    from PIL import TiffImagePlugin

    found: dict[int, str] = {}
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if head[:4] not in (b"II*\x00", b"MM\x00*"):
                return found
            directory = TiffImagePlugin.ImageFileDirectory_v2(head)
            handle.seek(struct.unpack("<I" if head[:2] == b"II" else ">I", head[4:8])[0])
            directory.load(handle)
            for tag in (0x010F, 0x0110):  # Make, Model
                value = directory.get(tag)
                if isinstance(value, str) and value.strip("\x00 "):
                    found[tag] = value.strip("\x00 ")[:200]
    except Exception:  # metadata is a bonus: a directory Pillow cannot parse costs nothing but these tags
        return {}
    return found


def _raw_exif(raw: Any, path: Path) -> bytes | None:
    """EXIF of what LibRaw reports of the shot, plus make and model from a TIFF-based RAW's first directory."""
    from PIL import Image

    exif = Image.Exif()
    try:
        for tag, value in _tiff_make_and_model(path).items():
            exif[tag] = value
        other, lens = raw.other, raw.lens
        if other.artist:
            exif[0x013B] = other.artist
        shot: dict[int, object] = {}
        if other.iso_speed > 0:
            shot[0x8827] = round(other.iso_speed)  # ISOSpeedRatings
        if other.shutter_speed > 0:
            shot[0x829A] = float(other.shutter_speed)  # ExposureTime, seconds
        if other.aperture > 0:
            shot[0x829D] = float(other.aperture)  # FNumber
        if other.focal_length > 0:
            shot[0x920A] = float(other.focal_length)  # FocalLength, mm
        if other.timestamp is not None and other.timestamp.year > 1970:
            shot[0x9003] = other.timestamp.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
        if lens.make:
            shot[0xA433] = lens.make
        if lens.model:
            shot[0xA434] = lens.model
        if shot:
            exif.get_ifd(0x8769).update(shot)
        return exif.tobytes() if len(exif) else None
    except Exception:  # odd values must not cost the picture
        return None


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _libraw_messages(name: str) -> Iterator[list[str]]:
    """Collect what LibRaw prints about ``name`` on the process's stderr (``NAME: Unexpected end of file``,
    ``NAME: data corrupted at N``) into the list yielded, so that a bad file fails with one line of ours that
    says it; anything else written to stderr meanwhile is passed on afterwards."""
    said: list[str] = []
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to borrow: LibRaw's lines go wherever they go
            yield said
            return
        try:
            os.dup2(capture.fileno(), 2)
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read(1 << 16).decode(errors="replace")
            prefix = f"{name}: "
            others = []
            for line in text.splitlines():
                if line.startswith(prefix):
                    said.append(line.removeprefix(prefix).strip())
                elif line:
                    others.append(line)
            if others:
                os.write(2, ("\n".join(others) + "\n").encode())


def _libraw_reason(error: BaseException, said: list[str]) -> str:
    """Why LibRaw failed: what it printed (e.g. "Unexpected end of file"), else its exception's words."""
    return f"LibRaw: {said[0]}" if said else f"{type(error).__name__}: {_reason(error)}"


def read_raw(path: Path, max_pixels: int | None, options: RawOptions | None = None) -> Picture:
    """Decode a camera RAW file to 16-bit sRGB (see the module's notes), upright, with what EXIF LibRaw gives.

    The declared sensor and output sizes are checked against ``max_pixels`` before anything is unpacked.
    """
    options = options or RawOptions()
    try:
        import rawpy
    except ImportError:
        raise ImageReadError(missing_extra(f"camera RAW ({path.suffix.lower() or 'no ending'})")) from None
    name = os.fsdecode(path)
    raw = rawpy.RawPy()
    try:
        failure: BaseException | None = None
        with _libraw_messages(name) as said:
            try:
                raw.open_file(name)
                sizes = raw.sizes
            except Exception as error:  # LibRawIOError, LibRawDataError, UnicodeError (a name LibRaw cannot take)
                failure = error
        if isinstance(failure, rawpy.LibRawFileUnsupportedError):
            raise ImageReadError("not a camera RAW file LibRaw can read (unsupported or not RAW data)")
        if failure is not None:
            raise ImageReadError(f"truncated or corrupt RAW file ({_libraw_reason(failure, said)})")
        if min(sizes.width, sizes.height, sizes.raw_width, sizes.raw_height) < 1:
            raise ImageReadError(f"no pixels: the header says {sizes.width}x{sizes.height}")
        check_pixel_count(sizes.raw_width, sizes.raw_height, max_pixels)  # what unpacking allocates
        check_pixel_count(sizes.width, sizes.height, max_pixels)
        with _libraw_messages(name) as said:
            try:
                rgb = raw.postprocess(
                    use_camera_wb=options.white_balance == "camera",
                    use_auto_wb=options.white_balance == "auto",
                    half_size=options.half_size,
                    output_bps=16,
                    no_auto_bright=True,
                    gamma=_SRGB_GAMMA,
                )
            except Exception as error:
                failure = error
        if isinstance(failure, (MemoryError, rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError)):
            raise ImageReadError("out of memory while decoding the RAW data")
        if isinstance(failure, rawpy.LibRawTooBigError):
            raise ImageReadError("the RAW data is too large for LibRaw")
        if failure is not None:  # LibRawIOError (truncated), LibRawDataError, ...
            raise ImageReadError(f"truncated or corrupt RAW data ({_libraw_reason(failure, said)})")
        if said:  # LibRaw went on past a data error (filling the rest with garbage): the picture is refused
            raise ImageReadError(f"truncated or corrupt RAW data (LibRaw: {said[0]})")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint16 or rgb.size == 0:
            raise ImageReadError(f"LibRaw gave no RGB picture (shape {rgb.shape}, {rgb.dtype})")
        exif = _raw_exif(raw, path)
    finally:
        raw.close()
    return Picture(pixels=np.ascontiguousarray(rgb), format="RAW", exif=exif)
