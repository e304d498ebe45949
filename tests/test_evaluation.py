"""Tests for scl_lle.evaluation: method registry, data set registry, mIoU, and evaluate() end to end."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_lle.cli.evaluate import add_parser as add_evaluate_parser
from scl_lle.engine.enhancer import Enhancer
from scl_lle.evaluation import baselines
from scl_lle.evaluation.datasets import (
    RegistryError,
    UnknownNameError,
    dataset_images,
    list_datasets,
    load_image,
    load_registry,
)
from scl_lle.evaluation.methods import get_method, list_methods
from scl_lle.evaluation.runner import evaluate
from scl_lle.evaluation.segmentation import confusion_matrix, iou_from_confusion


def _save(path: Path, h: int, w: int, seed: int, scale: float = 0.25) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 7.0)], axis=-1)
    img = np.clip((base * 0.8 + 0.2 * rng.random((h, w, 3))) * scale, 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)


@pytest.fixture
def tiny_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with a no-reference set (3 images) and a paired set (2 pairs, one with a size mismatch)."""
    data = tmp_path / "data"
    for i in range(3):
        _save(data / "dark" / f"im{i}.png", 128, 200, seed=i)
    _save(data / "pairs" / "low" / "a.png", 100, 130, seed=10)
    _save(data / "pairs" / "high" / "a.png", 100, 130, seed=10, scale=0.9)
    _save(data / "pairs" / "low" / "b.png", 102, 131, seed=11)
    _save(data / "pairs" / "high" / "b.png", 100, 133, seed=11, scale=0.9)
    (data / "pairs" / "pairs.txt").write_text("low/a.png high/a.png\nlow/b.png high/b.png\n")
    monkeypatch.setenv("TINY_DATA", str(data))
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "datasets:\n"
        "  dark:\n    kind: noref\n    images: ${TINY_DATA}/dark\n    description: three dark images\n"
        "  pairs:\n    kind: paired\n    root: ${TINY_DATA}/pairs\n    pairs: ${TINY_DATA}/pairs/pairs.txt\n"
        "methods: {}\n"
    )
    return registry


# ------------------------------------------------------------------------------------------------ registry


def test_list_methods_has_baselines() -> None:
    names = list_methods()
    for n in ("identity", "gamma", "clahe", "histeq", "lime"):
        assert n in names


