"""``scl-lle enhance``: tree mirroring, per-file failures, never overwriting inputs, atomic resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import scl_lle.apps.batch
from scl_lle import enhance
from scl_lle.cli import main
from scl_lle.io.files import TEMP_SUFFIX


def _photo(path: Path, size: tuple[int, int] = (24, 16), mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _photo(root / "a.png")
    _photo(root / "b.jpg", seed=1)
    _photo(root / "trip" / "c.png", seed=2)
    _photo(root / "trip" / "deep" / "d.tif", seed=3)
    (root / "notes.txt").write_text("not an image, and not picked up from a folder")
    return root


def test_recursive_output_mirrors_the_tree(photos: Path, tmp_path: Path, weights_file: Path, capsys):
    out = tmp_path / "out"
    code = main(["enhance", str(photos), "-o", str(out), "--weights", str(weights_file), "--recursive", "-q"])
    assert code == 0
    assert _tree(out) == ["a.png", "b.jpg", "trip/c.png", "trip/deep/d.tif"]
    assert "4 enhanced, 0 skipped, 0 failed (of 4)" in capsys.readouterr().err
    flat = tmp_path / "flat"
    assert main(["enhance", str(photos), "-o", str(flat), "-w", str(weights_file), "-q"]) == 0
    assert _tree(flat) == ["a.png", "b.jpg"]


def test_globs_files_and_format(photos: Path, tmp_path: Path, weights_file: Path):
    out = tmp_path / "out"
    args = ["enhance", str(photos / "**" / "*.png"), str(photos / "b.jpg"), "-o", str(out)]
    assert main([*args, "-w", str(weights_file), "-r", "--format", "tiff", "-q"]) == 0
    assert _tree(out) == ["a.tiff", "b.tiff", "trip/c.tiff"]
    with Image.open(out / "a.tiff") as image:
        assert image.format == "TIFF"


def test_bad_files_fail_alone(tmp_path: Path, weights_file: Path, capsys):
    src = tmp_path / "in"
    good = [_photo(src / f"good{i}.png", seed=i) for i in range(3)]
    (src / "empty.png").write_bytes(b"")
    (src / "fake.jpg").write_text("plain text")
    (src / "cut.png").write_bytes(good[0].read_bytes()[:200])
    _photo(src / "huge.png", size=(400, 300))
    out = tmp_path / "out"
    args = ["enhance", str(src), str(tmp_path / "missing.png"), "-o", str(out), "-w", str(weights_file)]
    code = main([*args, "--max-pixels", "100000", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert _tree(out) == ["good0.png", "good1.png", "good2.png"]
    for name, reason in [
        ("empty.png", "empty"),
        ("fake.jpg", "not an image"),
        ("cut.png", "truncated"),
        ("huge.png", "too large"),
        ("missing.png", "no such file"),
    ]:
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)
    assert "3 enhanced, 0 skipped, 5 failed (of 8)" in err


def test_inputs_are_never_overwritten(photos: Path, weights_file: Path, capsys):
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    code = main(["enhance", str(photos), "-o", str(photos), "-w", str(weights_file), "--overwrite", "-q"])
    assert code == 1
    assert "would overwrite an input file" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before


def test_existing_outputs_skip_overwrite_or_fail(photos: Path, tmp_path: Path, weights_file: Path, capsys):
    out = tmp_path / "out"
    base = ["enhance", str(photos / "a.png"), "-o", str(out), "-w", str(weights_file), "-q"]
    assert main(base) == 0
    (out / "a.png").write_bytes(b"old")
    assert main(base) == 1
    assert "exists" in capsys.readouterr().err and (out / "a.png").read_bytes() == b"old"
    assert main([*base, "--skip-existing"]) == 0
    assert (out / "a.png").read_bytes() == b"old"
    assert main([*base, "--overwrite"]) == 0
    assert Image.open(out / "a.png").size == (24, 16)


def test_output_inside_input_is_not_reenhanced(photos: Path, weights_file: Path):
    out = photos / "enhanced"
    assert main(["enhance", str(photos), "-o", str(out), "-w", str(weights_file), "-r", "-q"]) == 0
    assert main(["enhance", str(photos), "-o", str(out), "-w", str(weights_file), "-r", "-q", "--skip-existing"]) == 0
    assert _tree(out) == ["a.png", "b.jpg", "trip/c.png", "trip/deep/d.tif"]


def test_output_inside_a_glob_pattern_is_not_reenhanced(photos: Path, weights_file: Path):
    out = photos / "enhanced"
    args = ["-o", str(out), "-w", str(weights_file), "-r", "-q"]
    assert main(["enhance", str(photos / "*.png"), *args]) == 0
    assert main(["enhance", str(photos / "**" / "*.png"), *args, "--skip-existing"]) == 0
    assert _tree(out) == ["a.png", "trip/c.png"]  # no enhanced/enhanced/a.png, no "would overwrite an input"
    root = photos.parent / "only_outputs"  # "*/*.png" -o out, where out/ holds the only matches
    _photo(root / "out" / "a.png")
    pattern = str(root / "*" / "*.png")
    assert main(["enhance", pattern, "-o", str(root / "out"), "-w", str(weights_file), "-q"]) == 1  # was 0
    result = enhance(pattern, root / "out", weights=weights_file, progress=False)
    assert [reason for _, reason in result.failed] == ["every match is in the output folder"]


def test_one_path_string_is_one_input(photos: Path, tmp_path: Path, weights_file: Path, monkeypatch):
    monkeypatch.chdir(photos)  # a string read as characters took "." (this folder) for an input
    out = tmp_path / "out"
    result = enhance(str(photos / "a.png"), out, weights=weights_file, progress=False)
    assert result.ok and [p.name for p in result.written] == ["a.png"] and _tree(out) == ["a.png"]
    assert enhance(photos / "trip", tmp_path / "out2", weights=weights_file, progress=False).ok
    assert _tree(tmp_path / "out2") == ["c.png"]
    with pytest.raises(TypeError, match="not bytes"):
        enhance(b"a.png", out, weights=weights_file, progress=False)  # type: ignore[arg-type]


def test_interrupted_batch_resumes_exactly_once(tmp_path: Path, weights_file: Path, monkeypatch):
    src = tmp_path / "in"
    for i in range(6):
        _photo(src / f"p{i}.png", seed=i)
    out = tmp_path / "out"
    writes: list[str] = []
    real_write = scl_lle.apps.batch.write_image

    def counting_write(path, picture, **kwargs):
        writes.append(Path(path).name)
        return real_write(path, picture, **kwargs)

    def dying_write(path, picture, **kwargs):
        if len(writes) == 3:  # killed half-way through writing the fourth file
            Path(path).with_name(f".{Path(path).name}.999999-dead{TEMP_SUFFIX}").write_bytes(b"half")
            raise KeyboardInterrupt
        return counting_write(path, picture, **kwargs)

    monkeypatch.setattr(scl_lle.apps.batch, "write_image", dying_write)
    assert main(["enhance", str(src), "-o", str(out), "-w", str(weights_file), "-q"]) == 130
    assert _tree(out) == [".p3.png.999999-dead.scl-tmp", "p0.png", "p1.png", "p2.png"]
    monkeypatch.setattr(scl_lle.apps.batch, "write_image", counting_write)
    result = enhance([src], out, weights=weights_file, skip_existing=True, progress=False)
    assert result.ok and len(result.skipped) == 3 and len(result.written) == 3
    assert sorted(writes) == [f"p{i}.png" for i in range(6)]  # every output written exactly once
    assert _tree(out) == [f"p{i}.png" for i in range(6)]  # stale temporary removed
    for i in range(6):
        Image.open(out / f"p{i}.png").load()


def test_sixteen_bit_alpha_and_grey_through_the_cli(tmp_path: Path, weights_file: Path):
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    bgra16 = rng.integers(0, 20000, (12, 10, 4), dtype=np.uint16)
    cv2.imwrite(str(src / "deep.png"), bgra16)
    Image.fromarray(rng.integers(0, 80, (9, 7), dtype=np.uint8), "L").save(src / "grey.png")
    rgba = Image.fromarray(rng.integers(0, 80, (9, 7, 4), dtype=np.uint8), "RGBA")
    rgba.save(src / "alpha.png")
    out = tmp_path / "out"
    assert main(["enhance", str(src), "-o", str(out), "-w", str(weights_file), "-q"]) == 0
    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (12, 10, 4)
    np.testing.assert_array_equal(deep[..., 3], bgra16[..., 3])
    assert Image.open(out / "grey.png").mode == "L"
    with Image.open(out / "alpha.png") as image:
        assert image.mode == "RGBA"
        assert image.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()


def test_help_and_the_embedded_default_model(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "scl_lle", "enhance", "--help"], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0
    for flag in (
        "--output",
        "--weights",
        "--device",
        "--scale",
        "--recursive",
        "--format",
        "--quality",
        "--skip-existing",
        "--overwrite",
        "--max-pixels",
    ):
        assert flag in run.stdout
    _photo(tmp_path / "a.png")
    run = subprocess.run(
        [sys.executable, "-m", "scl_lle", "enhance", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "a.png") as before, Image.open(tmp_path / "o" / "a.png") as after:
        assert np.asarray(after).mean() > np.asarray(before).mean() + 20


def test_fast_preset_backend_and_threads(tmp_path: Path, weights_file: Path, monkeypatch, capsys):
    from scl_lle.defaults import FAST_SCALE

    seen: list[dict] = []
    real_enhance = scl_lle.apps.batch.enhance

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_enhance(*args, **kwargs)

    monkeypatch.setattr(scl_lle.apps.batch, "enhance", spy)
    src = _photo(tmp_path / "a.png", size=(64, 48))
    base = ["enhance", str(src), "-w", str(weights_file), "-q", "--exposure", "off"]  # random weights: full curves
    assert main([*base, "-o", str(tmp_path / "fast"), "--fast", "--threads", str(torch_threads())]) == 0
    assert seen[-1]["scale"] == FAST_SCALE and seen[-1]["backend"] == "auto" and not seen[-1]["finish"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    assert seen[-1]["scale"] == 1 and seen[-1]["threads"] is None and not seen[-1]["compile"]
    assert seen[-1]["finish"]
    assert main([*base, "-o", str(tmp_path / "curves"), "--no-finish"]) == 0
    assert seen[-1]["scale"] == 1 and not seen[-1]["finish"]
    with Image.open(tmp_path / "plain" / "a.png") as plain, Image.open(tmp_path / "curves" / "a.png") as curves:
        assert not np.array_equal(np.asarray(plain), np.asarray(curves))
    assert main([*base, "-o", str(tmp_path / "auto"), "--scale", "auto"]) == 0
    assert seen[-1]["scale"] == "auto" and seen[-1]["finish"]
    with pytest.raises(SystemExit):
        main([*base, "-o", str(tmp_path / "both"), "--fast", "--scale", "2"])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "-o", str(tmp_path / "word"), "--scale", "fast"])
    assert "--scale" in capsys.readouterr().err
    with Image.open(tmp_path / "fast" / "a.png") as image:
        assert image.size == (64, 48)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_package_exports_resolve_and_the_package_imports_without_torch() -> None:
    import subprocess
    import sys

    import scl_lle

    assert set(scl_lle.__all__) == {*scl_lle._EXPORTS, "__version__"}
    for name in scl_lle.__all__:
        assert getattr(scl_lle, name) is not None
    code = "import sys, scl_lle; assert 'torch' not in sys.modules; print(scl_lle.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_folder_with_images_only_below_says_recursive_and_fails(
    photos: Path, tmp_path: Path, weights_file: Path, capsys
):
    # once: "0 enhanced ... (of 0)" and exit 0, with no hint
    out, nested = tmp_path / "out", tmp_path / "nested"
    _photo(nested / "day1" / "x.png")
    _photo(nested / "day2" / "deeper" / "y.png", seed=1)
    assert main(["enhance", str(nested), "-o", str(out), "-w", str(weights_file), "-q"]) == 1
    err = capsys.readouterr().err
    assert "no images or videos in this folder, but 2 in its sub-folders: add --recursive" in err
    assert main(["enhance", str(nested), "-o", str(out), "-w", str(weights_file), "-q", "-r"]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["enhance", str(empty), "-o", str(out), "-w", str(weights_file), "-q"]) == 1
    assert "no images or videos in this folder" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:7", "mps"])
def test_an_unusable_device_is_one_line_and_exit_2(photos: Path, tmp_path: Path, weights_file: Path, capsys, device):
    from scl_lle.engine.backends import available_devices

    if device in available_devices():
        pytest.skip(f"{device} exists here")
    args = [str(photos / "a.png"), "-o", str(tmp_path / "out"), "-w", str(weights_file), "--device", device]
    assert main(["enhance", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "available here: auto, cpu" in err and "Traceback" not in err
