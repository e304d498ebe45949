"""ONNX export and the onnxruntime backend: graph shape, dynamic axes, agreement with PyTorch within 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_lle import Enhancer
from scl_lle.cli import main

onnx = pytest.importorskip("onnx", reason="the ONNX features need 'pip install onnx onnxruntime'")
ort = pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs 'pip install onnxruntime'")

from scl_lle.apps.export import export_onnx  # noqa: E402
from scl_lle.models.onnx import build_onnx  # noqa: E402

TOLERANCE = 1e-4


def _dark(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 0.35


def test_network_export_has_dynamic_axes_and_matches_curve_maps(weights_file: Path, tmp_path: Path):
    path = export_onnx(weights_file, tmp_path / "net.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["scl_lle.outputs"] == "curve_maps" and props["scl_lle.iterations"] == "8"
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = Enhancer(weights_file, exposure="off", device="cpu", channels_last=False, backend="torch").model
    for shape in [(1, 3, 17, 9), (3, 3, 40, 33)]:  # batch, height and width all vary
        x = _dark(shape)
        (maps,) = session.run(None, {"image": x.numpy()})
        with torch.inference_mode():
            expected = model.curve_maps(x)
        assert maps.shape == (shape[0], 24, *shape[2:])
        assert np.abs(maps - expected.numpy()).max() < TOLERANCE


@pytest.mark.parametrize("opset", [11, 17])
def test_export_with_curves_equals_the_enhancer_without_finishing(weights_file: Path, opset: int):
    proto = build_onnx(weights_file, opset=opset, with_curves=True)
    assert proto.opset_import[0].version == opset
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _dark((2, 3, 23, 31), seed=1)
    (out,) = session.run(None, {"image": x.numpy()})
    expected = Enhancer(weights_file, exposure="off", device="cpu", tile=None, finish=False, backend="torch")(x)
    assert np.abs(out - expected.numpy()).max() < TOLERANCE
    with pytest.raises(ValueError, match="opset"):
        build_onnx(weights_file, opset=7)


@pytest.mark.parametrize(("scale", "tile"), [(1, None), (1, 32), (3, None), (3, 32)])
def test_onnxruntime_backend_matches_torch_on_synthetic_images(weights_file: Path, scale: int, tile: int | None):
    x = _dark((2, 3, 101, 87), seed=2)
    torch_out = Enhancer(weights_file, exposure="off", device="cpu", scale=scale, tile=tile, backend="torch")(x)
    ort_out = Enhancer(weights_file, exposure="off", device="cpu", scale=scale, tile=tile, backend="onnxruntime")(x)
    assert ort_out.shape == x.shape and ort_out.dtype == x.dtype
    assert (torch_out - ort_out).abs().max().item() < TOLERANCE
    assert not torch.equal(ort_out, x)


def test_onnxruntime_backend_matches_torch_on_real_photos(official_weights: Path, shared: Path):
    for name, scale in [("01.jpg", 1), ("05.jpg", 4)]:
        image = Image.open(shared / "data" / "eval_noref_DICM" / "images" / name).convert("RGB")
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        settings = {"device": "cpu", "tile": 256, "scale": scale}
        torch_out = Enhancer(official_weights, exposure="off", backend="torch", **settings)(x)
        ort_out = Enhancer(official_weights, exposure="off", backend="onnxruntime", **settings)(x)
        assert (torch_out - ort_out).abs().max().item() < TOLERANCE, name
        assert ort_out.mean() > x.mean() + 0.05  # the released model brightens these dark photos


def test_onnx_file_as_weights_and_refusals(weights_file: Path, tmp_path: Path):
    net = export_onnx(weights_file, tmp_path / "net.onnx")
    x = _dark((1, 3, 30, 20), seed=3)
    expected = Enhancer(weights_file, exposure="off", device="cpu", backend="torch")(x)
    assert (Enhancer(net, exposure="off", device="cpu", backend="onnxruntime")(x) - expected).abs().max() < TOLERANCE
    whole = export_onnx(weights_file, tmp_path / "whole.onnx", with_curves=True)
    with pytest.raises(ValueError, match="network alone"):
        Enhancer(whole, exposure="off", device="cpu", backend="onnxruntime")
    with pytest.raises(ValueError, match="float32"):
        Enhancer(weights_file, exposure="off", device="cpu", backend="onnxruntime", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="backend"):
        Enhancer(weights_file, exposure="off", device="cpu", backend="tensorrt")


def test_cli_export_and_enhance_with_onnxruntime(weights_file: Path, tmp_path: Path, capsys):
    path = tmp_path / "model.onnx"
    assert main(["export", "--onnx", str(path), "--weights", str(weights_file), "--opset", "13"]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert onnx.load(str(path)).opset_import[0].version == 13
    assert main(["export", "--onnx", str(tmp_path / "bad.onnx"), "-w", str(weights_file), "--opset", "3"]) == 2
    assert "opset" in capsys.readouterr().err
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 60, (40, 50, 3), dtype=np.uint8)).save(src / "a.png")
    for weights, out in [(weights_file, "o1"), (path, "o2")]:
        code = main(["enhance", str(src), "-o", str(tmp_path / out), "-w", str(weights), "--backend", "onnxruntime"])
        assert code == 0
    code = main(["enhance", str(src), "-o", str(tmp_path / "o3"), "-w", str(weights_file), "-q"])
    assert code == 0
    pixels = [np.asarray(Image.open(tmp_path / out / "a.png"), dtype=np.int16) for out in ("o1", "o2", "o3")]
    assert np.abs(pixels[0] - pixels[2]).max() <= 1 and np.abs(pixels[1] - pixels[2]).max() <= 1
