"""Photos as people shoot them (issue 22): HEIC/HEIF from phones, AVIF, and camera RAW (a DNG written here with
tifffile, and the real Kodak KDC of ``$SCL_LLE_SHARED/data/raw_samples``)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from conftest import _find_shared
from scl_lle import enhance
from scl_lle.apps.batch_jobs import collect_jobs
from scl_lle.cli import main
from scl_lle.engine.enhancer import Enhancer
from scl_lle.io.errors import ImageTooLargeError
from scl_lle.io.image import ImageReadError, ImageWriteError, read_image, write_image
from scl_lle.io.picture import HAS_AVIF, Picture
from scl_lle.io.sniff import sniff_container

try:
    import pillow_heif
except ImportError:
    pillow_heif = None
try:
    import rawpy
except ImportError:
    rawpy = None

HEIF = pytest.mark.skipif(pillow_heif is None, reason="pillow-heif (the 'formats' extra) is not installed")
RAW = pytest.mark.skipif(rawpy is None, reason="rawpy (the 'formats' extra) is not installed")
AVIF = pytest.mark.skipif(not HAS_AVIF, reason="this Pillow has no AVIF codec")
SRC = Path(__file__).resolve().parents[1] / "src"
EXTRA = "needs the 'formats' extra: pip install 'scl-lle[formats]'"
KDC_NAME = "RAW_KODAK_DC50.KDC"


def _kdc() -> Path:
    shared = _find_shared()
    path = shared / "data" / "raw_samples" / KDC_NAME if shared else None
    if path is None or not path.is_file():
        pytest.skip(f"the shared RAW sample is absent (set SCL_LLE_SHARED; needs data/raw_samples/{KDC_NAME})")
    return path


def _smooth_rgb(h: int = 32, w: int = 48) -> np.ndarray:
    """Smooth (lossy codecs keep it closely) and asymmetric (a wrong turn shows): dark left third."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.dstack((40 + x * 4, 60 + y * 5, 200 - x * 2)).astype(np.uint8)
    rgb[:, : w // 3] //= 4
    return rgb


def _exif(**tags: object) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneCam"
    for key, value in tags.items():
        exif[{"orientation": 0x0112}[key]] = value
    return exif.tobytes()


def _exif_of(data: bytes | None) -> Image.Exif:
    exif = Image.Exif()
    if data:
        exif.load(data)
    return exif


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _write_heic(path: Path, pixels: np.ndarray, bit_depth: int = 8, **options: object) -> Path:
    """Write ``pixels`` (uint8, or uint16 holding ``bit_depth``-bit values in the top bits) as a phone would."""
    mode = "RGB" if pixels.dtype == np.uint8 else "RGB;16"
    path.parent.mkdir(parents=True, exist_ok=True)
    heif = pillow_heif.from_bytes(mode, (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels).tobytes())
    heif.save(path, bit_depth=bit_depth, **options)
    return path


def _srational(values: list[float], den: int = 10000) -> list[int]:
    return [part for value in values for part in (round(value * den), den)]


_XYZ_TO_SRGB = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]