def test_unknown_method_lists_known(tiny_registry: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        get_method("no-such-method", "cpu", tiny_registry)
    message = str(info.value)
    assert "no-such-method" in message
    for n in ("identity", "gamma", "clahe", "histeq", "lime", "dcenet:PATH"):
        assert n in message


def test_method_specs(weights_file: Path) -> None:
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0)) * 0.3
    assert torch.equal(get_method("identity")(x), x)
    assert torch.allclose(get_method("gamma:2.2")(x), x ** (1 / 2.2))
    assert torch.allclose(get_method("clahe:3")(x), baselines.clahe(x, clip_limit=3.0))
    with pytest.raises(UnknownNameError):
        get_method("gamma:bright")
    net = get_method(f"dcenet:{weights_file}")
    y = net(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert torch.allclose(get_method(str(weights_file))(x), y)
    # DCE-Net specs run the curves alone unless prefixed with finished:
    curves_only = Enhancer(str(weights_file), device="cpu", finish=False, backend="torch", exposure="off")(x)
    assert torch.allclose(y, curves_only)
    finished = get_method(f"finished:dcenet:{weights_file}")(x)
    assert torch.allclose(finished, Enhancer(str(weights_file), device="cpu", backend="torch", exposure="off")(x))
    assert not torch.allclose(finished, y)
    # the packaged model: scl-lle is finished as scl-lle enhance does, scl-lle-curves is not
    assert torch.allclose(get_method("scl-lle")(x), Enhancer(device="cpu", backend="torch")(x))
    assert torch.allclose(get_method("scl-lle-curves")(x), Enhancer(device="cpu", finish=False, backend="torch")(x))


def test_registry_methods_and_errors(tmp_path: Path, weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = tmp_path / "r.yaml"
    registry.write_text(
        "datasets:\n  x:\n    kind: noref\n    images: ${UNSET_FOR_TEST}/images\n"
        f"methods:\n  mine:\n    weights: {weights_file}\n  gone:\n    weights: ${{UNSET_FOR_TEST}}/w.pth\n"
    )
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)
    assert "mine" in list_methods(registry)
    assert get_method("mine", "cpu", registry)(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    with pytest.raises(RegistryError, match="UNSET_FOR_TEST"):
        get_method("gone", "cpu", registry)
    with pytest.raises(RegistryError, match="UNSET_FOR_TEST"):
        evaluate(["identity"], ["x"], tmp_path / "out", device="cpu", registry=registry, progress=False)
    with pytest.raises(UnknownNameError, match="known: x"):
        evaluate(["identity"], ["y"], tmp_path / "out", device="cpu", registry=registry, progress=False)
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "missing.yaml")


def test_dataset_images_yields_the_inputs(tiny_registry: Path) -> None:
    dark = list(dataset_images("dark", tiny_registry))
    assert [name for name, _ in dark] == ["im0.png", "im1.png", "im2.png"]
    expected = load_image(tiny_registry.parent / "data" / "dark" / "im1.png")
    torch.testing.assert_close(dark[1][1], expected)
    pairs = list(dataset_images("pairs", tiny_registry, max_images=1))
    assert len(pairs) == 1 and pairs[0][1].shape == (1, 3, 100, 130)  # the low-light input of the pair
    with pytest.raises(UnknownNameError, match="known: dark, pairs"):
        next(dataset_images("nope", tiny_registry))


def test_default_registry_names() -> None:
    assert set(list_datasets()) >= {"lime", "dicm", "lol15", "npe", "fivek", "camvid-dark", "camvid-dusk"}
    assert {"scl-lle-release", "zero-dce"} <= set(load_registry()["methods"])


# ------------------------------------------------------------------------------------------------ mIoU


def test_iou_from_hand_made_confusion() -> None:
    # classes 0, 1, 2 and void = 3 (rows: truth, columns: prediction)
    confusion = torch.tensor(
        [
            [8, 2, 0, 0],  # class 0: 2 pixels called 1
            [1, 5, 0, 4],  # class 1: 1 called 0, 4 called void (still misses)
            [0, 0, 0, 0],  # class 2: absent from truth and prediction -> NaN, not in the mean
            [0, 0, 0, 0],  # void row: ignored pixels
        ]
    )
    miou, ious = iou_from_confusion(confusion, ignore_index=3)
    assert len(ious) == 3
    assert ious[0] == pytest.approx(8 / (8 + 1 + 2))
    assert ious[1] == pytest.approx(5 / (5 + 2 + 5))
    assert math.isnan(ious[2])
    assert miou == pytest.approx((8 / 11 + 5 / 12) / 2)


def test_confusion_matrix_ignores_void() -> None:
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    cm = confusion_matrix(pred, target, num_classes=3, ignore_index=2)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]
    full = confusion_matrix(pred, target, num_classes=3)
    assert int(full.sum()) == 6 and int(full.diagonal().sum()) == 3
    miou, _ = iou_from_confusion(confusion_matrix(target, target, 3, ignore_index=2), ignore_index=2)
    assert miou == 1.0


# ------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_end_to_end(tiny_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def flaky(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:  # the warm-up call is the first; then the first two images pass, the third fails
            raise RuntimeError("boom on purpose")
        return x.clamp(0, 1) ** 0.5

    monkeypatch.setitem(baselines.BASELINES, "flaky", flaky)
    out = tmp_path / "report"
    methods = ["identity", "gamma", "clahe", "flaky"]
    results = evaluate(methods, ["dark", "pairs"], out, device="cpu", registry=tiny_registry, progress=False)

    for name in ("report.md", "results.json", "dark.csv", "pairs.csv", "grid_dark.png", "grid_pairs.png"):
        assert (out / name).is_file(), name
    try:
        import matplotlib  # noqa: F401

        assert (out / "metrics.png").is_file()
    except ImportError:
        pass
    with Image.open(out / "grid_dark.png") as grid:
        assert grid.width > 3 * 200 and grid.height > 3 * 150

    saved = json.loads((out / "results.json").read_text())
    dark = saved["datasets"]["dark"]["subsets"]["dark"]
    assert dark["images"] == 3
    assert dark["methods"]["gamma"]["brightness"] > dark["methods"]["identity"]["brightness"]
    assert dark["methods"]["identity"]["loe"] == 0
    assert dark["methods"]["flaky"]["failed"] == 1
    pairs = saved["datasets"]["pairs"]["subsets"]["pairs"]["methods"]
    assert pairs["identity"]["psnr"] > 5 and 0 < pairs["identity"]["ssim"] <= 1
    assert saved["methods"]["gamma"]["seconds_per_megapixel"] > 0
    assert saved["methods"]["flaky"]["failures"] == 1
    assert any("boom on purpose" in f["error"] for f in saved["failures"])
    assert results["datasets"]["dark"]["subsets"]["dark"]["images"] == 3

    with (out / "dark.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(methods)
    assert {r["method"] for r in rows} == set(methods)
    assert sum(1 for r in rows if "boom" in (r["error"] or "")) == 1

    report = (out / "report.md").read_text()
    for text in ("## dark", "## pairs", "NIQE↓", "PSNR↑", "s / megapixel", "boom on purpose", "grid_dark.png"):
        assert text in report
    assert "date:" in report and "torch" in report

    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0] == "| data set | metric | identity | gamma | clahe | flaky |"
    niqe_row = next(line for line in summary if line.startswith("| dark | NIQE"))
    bright = next(line for line in summary if line.startswith("| dark | brightness")).split("|")[3:7]
    assert float(bright[1]) == pytest.approx(dark["methods"]["gamma"]["brightness"], abs=1e-3)
    assert float(bright[0]) < float(bright[1]) and len(niqe_row.split("|")) == 8
    assert any(line.startswith("| pairs | PSNR") for line in summary)


