"""Property-based fuzzing of image reading and the enhance pipeline (issue 7).

Every generated file either enhances to an output of its own size, or fails alone with an
:class:`~scl_lle.io.image.ImageReadError` whose message says why: no other exception, no hang, bounded memory.
Each test is bounded by ``max_examples`` (the module takes about half a minute on two idle cores); set
``SCL_LLE_FUZZ_SCALE=N`` to run N times as many cases. ``--hypothesis-show-statistics`` prints how many ran.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import resource
import signal
import struct
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from scl_lle import Enhancer
from scl_lle.apps.batch import enhance
from scl_lle.io.errors import ImageTooLargeError
from scl_lle.io.image import DEFAULT_MAX_PIXELS, ImageReadError, read_image, write_image
from scl_lle.io.picture import Picture, picture_from_pil

#: Fuzzed files may declare up to this many pixels: enough for every real case, cheap to decode.
FUZZ_MAX_PIXELS = 1 << 20
#: Multiplies every test's number of cases (``SCL_LLE_FUZZ_SCALE``; 1 in CI).
SCALE = int(os.environ.get("SCL_LLE_FUZZ_SCALE", "1"))
#: A single file taking longer than this is treated as a hang.
HANG_SECONDS = 30
FUZZ = settings(
    max_examples=400 * SCALE,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"]
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "PPM": ".ppm", "TGA": ".tga"}
EXTENSIONS = [*FORMATS.values(), ".jpeg", ".tiff", ".pgm", ".gif", ".txt", ""]


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Turn a hang (a loop in Python code) into a failure."""

    def expired(signum, frame):
        raise TimeoutError(f"no result after {seconds} s: the reader hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _image(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 90, (height, width, 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        return base.convert("L").convert(mode)
    if mode == "PA":
        return base.convert("P").convert("PA")
    return base.convert(mode)


@functools.cache
def _corpus() -> tuple[tuple[str, bytes], ...]:
    """Valid files of every format this package reads, in every mode each format stores, at odd sizes."""
    files = []
    for fmt, suffix in FORMATS.items():
        for mode in MODES:
            for width, height in ((1, 1), (5, 3), (17, 13)):
                buffer = io.BytesIO()
                try:
                    _image(mode, width, height).save(buffer, fmt)
                except (OSError, ValueError, KeyError):
                    continue  # this format cannot store this mode
                files.append((f"{fmt.lower()}-{mode}-{width}x{height}{suffix}", buffer.getvalue()))
    return tuple(files)


def _check_read(path: Path) -> Picture | None:
    """Read ``path``: a consistent picture, or ``None`` after a clear :class:`ImageReadError`."""
    with _time_limit(HANG_SECONDS), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt metadata it skips
        try:
            picture = read_image(path, max_pixels=FUZZ_MAX_PIXELS)
        except ImageReadError as error:
            assert str(error).strip(), "the error must say why"
            return None
    height, width = picture.pixels.shape[:2]
    assert width >= 1 and height >= 1
    assert picture.pixels.dtype in (np.uint8, np.uint16, np.float32)
    assert picture.pixels.ndim == 2 or picture.pixels.shape[2] == 3
    assert picture.alpha is None or picture.alpha.shape == (height, width)
    return picture


@pytest.fixture(scope="module")
def enhancer(weights_file: Path) -> Enhancer:
    return Enhancer(weights_file, device="cpu", threads=1)


@pytest.fixture(scope="module")
def memory_baseline() -> float:
    return _peak_rss_mib()


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(EXTENSIONS))
def test_random_bytes_are_refused_clearly(data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"random{suffix}"
        path.write_bytes(data)
        picture = _check_read(path)
    if not data:
        assert picture is None  # zero bytes: "empty file"


@st.composite
def _damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file truncated and/or with bytes overwritten, named with its own or a wrong extension."""
    name, data = draw(st.sampled_from(_corpus()))
    damaged = bytearray(data)
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(damaged) - 1))
        damaged[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        damaged = damaged[: draw(st.integers(0, len(damaged)))]
    suffix = draw(st.sampled_from([Path(name).suffix, *EXTENSIONS]))
    return Path(name).stem + suffix, bytes(damaged)


@settings(FUZZ, max_examples=1500 * SCALE)
@given(case=_damaged())
def test_damaged_files_enhance_or_fail_alone(case: tuple[str, bytes], enhancer: Enhancer, memory_baseline: float):
    name, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        picture = _check_read(path)
        if picture is not None:  # still decodable: it must go through the whole pipeline
            enhanced = enhancer.enhance_picture(picture)
            written = write_image(Path(folder) / "out.png", enhanced)
            assert read_image(written).size == picture.size
    assert _peak_rss_mib() - memory_baseline < 1024, "memory grew by more than 1 GiB"


@settings(FUZZ, max_examples=250 * SCALE)
@given(
    mode=st.sampled_from(MODES),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".webp", ".ppm", ".tga"]),
    output_format=st.sampled_from(["same", "png", "jpg", "tiff"]),
)
@example(mode="P", width=1, height=1, suffix=".tif", output_format="same")  # found: palette tags broke the TIFF
@example(mode="CMYK", width=7, height=3, suffix=".tif", output_format="tiff")
def test_every_mode_and_size_enhances(
    mode: str, width: int, height: int, suffix: str, output_format: str, enhancer: Enhancer
):
    image = _image(mode, width, height, seed=width * 100 + height)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / f"in{suffix}"
        try:
            image.save(source)
        except (OSError, ValueError, KeyError):  # the format cannot store the mode: enhance the pixels directly
            assert picture_from_pil(image).size == (width, height)
            enhanced = enhancer.enhance_picture(picture_from_pil(image))
            assert enhanced.size == (width, height)
            return
        out = Path(folder) / "out"
        result = enhance([source], out, enhancer=enhancer, format=output_format, progress=False)
        assert result.ok, result.failed
        (written,) = result.written
        with Image.open(written) as decoded:
            decoded.load()
            assert decoded.size == (width, height)
        grey = read_image(source).pixels.ndim == 2  # a format may store a grey mode as colour (WebP)
        assert (read_image(written).pixels.ndim == 2) == grey or written.suffix == ".webp"


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\0" * 64


def _tiff_header(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8)]
    entries += [(277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 64)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\0" + struct.pack("<I", 8 + 64) + b"\0" * 64 + ifd + b"\0\0\0\0"


def _jpeg_header(width: int, height: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
    sos = b"\x01\x01\x00\x00\x3f\x00"
    segments = b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos
    return b"\xff\xd8" + segments + b"\0" * 64


def _ppm_header(width: int, height: int) -> bytes:
    return f"P6\n{width} {height}\n255\n".encode() + b"\0" * 64


HEADERS = {".png": _png_header, ".bmp": _bmp_header, ".tif": _tiff_header, ".jpg": _jpeg_header, ".ppm": _ppm_header}


#: The largest width and height each format's header can state.
HEADER_LIMITS = {".png": 2**31 - 1, ".bmp": 2**31 - 1, ".tif": 2**32 - 1, ".jpg": 65535, ".ppm": 10**7}


@st.composite
def _giant_headers(draw: st.DrawFn) -> tuple[str, int, int]:
    """A format and a width x height over the pixel limit that its header can state."""
    suffix = draw(st.sampled_from(sorted(HEADERS)))
    largest = HEADER_LIMITS[suffix]
    width = draw(st.integers(FUZZ_MAX_PIXELS // largest + 1, largest))
    height = draw(st.integers(min(largest, FUZZ_MAX_PIXELS // width + 1), largest))
    return suffix, width, height


@settings(FUZZ, max_examples=200 * SCALE)
@given(case=_giant_headers())
def test_huge_declared_dimensions_are_refused_before_decoding(case: tuple[str, int, int], memory_baseline: float):
    """A few bytes that declare a giant picture: refused by the pixel limit, fast, without allocating it."""
    suffix, width, height = case
    assert width * height > FUZZ_MAX_PIXELS
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"bomb{suffix}"
        path.write_bytes(HEADERS[suffix](width, height))
        started = time.perf_counter()
        with pytest.raises(ImageTooLargeError, match="too large"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_image(path, max_pixels=FUZZ_MAX_PIXELS)
        assert time.perf_counter() - started < HANG_SECONDS
    assert _peak_rss_mib() - memory_baseline < 1024, "memory grew by more than 1 GiB"


def test_default_limit_refuses_the_largest_headers_every_format_can_declare(tmp_path: Path):
    before = _peak_rss_mib()
    for suffix, side in HEADER_LIMITS.items():
        path = tmp_path / f"bomb{suffix}"
        path.write_bytes(HEADERS[suffix](side, side))
        assert side * side > DEFAULT_MAX_PIXELS
        with pytest.raises(ImageTooLargeError, match="too large"):
            read_image(path)
    assert _peak_rss_mib() - before < 256
