"""``scl-lle enhance`` with one file in and one file out (issue 20): ``-o out.jpg``, ``-o -`` and ``-``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scl_lle.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _photo(path: Path, size: tuple[int, int] = (16, 12), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _enhance(*args: str, weights: Path) -> list[str]:
    return ["enhance", *args, "-w", str(weights), "-q"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _run(args: list[str], weights: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "scl_lle", *_enhance(*args, weights=weights)]
    return subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=300, check=False)


def test_one_file_in_gives_exactly_that_file(tmp_path: Path, weights_file: Path, capsys):
    source = _photo(tmp_path / "in" / "night.png")
    out = tmp_path / "out" / "bright.jpg"
    assert main(_enhance(str(source), "-o", str(out), weights=weights_file)) == 0
    assert _files(tmp_path / "out") == ["bright.jpg"]
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (16, 12)
    assert f"output {out}" in capsys.readouterr().err


def test_existing_output_file_is_refused_unless_overwrite(tmp_path: Path, weights_file: Path, capsys):
    source = _photo(tmp_path / "a.png")
    out = tmp_path / "b.png"
    out.write_bytes(b"keep me")
    assert main(_enhance(str(source), "-o", str(out), weights=weights_file)) == 1
    assert f"{out} exists (use --overwrite to replace it or --skip-existing)" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(_enhance(str(source), "-o", str(out), "--skip-existing", weights=weights_file)) == 0
    assert out.read_bytes() == b"keep me"
    assert main(_enhance(str(source), "-o", str(out), "--overwrite", weights=weights_file)) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (16, 12)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_equal_to_the_input_is_a_usage_error(tmp_path: Path, weights_file: Path, capsys, overwrite: bool):
    source = _photo(tmp_path / "a.png")
    before = source.read_bytes()
    extra = ["--overwrite"] if overwrite else []
    for output in (source, tmp_path / "." / "a.png"):
        assert main(_enhance(str(source), "-o", str(output), *extra, weights=weights_file)) == 2
        assert "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_several_inputs_with_a_file_output_is_a_usage_error(tmp_path: Path, weights_file: Path, capsys):
    a, b = _photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", seed=1)
    out = tmp_path / "x.jpg"
    out.write_bytes(b"keep me")
    assert main(_enhance(str(a), str(b), "-o", str(out), weights=weights_file)) == 2
    assert f"-o {out} is an existing file; give a folder" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_format_that_disagrees_with_the_ending_is_a_usage_error(tmp_path: Path, weights_file: Path, capsys):
    source = _photo(tmp_path / "a.png")
    out = tmp_path / "out.jpg"
    assert main(_enhance(str(source), "--format", "png", "-o", str(out), weights=weights_file)) == 2
    assert "--format png disagrees with -o" in capsys.readouterr().err
    assert not out.exists()
    assert main(_enhance(str(source), "--format", "jpg", "-o", str(tmp_path / "ok.jpeg"), weights=weights_file)) == 0


def test_folder_output_is_unchanged(tmp_path: Path, weights_file: Path):
    source = _photo(tmp_path / "a.png")
    assert main(_enhance(str(source), "-o", str(tmp_path / "out.jpg") + "/", weights=weights_file)) == 0
    assert _files(tmp_path / "out.jpg") == ["a.png"]
    assert main(_enhance(str(source), "-o", str(tmp_path / "plain"), weights=weights_file)) == 0
    assert _files(tmp_path / "plain") == ["a.png"]


def test_an_output_named_like_a_file_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, weights_file: Path, capsys
):
    # It became a folder of that name (out.gif/a.png) before.
    source = _photo(tmp_path / "a.png")
    assert main(_enhance(str(source), "-o", str(tmp_path / "out.gif"), weights=weights_file)) == 2
    assert "an image cannot be written as .gif" in capsys.readouterr().err
    assert _files(tmp_path) == ["a.png"]
    assert main(_enhance(str(source), "-o", str(tmp_path / "out.gif") + "/", weights=weights_file)) == 0
    assert _files(tmp_path / "out.gif") == ["a.png"]  # a folder, when the name ends with /


def test_stdout_closed_early_or_full_is_no_traceback(tmp_path: Path, weights_file: Path):
    source = _photo(tmp_path / "a.png", size=(400, 300))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "scl_lle", *_enhance(str(source), "-o", "-", weights=weights_file)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as reader:
        assert reader.stdout is not None and reader.stderr is not None
        assert reader.stdout.read(10).startswith(b"\x89PNG")
        reader.stdout.close()  # as `| head -c 10` does
        errors = reader.stderr.read()
    assert reader.returncode == 1 and b"Traceback" not in errors and b"Exception ignored" not in errors
    if not Path("/dev/full").exists():
        return
    with open("/dev/full", "wb") as full:
        done = subprocess.run(command, stdout=full, capture_output=False, stderr=subprocess.PIPE, env=env, timeout=300)
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert b"error: cannot write to stdout (No space left on device)" in done.stderr


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors in /proc")
def test_a_closed_stdout_leaks_no_descriptor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from scl_lle.cli.pipes import copy_to_stdout

    class ClosedPipe(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[override]
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(ClosedPipe()))
    source = _photo(tmp_path / "a.png")
    before = len(os.listdir("/proc/self/fd"))
    assert [copy_to_stdout(source) for _ in range(20)] == [1] * 20
    assert len(os.listdir("/proc/self/fd")) == before


def test_stdout_gets_the_same_bytes_as_a_file(tmp_path: Path, weights_file: Path, capsysbinary):
    source = _photo(tmp_path / "a.png")
    out = tmp_path / "out.png"
    assert main(_enhance(str(source), "-o", str(out), weights=weights_file)) == 0
    capsysbinary.readouterr()
    assert main(_enhance(str(source), "-o", "-", weights=weights_file)) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == out.read_bytes()
    assert b"output to stdout" in captured.err
    assert main(_enhance(str(source), "-o", "-", "--format", "jpg", weights=weights_file)) == 0
    with Image.open(io.BytesIO(capsysbinary.readouterr().out)) as image:
        assert image.format == "JPEG" and image.size == (16, 12)


def test_stdout_takes_one_input_file(tmp_path: Path, weights_file: Path, capsysbinary):
    a, b = _photo(tmp_path / "a.png"), _photo(tmp_path / "b.png", seed=1)
    assert main(_enhance(str(a), str(b), "-o", "-", weights=weights_file)) == 2
    assert main(_enhance(str(tmp_path), "-o", "-", weights=weights_file)) == 2
    captured = capsysbinary.readouterr()
    assert captured.out == b"" and b"-o - (stdout) takes exactly one input file" in captured.err


def test_stdin_to_a_file_and_to_a_folder(tmp_path: Path, weights_file: Path, monkeypatch):
    source = _photo(tmp_path / "a.png")
    reference = tmp_path / "reference.png"
    assert main(_enhance(str(source), "-o", str(reference), weights=weights_file)) == 0
    for output, written in ((tmp_path / "from_stdin.png", tmp_path / "from_stdin.png"), (tmp_path / "dir", None)):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(source.read_bytes())))
        assert main(_enhance("-", "-o", str(output), weights=weights_file)) == 0
        assert (written or output / "stdin.png").read_bytes() == reference.read_bytes()


def test_stdin_is_the_only_input(tmp_path: Path, weights_file: Path, capsys):
    source = _photo(tmp_path / "a.png")
    assert main(_enhance("-", str(source), "-o", str(tmp_path / "out"), weights=weights_file)) == 2
    assert "'-' (stdin) must be the only input" in capsys.readouterr().err


def test_a_bad_image_on_stdin_is_named_stdin(tmp_path: Path, weights_file: Path):
    done = _run(["-", "-o", str(tmp_path / "out.png")], weights_file, stdin=b"not an image")
    assert done.returncode == 1
    assert b"error: stdin: not an image" in done.stderr and b"scl-lle-" not in done.stderr  # not its temporary file


def test_pipe_from_stdin_to_stdout(tmp_path: Path, weights_file: Path):
    source = _photo(tmp_path / "a.png")
    reference = tmp_path / "reference.png"
    assert main(_enhance(str(source), "-o", str(reference), weights=weights_file)) == 0
    done = _run(["-", "-o", "-"], weights_file, stdin=source.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == reference.read_bytes()
    assert b"output to stdout" in done.stderr
    empty = _run(["-", "-o", "-"], weights_file)
    assert empty.returncode == 2 and empty.stdout == b"" and b"stdin is empty" in empty.stderr


@pytest.mark.parametrize("format", ["webp", "avif"])
def test_format_webp_and_avif_are_written(tmp_path: Path, weights_file: Path, format: str):
    from scl_lle.io.picture import HAS_AVIF

    if format == "avif" and not HAS_AVIF:
        pytest.skip("this Pillow has no AVIF codec")
    source = _photo(tmp_path / "in" / "night.png")
    assert (
        main(_enhance(str(source.parent), "--format", format, "-o", str(tmp_path / "out"), weights=weights_file)) == 0
    )
    assert _files(tmp_path / "out") == [f"night.{format}"]
    with Image.open(tmp_path / "out" / f"night.{format}") as image:
        assert image.format == format.upper() and image.size == (16, 12)
    # one file out: the ending decides, and --format must agree with it
    assert main(_enhance(str(source), "-o", str(tmp_path / f"one.{format}"), weights=weights_file)) == 0
    with Image.open(tmp_path / f"one.{format}") as image:
        assert image.format == format.upper()
    assert main(_enhance(str(source), "--format", format, "-o", str(tmp_path / "x.png"), weights=weights_file)) == 2
