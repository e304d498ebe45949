"""The int8 backend (``backend="onnxruntime-int8"``): the quantised graph, its calibration pictures, results
within one 8-bit level of the float32 backend on generated pictures, and its refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scl_lle import DCENet, Enhancer
from scl_lle.cli import main

onnx = pytest.importorskip("onnx", reason="the int8 backend needs 'pip install onnx onnxruntime'")
pytest.importorskip("onnxruntime", reason="the int8 backend needs 'pip install onnx onnxruntime'")

from scl_lle.apps.export import export_onnx  # noqa: E402
from scl_lle.engine.backends import onnxruntime_session, resolve_device  # noqa: E402
from scl_lle.models import quantize  # noqa: E402
from scl_lle.models.onnx import build_onnx  # noqa: E402
from scl_lle.models.quantize import QuantizationError  # noqa: E402


def _scene(seed: int, level: float) -> torch.Tensor:
    """A generated picture ``(1, 3, 96, 96)`` at mean level about ``level``, not one of the calibration set's."""
    (picture,) = quantize.calibration_images(count=1, side=96, seed=seed)
    picture = torch.from_numpy(picture)
    return (picture * (level / picture.mean())).clamp(0, 1)


def test_calibration_images_are_fixed_in_range_and_span_dark_to_bright():
    first, again = quantize.calibration_images(), quantize.calibration_images()
    assert len(first) == quantize.CALIBRATION_COUNT
    side = quantize.CALIBRATION_SIDE
    for picture, same in zip(first, again, strict=True):
        assert picture.shape == (1, 3, side, side) and picture.dtype == np.float32
        assert picture.min() >= 0.0 and picture.max() <= 1.0
        np.testing.assert_array_equal(picture, same)
    means = [float(picture.mean()) for picture in first]
    assert min(means) < 0.1 and max(means) > 0.4  # the network sees dark and well-lit pictures
    assert not np.array_equal(quantize.calibration_images(seed=1)[0], first[0])


def test_quantized_graph_holds_7_bit_weights_per_channel_and_uint8_activations_and_is_cached():
    from onnx import numpy_helper

    data = build_onnx(None).SerializeToString()
    quantized = quantize.quantize_onnx(data)
    assert quantize.quantize_onnx(data) is quantized  # once per weights per process
    proto = onnx.load_from_string(quantized)
    onnx.checker.check_model(proto)
    operators = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= operators
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
    tensors = {t.name: t for t in proto.graph.initializer}
    weights = [t for name, t in tensors.items() if name.endswith("weight_quantized")]
    assert len(weights) == 7 and all(t.data_type == onnx.TensorProto.INT8 for t in weights)
    for tensor in weights:
        values = numpy_helper.to_array(tensor)
        assert values.min() >= -64 and values.max() <= 64  # 7 bits: no 16-bit overflow without VNNI
        scale = numpy_helper.to_array(tensors[tensor.name.replace("_quantized", "_scale")])
        assert scale.shape == (values.shape[0],)  # one scale per output channel
    activations = [t for name, t in tensors.items() if name.endswith("_zero_point") and not name.startswith("e_conv")]
    assert activations and all(t.data_type == onnx.TensorProto.UINT8 for t in activations)
    assert len(quantized) < len(data) / 2  # int8 weights: a quarter of the float bytes, plus scales


def test_quantizing_leaves_the_root_logger_alone(capsys: pytest.CaptureFixture[str]):
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    torch.manual_seed(3)
    quantize._cache.clear()  # a real quantisation, not a cached one
    quantize.quantize_onnx(build_onnx(DCENet()).SerializeToString())
    assert root.handlers == handlers and root.level == level
    assert "pre-processing" not in capsys.readouterr().err


@pytest.mark.parametrize("level", [0.04, 0.15])
def test_int8_results_are_within_one_level_of_float32(level: float):
    picture = _scene(seed=11, level=level)
    settings = {"device": "cpu", "exposure": "off", "finish": False}
    exact = Enhancer(backend="onnxruntime", **settings)(picture)
    enhancer = Enhancer(backend="onnxruntime-int8", **settings)
    int8 = enhancer(picture)
    assert enhancer.backend == "onnxruntime-int8"
    assert int8.shape == exact.shape and int8.dtype == exact.dtype
    assert not torch.equal(int8, exact)  # the integer graph ran, not the float one
    difference = ((int8 * 255).round() - (exact * 255).round()).abs()
    assert float(difference.max()) <= 1.0
    psnr = 10 * math.log10(1.0 / max(float((int8 - exact).square().mean()), 1e-12))
    assert psnr > 50.0
    assert float((int8 - picture).abs().mean()) > 0.05  # it did enhance: not an identity graph


