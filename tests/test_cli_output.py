"""What the command line prints at each verbosity (issue 20): the library reports through ``logging`` and
``warnings``; ``scl-lle`` prints them one line each, ``-q``/``-qq`` take output away, ``-v`` adds details."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scl_lle.apps.batch import enhance
from scl_lle.cli import build_parser, main
from scl_lle.cli.console import console


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A folder with two photos, an animated PNG (written with a loss: one frame) and a broken file."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 60, (12, 16, 3), dtype=np.uint8)).save(folder / name)
    frames = [Image.new("RGB", (16, 12), (10 * i, 20, 30)) for i in range(2)]
    frames[0].save(folder / "c.png", save_all=True, append_images=frames[1:])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def _run(mixed: Path, tmp_path: Path, weights: Path, *flags: str) -> int:
    return main(["enhance", str(mixed), "-o", str(tmp_path / "out"), "-w", str(weights), "--overwrite", *flags])


def test_default_shows_progress_notes_and_one_line_per_problem(mixed, tmp_path, weights_file, capsys):
    assert _run(mixed, tmp_path, weights_file) == 1
    err = capsys.readouterr().err
    assert "img/s" in err or "s/img" in err  # the progress bar
    assert "error: " in err and "broken.jpg: " in err
    assert "warning: " in err and "only the first of 2 frames is used" in err
    assert "3 enhanced, 0 skipped, 1 failed (of 4)" in err
    assert "debug:" not in err


def test_quiet_drops_the_bar_then_everything_but_errors(mixed, tmp_path, weights_file, capsys):
    assert _run(mixed, tmp_path, weights_file, "-q") == 1
    lines = capsys.readouterr().err.splitlines()
    assert not any("img/s" in line or "s/img" in line for line in lines), lines
    assert [line.split(":")[0] for line in lines] == ["error", "warning", "scl-lle"], lines
    assert _run(mixed, tmp_path, weights_file, "-qq") == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.jpg" in lines[0], lines


def test_verbose_tells_the_engine_and_each_file(mixed, tmp_path, weights_file, capsys):
    assert _run(mixed, tmp_path, weights_file, "-v", "--backend", "torch", "--threads", "1") == 1
    debug = [line for line in capsys.readouterr().err.splitlines() if line.startswith("debug: ")]
    assert "4 file(s) to enhance with Enhancer(" in debug[0] and "backend=torch, device=cpu" in debug[0], debug
    written = sorted(line.split(" -> ")[1].split(" (")[0] for line in debug[1:])
    assert written == [str(tmp_path / "out" / n) for n in ("a.png", "b.png", "c.png")], debug


def test_python_warnings_become_one_line_and_quiet_levels_hide_them(capsys):
    with console(0):
        warnings.warn("first line\nsecond line", UserWarning, stacklevel=1)
        logging.getLogger("scl_lle.somewhere").info("a note")
        logging.getLogger("scl_lle.somewhere").debug("a detail")
    assert capsys.readouterr().err == "warning: first line\\nsecond line\nscl-lle: a note\n"  # one line, break escaped
    with console(-2):
        warnings.warn("hidden", UserWarning, stacklevel=1)
        logging.getLogger("scl_lle.somewhere").error("shown")
    assert capsys.readouterr().err == "error: shown\n"
    # outside a command the library's loggers are left as they were
    assert not logging.getLogger("scl_lle").handlers and logging.getLogger("scl_lle").propagate


def test_library_reports_through_logging_without_the_cli(mixed, tmp_path, weights_file, caplog):
    with caplog.at_level(logging.DEBUG, logger="scl_lle"):
        result = enhance([mixed], tmp_path / "lib", weights=weights_file, progress=False)
    assert len(result.written) == 3 and len(result.failed) == 1
    levels = {r.levelname for r in caplog.records if r.name == "scl_lle.apps.batch"}
    assert levels == {"DEBUG", "WARNING", "ERROR"}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "broken.jpg: " in errors[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["enhance", "x.png", "-o", "out/"],
        ["serve"],
        ["export", "--onnx", "x.onnx"],
        ["train", "--config", "c.yaml"],
        ["evaluate", "--methods", "identity", "--datasets", "lol15", "-o", "e/"],
        ["assets", "list"],
        ["assets", "fetch", "vgg16"],
    ],
)
def test_every_command_takes_quiet_and_verbose(argv: list[str]):
    parser = build_parser()
    assert parser.parse_args([*argv, "-qq"]).quiet == 2
    assert parser.parse_args([*argv, "-v"]).verbose == 1


@pytest.mark.parametrize(("command", "hint"), [("enhance", "--skip-existing"), ("train", "--resume")])
def test_an_interruption_says_how_to_carry_on(command: str, hint: str, monkeypatch, capsys):
    import scl_lle.apps.batch
    import scl_lle.train.trainer

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(scl_lle.apps.batch, "enhance", interrupted)
    monkeypatch.setattr(scl_lle.train.trainer, "train", interrupted)
    argv = ["enhance", "x.png", "-o", "out/"] if command == "enhance" else ["train", "--config", "c.yaml"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("scl-lle: interrupted;") and hint in err and err.count("\n") == 1, err
