"""Image files: orientation, metadata, 16-bit, grey, alpha, limits and clear errors for bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from scl_lle.io.errors import ImageTooLargeError
from scl_lle.io.image import ImageReadError, read_image, write_image
from scl_lle.io.metadata import apply_orientation
from scl_lle.io.picture import HAS_AVIF, Picture, picture_from_pil

RNG = np.random.default_rng(7)
AVIF = pytest.mark.skipif(not HAS_AVIF, reason="this Pillow has no AVIF codec")


def _asymmetric_rgb(h: int = 6, w: int = 9) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(tmp_path: Path, orientation: int):
    pixels = _asymmetric_rgb()
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    path = tmp_path / "o.png"
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    picture = read_image(path)
    np.testing.assert_array_equal(picture.pixels, expected)
    kept = Image.Exif()
    kept.load(picture.exif)
    assert kept.get(0x0112) is None and kept[0x010F] == "TestCam"
    assert apply_orientation(pixels, orientation).shape == expected.shape


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_turns_the_stored_pixels(tmp_path: Path, mode: str, orientation: int):
    # Pillow opens a TIFF with orientation 5-8 at the turned size: RGB ones failed to decode, grey ones came out
    # scrambled at the stored size. Every mode must come out as the same TIFF without the tag, turned.
    pixels = _asymmetric_rgb()
    image = Image.fromarray(pixels[..., 0].astype("<u2") * 257) if mode == "I;16" else Image.fromarray(pixels)
    image = image if mode == "I;16" else image.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(tmp_path / "plain.tif", compression="tiff_lzw")
    image.save(tmp_path / "turned.tif", compression="tiff_lzw", exif=exif.tobytes())
    stored = read_image(tmp_path / "plain.tif")
    turned = read_image(tmp_path / "turned.tif")
    np.testing.assert_array_equal(turned.pixels, apply_orientation(stored.pixels, orientation))
    if mode == "RGBA":
        np.testing.assert_array_equal(turned.alpha, apply_orientation(stored.alpha, orientation))


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_tiff_orientation(tmp_path: Path, channels: int, orientation: int):
    # Decoded by OpenCV, which turns TIFFs by their orientation itself: turned twice (2-4), or refused (5-8).
    import tifffile

    stored = RNG.integers(0, 65536, (5, 7, channels), dtype=np.uint16)
    photometric = {"photometric": "rgb", "extrasamples": [2]} if channels == 4 else {"photometric": "rgb"}
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, stored, extratags=[(274, "H", 1, orientation, False)], **photometric)
    picture = read_image(path)
    assert picture.pixels.dtype == np.uint16
    np.testing.assert_array_equal(picture.pixels, apply_orientation(stored[..., :3], orientation))
    if channels == 4:
        np.testing.assert_array_equal(picture.alpha, apply_orientation(stored[..., 3], orientation))


def test_sixteen_bit_colour_png_and_tiff_round_trip(tmp_path: Path):
    pixels = RNG.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    alpha = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
    for name in ("c.png", "c.tiff"):
        path = write_image(tmp_path / name, Picture(pixels, alpha, icc_profile=b"\0fake-icc"))
        picture = read_image(path)
        assert picture.pixels.dtype == np.uint16
        np.testing.assert_array_equal(picture.pixels, pixels)
        np.testing.assert_array_equal(picture.alpha, alpha)
        assert picture.icc_profile == b"\0fake-icc"
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert decoded.dtype == np.uint16 and decoded.shape == (9, 11, 4)


def test_sixteen_bit_grey_round_trip(tmp_path: Path):
    grey = RNG.integers(0, 65536, (5, 8), dtype=np.uint16)
    for name in ("g.png", "g.tif"):
        path = write_image(tmp_path / name, Picture(grey))
        picture = read_image(path)
        assert picture.pixels.dtype == np.uint16 and picture.pixels.ndim == 2
        np.testing.assert_array_equal(picture.pixels, grey)


def test_icc_and_exif_carried_through_jpeg(tmp_path: Path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "NightCam"
    exif[0x0112] = 3
    src = tmp_path / "in.jpg"
    Image.fromarray(_asymmetric_rgb(20, 30)).save(src, icc_profile=icc, exif=exif.tobytes(), quality=95)
    picture = read_image(src)
    out = write_image(tmp_path / "out.jpg", picture)
    with Image.open(out) as written:
        assert written.info["icc_profile"] == icc
        assert written.getexif()[0x010F] == "NightCam"
        assert written.getexif().get(0x0112) is None


@pytest.mark.parametrize("suffix", [".webp", pytest.param(".avif", marks=AVIF)])
def test_webp_and_avif_round_trip_with_alpha_icc_and_exif(tmp_path: Path, suffix: str):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "NightCam"
    y, x = np.mgrid[0:32, 0:48]
    rgb = np.dstack((x * 5, y * 7, 200 - x * 2)).astype(np.uint8)  # smooth: lossy codecs keep it closely
    alpha = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1))
    picture = Picture(rgb, alpha, "PNG", icc, exif.tobytes())
    out = write_image(tmp_path / f"out{suffix}", picture, quality=100)
    back = read_image(out)
    assert back.format == suffix[1:].upper()
    assert back.pixels.dtype == np.uint8 and back.pixels.shape == rgb.shape
    assert back.alpha is not None and np.abs(back.alpha.astype(int) - alpha).max() <= 8
    assert np.abs(back.pixels.astype(int) - rgb).mean() < 3  # lossy, but the same picture
    assert back.icc_profile == icc
    with Image.open(out) as written:
        assert written.getexif()[0x010F] == "NightCam"
    # a 16-bit picture is written at 8 bits (neither format keeps more through Pillow)
    deep = write_image(tmp_path / f"deep{suffix}", Picture(rgb.astype(np.uint16) * 257), quality=100)
    assert np.abs(read_image(deep).pixels.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_every_pillow_mode_reads(tmp_path: Path, mode: str):
    base = Image.fromarray(_asymmetric_rgb(8, 10))
    image = base.convert("L").convert(mode) if mode in ("I;16", "I", "F") else base.convert(mode)
    if mode == "PA":  # no file format stores PA: convert the decoded image directly
        picture = picture_from_pil(base.convert("P").convert("PA"))
    else:
        suffix = {"CMYK": ".jpg", "YCbCr": ".jpg", "I": ".tif", "F": ".tif"}.get(mode, ".png")
        path = tmp_path / f"m{suffix}"
        image.save(path)
        picture = read_image(path)
    assert picture.pixels.shape[:2] == (8, 10)
    assert picture.pixels.dtype in (np.uint8, np.uint16, np.float32)
    grey = mode in ("1", "L", "LA", "I;16", "I", "F")
    assert (picture.pixels.ndim == 2) == grey
    assert (picture.alpha is not None) == (mode in ("LA", "PA", "RGBA"))


def test_float_tiff_stays_float(tmp_path: Path):
    grey = RNG.random((6, 7)).astype(np.float32)
    path = write_image(tmp_path / "f.tif", Picture(grey))
    np.testing.assert_allclose(read_image(path).pixels, grey)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_asymmetric_rgb(64, 64)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_asymmetric_rgb(64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty"),
        ("text.jpg", b"hello, I am not a picture\n" * 10, "not an image"),
        ("random.png", bytes(RNG.integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        ("truncated.png", _png_bytes()[:300], "truncated"),
        ("truncated.jpg", _jpeg_bytes()[:400], "truncated"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path: Path, name: str, content: bytes, reason: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        read_image(path)


def test_pixel_limit_refuses_before_decoding(tmp_path: Path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    with pytest.raises(ImageTooLargeError, match="300x200 is 60,000 pixels, over the limit of 50,000 pixels"):
        read_image(path, max_pixels=50_000)  # was "0.1 megapixels, over the limit of 0.1"
    assert read_image(path, max_pixels=60_000).size == (300, 200)
    assert read_image(path, max_pixels=None).size == (300, 200)


def test_pixel_limit_comes_before_anything_is_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Reading a PNG's EXIF decodes the picture when no eXIf chunk comes before its data: the limit must be first.
    from PIL import ImageFile

    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)

    loads: list[object] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))  # (errors would be caught)
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        read_image(path, max_pixels=50_000)
    assert loads == []


def test_write_is_atomic_and_refuses_to_clobber(tmp_path: Path, monkeypatch):
    target = tmp_path / "x.png"
    picture = Picture(_asymmetric_rgb())
    write_image(target, picture)
    before = target.read_bytes()
    with pytest.raises(FileExistsError):
        write_image(target, Picture(_asymmetric_rgb()))
    assert target.read_bytes() == before

    def interrupted_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "y.png", picture)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_unreadable_and_special_files(tmp_path: Path, monkeypatch):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(fifo)  # must not block waiting for a writer
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)
    locked = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(locked)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageReadError, match="permission denied"):
        read_image(locked)


def test_multi_frame_files_warn_that_only_the_first_frame_is_read(tmp_path: Path):
    from scl_lle.io.errors import ImageWarning

    frames = [Image.fromarray(_asymmetric_rgb(12, 16)) for _ in range(4)]
    for name in ("anim.gif", "anim.png", "pages.tiff", "anim.webp"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        told: list[str] = []
        assert read_image(tmp_path / name, on_warning=told.append).size == (16, 12)
        assert told == ["only the first of 4 frames is used"], name
    with pytest.warns(ImageWarning, match="first of 4 frames"):
        read_image(tmp_path / "anim.gif")
    frames[0].save(tmp_path / "one.gif")
    told = []
    read_image(tmp_path / "one.gif", on_warning=told.append)
    assert told == []


def test_jpeg_drops_oversized_exif_and_refuses_oversized_images(tmp_path: Path):
    from scl_lle.io.errors import ImageWarning, ImageWriteError

    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000
    picture = Picture(_asymmetric_rgb(), exif=exif.tobytes())
    with pytest.warns(ImageWarning, match="over JPEG's 64 KB limit; written without EXIF"):
        write_image(tmp_path / "big_exif.jpg", picture)
    with Image.open(tmp_path / "big_exif.jpg") as image:
        assert image.format == "JPEG" and not image.getexif()
    write_image(tmp_path / "big_exif.png", picture)  # PNG holds it
    assert len(read_image(tmp_path / "big_exif.png").exif or b"") > 65_533
    wide = Picture(np.zeros((1, 65_501, 3), np.uint8))
    with pytest.raises(ImageWriteError, match="JPEG cannot hold 65501x1 pixels"):
        write_image(tmp_path / "wide.jpg", wide)
    assert not (tmp_path / "wide.jpg").exists()
    write_image(tmp_path / "wide.png", wide)


def test_sniff_container_reads_the_first_bytes_only(tmp_path: Path):
    from scl_lle.io.sniff import sniff_container

    samples = {
        "clip.mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
        "clip.webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
        "photo.mp4": _png_bytes(),
        "photo.mkv": _jpeg_bytes(),
        "still.mp4": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00",
        "phone.mov": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
        "text.mp4": b"hello",
        "empty.mp4": b"",
    }
    for name, content in samples.items():
        (tmp_path / name).write_bytes(content)
    assert {name: sniff_container(tmp_path / name) for name in samples} == {
        "clip.mp4": "mp4",
        "clip.webm": "matroska",
        "photo.mp4": "PNG",
        "photo.mkv": "JPEG",
        "still.mp4": "AVIF",
        "phone.mov": "HEIF",
        "text.mp4": None,
        "empty.mp4": None,
    }
    os.mkfifo(tmp_path / "pipe.mp4")
    assert sniff_container(tmp_path / "pipe.mp4") is None  # never opened: no writer, would block
    assert sniff_container(tmp_path / "missing.mp4") is None
    assert sniff_container(tmp_path) is None