@pytest.mark.parametrize("scale", [1, 4])
@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_onnxruntime_backends_apply_local_weighting_as_torch_does(backend: str, scale: int):
    picture = _scene(seed=12, level=0.05)
    picture[..., 48:] = _scene(seed=13, level=0.25)[..., 48:]  # a brighter right half
    settings = {"device": "cpu", "exposure": 0.4, "scale": scale, "local_weighting": True}
    reference = Enhancer(backend="torch", **settings)(picture)
    result = Enhancer(backend=backend, **settings)(picture)
    # float32 ONNX Runtime within 1e-4 of torch; int8 within two 8-bit levels, as without the weights
    assert float((result - reference).abs().max()) <= (1e-4 if backend == "onnxruntime" else 2 / 255 + 1e-6)
    alike = Enhancer(backend=backend, **{**settings, "local_weighting": False})(picture)
    assert float((result - alike)[..., 48:].mean()) < -0.02  # the weights applied: the bright half lifted less


def test_int8_backend_quantizes_an_exported_onnx_file(tmp_path: Path):
    torch.manual_seed(5)
    model = DCENet().eval()
    path = export_onnx(model, tmp_path / "net.onnx")
    picture = _scene(seed=12, level=0.08)
    settings = {"device": "cpu", "exposure": "off", "backend": "onnxruntime-int8"}
    from_file = Enhancer(path, **settings)(picture)
    from_model = Enhancer(model, **settings)(picture)
    assert torch.allclose(from_file, from_model, atol=1e-6)  # the file's weights, quantised the same way
    assert not torch.allclose(from_file, Enhancer(**settings)(picture), atol=1e-3)  # not the default model's


def test_int8_backend_is_cpu_only_and_float32_only(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match=r"onnxruntime-int8 backend runs on the CPU, not cuda \(use --device cpu\)"):
        onnxruntime_session(None, device="cuda", int8=True)
    with pytest.raises(ValueError, match="float32"):
        Enhancer(device="cpu", backend="onnxruntime-int8", dtype=torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU: "auto" is still the CPU
    assert resolve_device("auto", "onnxruntime-int8") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'cuda'"):  # other backends take the (mock) GPU
        resolve_device("auto", "onnxruntime")


def test_int8_graph_that_strays_or_fails_is_refused(monkeypatch: pytest.MonkeyPatch):
    from scl_lle.engine import backends

    monkeypatch.setattr(backends, "PROBE_TOLERANCE", 0.0)
    with pytest.raises(QuantizationError, match=r"in int8 its curve maps differ from float32 by 0\.\d+ .*onnxruntime$"):
        onnxruntime_session(None, int8=True)
    monkeypatch.undo()

    def broken(data: bytes) -> bytes:
        raise RuntimeError("no calibration\nsecond line")

    monkeypatch.setattr(backends, "quantize_onnx", broken)
    with pytest.raises(QuantizationError, match=r"cannot be quantised to int8 \(no calibration\)$"):
        onnxruntime_session(None, int8=True)


def test_cli_backend_onnxruntime_int8(tmp_path: Path):
    from PIL import Image

    source = tmp_path / "dark.png"
    pixels = (_scene(seed=13, level=0.08)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(source)
    assert main(["enhance", str(source), "-o", str(tmp_path / "out.png"), "--backend", "onnxruntime-int8"]) == 0
    result = np.asarray(Image.open(tmp_path / "out.png"))
    assert result.shape == pixels.shape and result.mean() > pixels.mean() + 20


def test_web_server_runs_the_backend_it_is_given(monkeypatch: pytest.MonkeyPatch):
    from scl_lle.apps.serve import server
    from scl_lle.apps.serve.work import Engine

    enhancer = Engine(None, "auto", "onnxruntime-int8").enhancer("full")
    assert enhancer.backend == "onnxruntime-int8" and enhancer.device.type == "cpu"
    seen: dict[str, object] = {}
    monkeypatch.setattr(server, "serve", lambda *args, **kwargs: seen.update(kwargs))
    assert main(["serve", "--backend", "onnxruntime-int8"]) == 0
    assert seen["backend"] == "onnxruntime-int8"


@pytest.mark.parametrize("checkpoint", ["zero-dce_official_epoch99.pth", "scl-lle_official.pth"])
def test_released_weights_quantize_quietly_and_stay_close(shared: Path, checkpoint: str):
    import warnings

    path = shared / "weights" / "upstream" / checkpoint
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    picture = _scene(seed=14, level=0.1)
    settings = {"device": "cpu", "exposure": "off", "finish": False}
    exact = Enhancer(path, backend="onnxruntime", **settings)(picture)  # first, as when a user compares them
    with warnings.catch_warnings():
        # Zero-DCE's dead channels' weights are near 1e-37 (SCL-LLE's go down to 1e-44): the bias's scale
        # underflows to 0 and numpy would warn of a division by zero on the user's terminal.
        warnings.simplefilter("error")
        int8 = Enhancer(path, backend="onnxruntime-int8", **settings)(picture)
        assert Enhancer(path, **settings).backend == "onnxruntime-int8"  # what the default runs: not refused
    assert float(((int8 * 255).round() - (exact * 255).round()).abs().max()) <= 3.0