def test_evaluate_max_images(tiny_registry: Path, tmp_path: Path) -> None:
    results = evaluate(
        ["identity"], ["dark"], tmp_path / "o", device="cpu", registry=tiny_registry, max_images=1, progress=False
    )
    assert results["datasets"]["dark"]["subsets"]["dark"]["images"] == 1


def test_cli_registration(tiny_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="scl-lle")
    commands = parser.add_subparsers()
    add_evaluate_parser(commands)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["evaluate", "--help"])
    assert info.value.code == 0
    assert "--max-images" in capsys.readouterr().out
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            *("evaluate", "--methods", "identity,histeq", "--datasets", "dark", "--output", str(out)),
            *("--registry", str(tiny_registry), "--device", "cpu", "--quiet"),
        ]
    )
    assert args.methods == ["identity", "histeq"]
    assert args.run(args) == 0
    assert (out / "report.md").is_file()
    bad = parser.parse_args(["evaluate", "--methods", "nope", "--datasets", "dark", "-o", str(out)])
    bad.registry = str(tiny_registry)
    assert bad.run(bad) == 2


# ------------------------------------------------------------------------------------------- real shared data


def test_evaluate_lol15_shared(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCL_LLE_SHARED", str(shared))
    out = tmp_path / "lol"
    results = evaluate(["identity", "gamma"], ["lol15"], out, device="cpu", max_images=2, progress=False)
    r = results["datasets"]["lol15"]["subsets"]["lol15"]
    assert r["images"] == 2
    ident, gamma = r["methods"]["identity"], r["methods"]["gamma"]
    assert ident["brightness"] < 0.15 < gamma["brightness"]  # LOL inputs are very dark
    if "niqe" in ident:
        assert 2 < ident["niqe"] < 20 and math.isfinite(gamma["niqe"])
    assert not results["failures"]
    assert (out / "grid_lol15.png").is_file()


def test_segmentation_shared(shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCL_LLE_SHARED", str(shared))
    results = evaluate(["identity"], ["camvid-dusk"], tmp_path / "seg", device="cpu", max_images=2, progress=False)
    r = results["datasets"]["camvid-dusk"]["subsets"]["camvid-dusk"]
    assert len(r["classes"]) == 11 and r["classes"][0] == "sky"
    assert 0.4 < r["methods"]["identity"]["miou"] <= 1


def test_methods_can_be_labelled(tiny_registry: Path, tmp_path: Path) -> None:
    results = evaluate(
        ["raw=identity", "bright=gamma:2.2"],
        ["dark"],
        tmp_path / "o",
        device="cpu",
        registry=tiny_registry,
        max_images=1,
        progress=False,
    )
    methods = results["datasets"]["dark"]["subsets"]["dark"]["methods"]
    assert set(methods) == {"raw", "bright"} and methods["bright"]["brightness"] > methods["raw"]["brightness"]
    assert "2.2" in results["methods"]["bright"]["description"]
    assert (tmp_path / "o" / "summary.md").read_text().startswith("| data set | metric | raw | bright |")