def _write_dng(path: Path, scene: np.ndarray, black: int = 64, white: int = 4095) -> Path:
    """A minimal DNG: ``scene`` (linear, in [0, 1], neutral grey) as an RGGB Bayer mosaic of 12-bit values in
    16-bit samples, with BlackLevel/WhiteLevel, a ColorMatrix1 that makes the camera's space linear sRGB and a
    neutral AsShotNeutral."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    mosaic = np.round(black + np.clip(scene, 0, 1) * (white - black)).astype(np.uint16)
    tags = [
        (271, "s", 0, "Synth", True),  # Make
        (272, "s", 0, "One", True),  # Model
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: R G / G B
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "Synth One", True),  # UniqueCameraModel
        (50714, "H", 1, black, True),  # BlackLevel
        (50717, "H", 1, white, True),  # WhiteLevel
        (50721, "2i", 9, _srational(_XYZ_TO_SRGB), True),  # ColorMatrix1
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, subfiletype=0, extratags=tags, metadata=None)
    return path


def _dark_scene(h: int = 64, w: int = 256) -> np.ndarray:
    """A dim horizontal ramp (linear 0.002..0.03); the right half three times as bright."""
    scene = np.tile(np.linspace(0.002, 0.03, w), (h, 1))
    scene[:, w // 2 :] *= 3
    return scene


def _png16(path: Path) -> np.ndarray:
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.dtype == np.uint16 and decoded.ndim == 3, path
    return decoded[..., ::-1]


def _levels(array: np.ndarray) -> int:
    return len(np.unique(array))


@pytest.fixture
def engine_dtypes(monkeypatch: pytest.MonkeyPatch) -> list[np.dtype]:
    """The dtypes of the pixels the engine is given (the curves are applied on exactly those)."""
    seen: list[np.dtype] = []
    original = Enhancer.enhance_array

    def spy(self, pixels, *args, **kwargs):
        seen.append(np.asarray(pixels).dtype)
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(Enhancer, "enhance_array", spy)
    return seen


# --- HEIC / HEIF ---------------------------------------------------------------------------------------------


@HEIF
def test_heic_reads_upright_with_exif_and_icc_and_writes_them_back(tmp_path: Path):
    rgb, icc = _smooth_rgb(), _srgb_icc()
    source = _write_heic(tmp_path / "phone.heic", rgb, quality=100, exif=_exif(orientation=6), icc_profile=icc)
    picture = read_image(source)
    upright = np.rot90(rgb, k=-1)  # orientation 6: turn 90 degrees clockwise to display
    assert picture.format == "HEIF" and picture.pixels.dtype == np.uint8
    assert picture.pixels.shape == upright.shape  # libheif turned it; it is not turned a second time
    assert np.abs(picture.pixels.astype(int) - upright).mean() < 3
    assert picture.icc_profile == icc
    exif = _exif_of(picture.exif)
    assert exif[0x010F] == "PhoneCam" and 0x0112 not in exif
    with Image.open(source) as opened:  # the Pillow opener was registered when the first HEIC was met
        assert opened.size == (upright.shape[1], upright.shape[0])

    out = write_image(tmp_path / "out.heic", picture, quality=100)
    written = pillow_heif.open_heif(out, convert_hdr_to_8bit=False)
    assert written.size == (upright.shape[1], upright.shape[0]) and written.info["bit_depth"] == 8
    assert written.info["icc_profile"] == icc
    kept = _exif_of(written.info["exif"])
    assert kept[0x010F] == "PhoneCam" and kept.get(0x0112, 1) == 1
    back = read_image(out)
    assert back.pixels.shape == upright.shape and np.abs(back.pixels.astype(int) - upright).mean() < 3


@HEIF
@pytest.mark.parametrize("bit_depth", [10, 12])
def test_high_bit_depth_heic_stays_sixteen_bit_end_to_end(
    tmp_path: Path, weights_file: Path, engine_dtypes: list, bit_depth: int
):
    top = (1 << bit_depth) - 1
    codes = np.tile(np.arange(0, 600) * top // 1000, (16, 1))  # 0..0.6 of full scale: 600 codes
    codes[-2:] = top  # and a white stripe
    grey = np.repeat(codes[..., None], 3, axis=2).astype(np.uint16)
    source = _write_heic(tmp_path / "in" / "deep.heic", grey << (16 - bit_depth), bit_depth, quality=-1, chroma=444)
    picture = read_image(source)
    assert picture.pixels.dtype == np.uint16
    assert picture.pixels.max() == 65535  # full scale, not the codec's 65472 (10-bit) or 65520 (12-bit)
    assert _levels(picture.pixels) > 512
    expected = np.round(grey.astype(float) * 65535 / top)
    assert np.abs(picture.pixels - expected).max() <= 2 * 65535 / top  # the lossless codec's YCbCr rounding

    assert main(["enhance", str(source), "-o", str(tmp_path / "same"), "-w", str(weights_file), "-q"]) == 0
    assert engine_dtypes == [np.dtype(np.uint16)]  # the curves are applied to the 16-bit samples
    written = pillow_heif.open_heif(tmp_path / "same" / "deep.heic", convert_hdr_to_8bit=False)
    assert written.mode == "RGB;16" and written.info["bit_depth"] == 10  # 16-bit data is written at 10 bits
    assert _levels(np.asarray(written)) > 256
    assert main(["enhance", str(source), "-o", str(tmp_path / "png"), "--format", "png", "-w", str(weights_file)]) == 0
    assert _levels(_png16(tmp_path / "png" / "deep.png")) > 512


@HEIF
def test_grey_and_alpha_pictures_are_written_as_heic(tmp_path: Path):
    grey = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (8, 1))
    back = read_image(write_image(tmp_path / "grey.heic", Picture(grey), quality=100))
    assert back.pixels.ndim == 2 and back.pixels.dtype == np.uint16  # grey stays grey, 16-bit stays deep
    assert np.abs(back.pixels.astype(int) - grey).max() < 1024
    rgb, alpha = _smooth_rgb(), np.tile(np.linspace(0, 255, 48).astype(np.uint8), (32, 1))
    back = read_image(write_image(tmp_path / "alpha.heif", Picture(rgb, alpha), quality=100))
    assert back.alpha is not None and np.abs(back.alpha.astype(int) - alpha).max() <= 8


# --- AVIF ----------------------------------------------------------------------------------------------------


@AVIF
def test_avif_reads_upright_with_exif_and_icc_and_writes_them_back(tmp_path: Path):
    rgb, icc = _smooth_rgb(), _srgb_icc()
    source = tmp_path / "phone.avif"
    Image.fromarray(rgb).save(source, quality=100, exif=_exif(orientation=6), icc_profile=icc)
    picture = read_image(source)
    upright = np.rot90(rgb, k=-1)
    assert picture.format == "AVIF" and picture.pixels.shape == upright.shape
    assert np.abs(picture.pixels.astype(int) - upright).mean() < 3
    assert picture.icc_profile == icc
    exif = _exif_of(picture.exif)
    assert exif[0x010F] == "PhoneCam" and 0x0112 not in exif
    back = read_image(write_image(tmp_path / "out.avif", picture, quality=100))
    assert back.pixels.shape == upright.shape and np.abs(back.pixels.astype(int) - upright).mean() < 3
    assert back.icc_profile == icc and _exif_of(back.exif)[0x010F] == "PhoneCam"


def test_iso_brands_tell_avif_from_heif_and_folders_pick_up_the_new_endings(tmp_path: Path):
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        body = b"ftyp" + major + b"\0\0\0\0" + b"".join(compatible)
        return struct.pack(">I", 4 + len(body)) + body

    cases = {
        "a.heic": (ftyp(b"heic", b"mif1", b"heic"), "HEIF"),
        "b.heif": (ftyp(b"mif1", b"mif1", b"heic"), "HEIF"),
        "c.avif": (ftyp(b"mif1", b"mif1", b"avif", b"miaf"), "AVIF"),  # a generic major brand with AV1 inside
        "d.avif": (ftyp(b"avif", b"mif1"), "AVIF"),
        "e.mp4": (ftyp(b"isom", b"mp41"), "mp4"),
    }
    for name, (data, kind) in cases.items():
        (tmp_path / name).write_bytes(data + bytes(32))
        assert sniff_container(tmp_path / name) == kind, name
    for name in ("f.HIF", "g.CR3", "h.nef", "i.dng", "j.kdc", "k.arw", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    jobs, problems = collect_jobs([tmp_path], tmp_path / "out")
    outputs = sorted(job.destination.name for job in jobs)
    assert not problems
    # HEIC keeps its type; RAW cannot be written, so 'same' gives PNG; videos and other files are not photos
    expected = ["a.heic", "b.heif", "c.avif", "d.avif", "e.mp4", "f.HIF", "g.png", "h.png", "i.png", "j.png"]
    assert outputs == [*expected, "k.png"]


# --- camera RAW ----------------------------------------------------------------------------------------------


@RAW
def test_a_dng_enhances_to_a_sixteen_bit_png_that_keeps_the_scene(tmp_path: Path, engine_dtypes: list, capsys):
    source = _write_dng(tmp_path / "in" / "night.dng", _dark_scene())
    decoded = read_image(source)
    assert decoded.format == "RAW" and decoded.pixels.dtype == np.uint16 and decoded.pixels.shape == (64, 256, 3)
    # LibRaw's sRGB-gamma output without auto-brightening: linear 0.002..0.03 is about 0.03..0.19 of full scale
    assert 0.02 < decoded.pixels[:, :128].mean() / 65535 < 0.15

    out = tmp_path / "out"
    assert main(["enhance", str(source), "-o", str(out), "-q"]) == 0  # the embedded model
    assert engine_dtypes == [np.dtype(np.uint16)]  # no 8-bit rounding before the curves
    enhanced = _png16(out / "night.png")  # RAW + --format same: a 16-bit PNG
    assert enhanced.shape == (64, 256, 3)
    left, right = enhanced[:, :128].mean(), enhanced[:, 128:].mean()
    assert right > left * 1.3  # the brighter half stays brighter
    assert enhanced.mean() > decoded.pixels.mean() * 1.2  # and the dark photo was brightened
    assert np.all(np.diff(enhanced[:, 8:120].astype(int).mean(axis=(0, 2))) >= -64)  # the ramp still rises
    assert _levels(enhanced) > 1024  # far more than 8 bits could hold
    spread = enhanced.astype(int).max(axis=2) - enhanced.astype(int).min(axis=2)
    assert np.median(spread) < 0.02 * 65535  # a grey scene stays grey with the camera's white balance
    with Image.open(out / "night.png") as written:
        exif = written.getexif()
        assert (exif.get(0x010F), exif.get(0x0110)) == ("Synth", "One")  # make and model carried


@RAW
def test_raw_options_from_the_cli_and_the_python_api(tmp_path: Path, weights_file: Path):
    source = _write_dng(tmp_path / "in" / "night.dng", _dark_scene())
    args = ["enhance", str(source), "-w", str(weights_file), "-q", "--raw-half-size", "--raw-white-balance", "auto"]
    assert main([*args, "-o", str(tmp_path / "cli")]) == 0
    assert _png16(tmp_path / "cli" / "night.png").shape == (32, 128, 3)  # half width and height
    assert main([*args, "-o", str(tmp_path / "t"), "--format", "tiff"]) == 0
    with Image.open(tmp_path / "t" / "night.tiff") as tiff:
        assert tiff.size == (128, 32)
    import tifffile

    assert tifffile.imread(tmp_path / "t" / "night.tiff").dtype == np.uint16

    result = enhance([source], tmp_path / "api", weights=weights_file, progress=False, raw_half_size=True)
    assert result.ok and _png16(tmp_path / "api" / "night.png").shape == (32, 128, 3)
    result = enhance([source], tmp_path / "full", weights=weights_file, progress=False, raw_white_balance="camera")
    assert result.ok and _png16(tmp_path / "full" / "night.png").shape == (64, 256, 3)
    with pytest.raises(ValueError, match="raw white balance must be one of camera, auto"):
        enhance([source], tmp_path / "bad", weights=weights_file, progress=False, raw_white_balance="tungsten")


@RAW
def test_the_shared_kodak_kdc_enhances_to_a_sixteen_bit_png(tmp_path: Path, weights_file: Path):
    source = _kdc()
    assert main(["enhance", str(source), "-o", str(tmp_path), "-w", str(weights_file), "-q"]) == 0
    enhanced = _png16(tmp_path / "RAW_KODAK_DC50.png")
    assert enhanced.shape == (512, 768, 3) and _levels(enhanced) > 4096
    assert 0.05 < enhanced.mean() / 65535 < 0.95  # a daylight scene, neither black nor blown out
    with Image.open(tmp_path / "RAW_KODAK_DC50.png") as written:
        exif = written.getexif()
        shot = exif.get_ifd(0x8769)
    assert exif[0x010F] == "Eastman Kodak Company"
    assert shot[0x8827] == 84 and shot[0x9003] == "1997:04:23 08:00:47"  # ISO and time, as LibRaw reports them


# --- bad files, limits, the missing extra --------------------------------------------------------------------


def test_truncated_files_of_each_kind_fail_alone_and_the_batch_completes(tmp_path: Path, weights_file: Path, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(_smooth_rgb()).save(folder / "good.png")
    whole = tmp_path / "whole"
    whole.mkdir()
    sources: dict[str, Path] = {}
    if pillow_heif is not None:
        sources["heic.heic"] = _write_heic(whole / "a.heic", _smooth_rgb(120, 160), quality=90)
    if HAS_AVIF:
        Image.fromarray(_smooth_rgb(120, 160)).save(whole / "a.avif", quality=90)
        sources["avif.avif"] = whole / "a.avif"
    if rawpy is not None:
        sources["dng.dng"] = _write_dng(whole / "a.dng", _dark_scene())
        shared = _find_shared()
        kdc = shared / "data" / "raw_samples" / KDC_NAME if shared else None
        if kdc is not None and kdc.is_file():
            sources["kdc.kdc"] = kdc
    if not sources:
        pytest.skip("neither pillow-heif, rawpy nor Pillow's AVIF is installed")
    for name, whole_file in sources.items():
        data = whole_file.read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    status = main(["enhance", str(folder), "-o", str(tmp_path / "out"), "-w", str(weights_file), "-q"])
    lines = capfd.readouterr().err.splitlines()
    assert status == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    for name in sources:
        said = [line for line in lines if name in line]
        assert len(said) == 1 and said[0].startswith(f"error: {folder / name}: truncated or corrupt"), lines
    # one line per bad file and the summary; nothing else (LibRaw's own "Unexpected end of file" is in them)
    assert len(lines) == len(sources) + 1 and lines[-1].startswith("scl-lle: 1 enhanced, 0 skipped"), lines


@HEIF
def test_the_heic_size_is_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = _write_heic(tmp_path / "big.heic", _smooth_rgb())
    decoded: list[bool] = []
    monkeypatch.setattr(pillow_heif.heif.HeifImage, "load", lambda self: decoded.append(True))
    with pytest.raises(ImageTooLargeError, match="48x32"):
        read_image(source, max_pixels=1000)
    assert not decoded


@RAW
def test_a_raw_declaring_a_huge_sensor_is_refused_before_unpacking(tmp_path: Path):
    source = _write_dng(tmp_path / "huge.dng", _dark_scene(16, 16))
    data = bytearray(source.read_bytes())
    (offset,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[offset : offset + 2])
    for i in range(count):  # ImageWidth and ImageLength say 60000 x 60000 (3.6 gigapixels; the data is 16 x 16)
        entry = offset + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):
            data[entry + 8 : entry + 12] = struct.pack("<HH", 60000, 0) if kind == 3 else struct.pack("<I", 60000)
    source.write_bytes(bytes(data))
    with pytest.raises(ImageTooLargeError, match="60000x60000"):
        read_image(source)


def test_without_the_extra_each_such_file_says_what_to_install(
    tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # "import pillow_heif" now raises ImportError
    monkeypatch.setitem(sys.modules, "rawpy", None)
    heic = tmp_path / "in" / "phone.heic"
    heic.parent.mkdir()
    heic.write_bytes(struct.pack(">I", 24) + b"ftypheic\0\0\0\0mif1heic" + bytes(64))
    dng = tmp_path / "in" / "camera.dng"
    dng.write_bytes(b"II*\x00" + bytes(64))
    Image.fromarray(_smooth_rgb()).save(tmp_path / "in" / "plain.png")
    with pytest.raises(ImageReadError) as error:
        read_image(heic)
    assert str(error.value) == f"HEIC {EXTRA}"
    with pytest.raises(ImageReadError) as error:
        read_image(dng)
    assert str(error.value) == f"camera RAW (.dng) {EXTRA}"
    with pytest.raises(ImageWriteError) as error:
        write_image(tmp_path / "out.heic", Picture(_smooth_rgb()))
    assert str(error.value) == f"HEIC {EXTRA}"

    assert main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-w", str(weights_file), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"error: {heic}: HEIC {EXTRA}\n" in err and f"error: {dng}: camera RAW (.dng) {EXTRA}\n" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["plain.png"]
    png = str(tmp_path / "in" / "plain.png")
    assert main(["enhance", png, "-o", str(tmp_path / "h"), "--format", "heic", "-w", str(weights_file)]) == 2
    assert capsys.readouterr().err == f"scl-lle enhance: error: HEIC {EXTRA}\n"


def test_importing_scl_lle_loads_no_decoder_of_the_extra():
    code = (
        "import sys, scl_lle, scl_lle.io.image, scl_lle.io.formats, scl_lle.apps.batch\n"
        "from scl_lle.cli import build_parser\n"
        "build_parser()\n"
        "loaded = sorted({'pillow_heif', 'rawpy'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
