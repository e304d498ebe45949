"""``scl-lle enhance`` edge cases (issue 19): odd outputs, unreadable or special inputs, odd names, interrupts,
multi-frame images, JPEG limits and images named as videos."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import scl_lle.cli.app
import scl_lle.io.encode
from scl_lle.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _photo(path: Path, size: tuple[int, int] = (16, 12), seed: int = 0, **save: object) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)).save(path, **save)
    return path


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@contextlib.contextmanager
def _no_hang(seconds: int = 30) -> Iterator[None]:
    """Fail instead of blocking forever (reading a FIFO with no writer blocks)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _enhance(*args: str, weights: Path) -> list[str]:
    return ["enhance", *args, "-w", str(weights), "-q"]


# 1. -o naming an existing file


@pytest.mark.parametrize("name", ["out.txt", "out.png", "out.jpg"])
def test_output_that_is_an_existing_file_is_a_usage_error(tmp_path: Path, weights_file: Path, capsys, name: str):
    a, b = _photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", seed=1)
    existing = tmp_path / name
    existing.write_bytes(b"keep me")
    for inputs in ([a], [a, b]):
        status = main(_enhance(*map(str, inputs), "-o", str(existing), weights=weights_file))
        err = capsys.readouterr().err
        assert "appeared while writing" not in err
        if len(inputs) == 1 and existing.suffix != ".txt":  # one file in, that file out (issue 20): still refused
            assert status == 1, err
            assert f"{existing} exists (use --overwrite to replace it or --skip-existing)" in err
            continue
        assert status == 2
        assert err.count("\n") == 1, err
        assert f"-o {existing} is an existing file; give a folder" in err
    assert existing.read_bytes() == b"keep me"


def test_output_below_an_existing_file_is_a_usage_error(tmp_path: Path, weights_file: Path, capsys):
    a = _photo(tmp_path / "a.png")
    (tmp_path / "file").write_bytes(b"keep me")
    assert main(_enhance(str(a), "-o", str(tmp_path / "file" / "sub"), weights=weights_file)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an existing file; give a folder" in err, err


# 2. an input folder that cannot be read


def test_unreadable_input_folder_is_an_error(tmp_path: Path, weights_file: Path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    _photo(locked / "a.png")
    readable = tmp_path / "tree"
    _photo(readable / "top.png")
    _photo(readable / "sub" / "deep.png", seed=1)
    blocked = {str(locked), str(readable / "sub")}
    real_scandir = os.scandir

    def scandir(path=".") -> object:  # what chmod 000 does for anyone but root
        if os.fspath(path) in blocked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    assert main(_enhance(str(locked), "-o", str(out), weights=weights_file)) == 1
    err = capsys.readouterr().err
    assert any(str(locked) in line and "cannot read this folder" in line for line in err.splitlines()), err
    assert "0 enhanced, 0 skipped, 1 failed (of 1)" in err
    assert main(_enhance(str(readable), "-o", str(out), "-r", weights=weights_file)) == 1
    err = capsys.readouterr().err
    assert any(str(readable / "sub") in line and "cannot read this folder" in line for line in err.splitlines())
    assert "1 enhanced, 0 skipped, 1 failed (of 2)" in err and _files(out) == ["top.png"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads folders whatever mode")
def test_chmod_000_input_folder_is_an_error(tmp_path: Path, weights_file: Path, capsys):
    locked = tmp_path / "locked"
    _photo(locked / "a.png")
    locked.chmod(0)
    try:
        assert main(_enhance(str(locked), "-o", str(tmp_path / "out"), weights=weights_file)) == 1
    finally:
        locked.chmod(0o755)
    assert "cannot read this folder" in capsys.readouterr().err


# 3. FIFOs and devices given as input


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_and_device_inputs_are_refused_without_reading(tmp_path: Path, weights_file: Path, capsys):
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    inputs = [str(pipe)] + (["/dev/zero"] if Path("/dev/zero").exists() else [])
    with _no_hang():
        assert main(_enhance(*inputs, "-o", str(tmp_path / "out"), weights=weights_file)) == 1
    err = capsys.readouterr().err
    for name in inputs:
        assert any(name in line and "not a regular file or folder" in line for line in err.splitlines()), err
    assert "no such file" not in err
    folder = tmp_path / "in"  # inside a folder: named as an image or as a video, still never opened
    _photo(folder / "good.png")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "pipe.mp4")
    with _no_hang():
        assert main(_enhance(str(folder), "-o", str(tmp_path / "out2"), weights=weights_file)) == 1
    err = capsys.readouterr().err
    for name in ("pipe.png", "pipe.mp4"):
        assert any(name in line and "not a regular file" in line for line in err.splitlines()), err
    assert _files(tmp_path / "out2") == ["good.png"]


# 4. --max-pixels


def test_negative_max_pixels_is_a_usage_error(tmp_path: Path, weights_file: Path, capsys, monkeypatch):
    a = _photo(tmp_path / "a.png")
    with pytest.raises(SystemExit) as stop:
        main(_enhance(str(a), "-o", str(tmp_path / "out"), "--max-pixels", "-1", weights=weights_file))
    assert stop.value.code == 2 and "--max-pixels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(_enhance(str(a), "-o", str(tmp_path / "out"), "--max-pixels", "0", weights=weights_file)) == 0


# 5. names with line breaks


def test_names_with_line_breaks_stay_on_one_line(tmp_path: Path, weights_file: Path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad\nname.png").write_text("not an image")
    _photo(src / "taken\rname.png")
    out = tmp_path / "out\nput"
    (out / "taken\rname.png").parent.mkdir()
    (out / "taken\rname.png").write_bytes(b"old")
    assert main(_enhance(str(src), "-o", str(out), weights=weights_file)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines  # two errors and the summary
    assert any(repr(str(src / "bad\nname.png")) in line and "not an image" in line for line in lines), lines
    assert any(repr(str(out / "taken\rname.png")) in line and "exists" in line for line in lines), lines
    assert "0 enhanced, 0 skipped, 2 failed (of 2)" in lines[-1] and repr(str(out)) in lines[-1]


def test_show_path_quotes_only_when_needed():
    from scl_lle.io.errors import show_path

    assert show_path(Path("photos/été 1.jpg")) == "photos/été 1.jpg"
    assert show_path("a\nb.png") == "'a\\nb.png'"
    assert show_path(os.fsdecode(b"bad\xffbyte.png")) == "'bad\\udcffbyte.png'"


# 6. interrupts at any moment


def test_interrupt_while_setting_up_exits_130(monkeypatch, capsys):
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(scl_lle.cli.app, "build_parser", interrupted)
    assert main(["enhance", "x.png", "-o", "out"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_sigint_in_the_first_second_exits_130(tmp_path: Path, weights_file: Path, delay: float):
    a = _photo(tmp_path / "a.png")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "scl_lle", *_enhance(str(a), "-o", str(tmp_path / "out"), weights=weights_file)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


# 7. multi-frame files


def _frames(path: Path, count: int = 3, **save: object) -> Path:
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 60, (12, 16, 3), dtype=np.uint8)) for _ in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], **save)
    return path


def test_multi_frame_images_warn_that_one_frame_is_enhanced(tmp_path: Path, weights_file: Path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    _frames(src / "anim.gif")
    _frames(src / "pages.tiff")
    _frames(src / "apng.png")
    _photo(src / "plain.png")
    out = tmp_path / "out"
    assert main(_enhance(str(src / "*"), "-o", str(out), weights=weights_file)) == 0
    lines = capsys.readouterr().err.splitlines()
    for name in ("anim.gif", "pages.tiff", "apng.png"):
        assert any(name in line and "only the first of 3 frames" in line for line in lines), lines
    assert not any("plain.png" in line for line in lines)
    assert _files(out) == ["anim.png", "apng.png", "pages.tiff", "plain.png"]


# 8. and 9. JPEG limits


def test_oversized_exif_is_dropped_for_jpeg(tmp_path: Path, weights_file: Path, capsys):
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    exif[0x010E] = "x" * 70_000  # ImageDescription: over JPEG's 64 KB marker
    src = _photo(tmp_path / "in" / "big_exif.png", exif=exif.tobytes())
    out = tmp_path / "out"
    assert main(_enhance(str(src), "-o", str(out), "--format", "jpg", weights=weights_file)) == 0
    err = capsys.readouterr().err
    assert any("big_exif.png" in line and "EXIF" in line and "warning" in line for line in err.splitlines()), err
    with Image.open(out / "big_exif.jpg") as image:
        assert image.format == "JPEG" and image.size == (16, 12)


def test_too_wide_for_jpeg_fails_alone(tmp_path: Path, weights_file: Path, capsys, monkeypatch):
    monkeypatch.setattr(scl_lle.io.encode, "_MAX_SIDE", {"JPEG": 20}, raising=False)  # stands in for 65,500 px
    src = tmp_path / "in"
    _photo(src / "wide.png", size=(24, 12))
    _photo(src / "small.png", size=(16, 12))
    out = tmp_path / "out"
    assert main(_enhance(str(src), "-o", str(out), "--format", "jpg", weights=weights_file)) == 1
    err = capsys.readouterr().err
    assert any("wide.png" in line and "JPEG cannot hold 24x12" in line for line in err.splitlines()), err
    assert _files(out) == ["small.jpg"]


# 10. images named as videos


@pytest.mark.parametrize("ending", [".mp4", ".webm", ".mov", ".mkv"])
def test_image_named_as_a_video_is_refused(tmp_path: Path, weights_file: Path, capsys, ending: str):
    src = tmp_path / f"clip{ending}"
    _photo(tmp_path / "clip.png").rename(src)
    out = tmp_path / "out"
    assert main(_enhance(str(src), "-o", str(out), weights=weights_file)) == 1
    err = capsys.readouterr().err
    assert f"clip{ending}: named {ending} but holds a PNG image; rename it" in err, err
    assert _files(out) == []
