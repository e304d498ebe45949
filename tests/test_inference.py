"""Enhancer: tiling is exact, dtypes and kinds round-trip, alpha passes through, no CUDA on the CPU path."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_lle import DCENet, Enhancer
from scl_lle.models.hub import WeightsError


@pytest.fixture(scope="module")
def enhancer(weights_file: Path) -> Enhancer:
    return Enhancer(weights_file, exposure="off", device="cpu")


@pytest.mark.parametrize("backend", ["torch", "auto"])  # auto: ONNX Runtime in int8 where installed
@pytest.mark.parametrize("scale", [1, 3])
def test_tiled_equals_untiled(weights_file: Path, scale: int, backend: str):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 101, 87) * 0.4
    whole = Enhancer(weights_file, exposure="off", device="cpu", scale=scale, tile=None, backend=backend)(x)
    tiled = Enhancer(weights_file, exposure="off", device="cpu", scale=scale, tile=32, backend=backend)(x)
    assert (whole - tiled).abs().max().item() < 1e-5
    assert not torch.equal(whole, x)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("scale", [3, 8])
def test_banded_shrink_equals_the_whole_picture_shrink(scale: int, workers: int):
    # The shrunk picture the fast path's network sees is computed band by band, shared among worker threads
    # (PyTorch's own threads stall on a busy machine); any split must give the one-piece area average.
    from scl_lle.core.curves import downsample
    from scl_lle.engine.tiling import TilePool, TileReader

    torch.manual_seed(2)
    x = torch.rand(2, 3, 203, 131)
    reader = TileReader(x, torch.device("cpu"), torch.float32)
    expected = downsample(x, scale)
    for rows in (None, 7, 64):
        shrunk = reader.downsample(scale, rows=rows, pool=TilePool(workers))
        assert shrunk.shape == expected.shape
        assert (shrunk - expected).abs().max().item() < 1e-6


@pytest.mark.parametrize("size", [(37, 53), (40, 48)])
def test_sample_neighbourhoods_are_the_squares_around_the_samples(size: tuple[int, int]):
    # The exposure solve reads the finishing's base layer at sampled pixels from these squares.
    from scl_lle.engine.tiling import TileReader

    height, width = size
    pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    step, radius = 8, 2
    mosaic = TileReader(pixels, torch.device("cpu"), torch.float32).neighbourhoods(step, radius)
    padded = np.pad(pixels, ((radius, radius), (radius, radius), (0, 0)), mode="edge").astype(np.float32) / 255
    k = 2 * radius + 1
    assert mosaic.shape == (1, 3, -(-height // step) * k, -(-width // step) * k)
    for i, y in enumerate(range(0, height, step)):
        for j, x in enumerate(range(0, width, step)):
            square = torch.from_numpy(padded[y : y + k, x : x + k]).permute(2, 0, 1)
            assert torch.equal(mosaic[0, :, i * k : (i + 1) * k, j * k : (j + 1) * k], square), (i, j)


@pytest.mark.parametrize("kind", ["float32", "uint16"])
@pytest.mark.parametrize(("height", "width"), [(37, 53), (40, 48), (9, 11), (3, 4)])
def test_the_base_at_samples_is_the_same_from_the_whole_picture_as_from_the_squares(height: int, width: int, kind: str):
    # Pictures whose squares would outnumber their pixels (step < 5) take the whole picture, edges replicated:
    # exactly the values of the mosaic of squares (and so of the engine's results before the switch).
    from scl_lle.engine.finishing import BASE_REACH, base_at_centres, base_at_samples
    from scl_lle.engine.tiling import TileReader

    rng = np.random.default_rng(height)
    if kind == "float32":  # a batch of two, each with its own filter setting
        pixels: torch.Tensor | np.ndarray = torch.from_numpy(rng.random((2, 3, height, width), dtype=np.float32))
        eps = torch.tensor([0.002, 0.03]).view(2, 1, 1, 1)
    else:  # a 16-bit photo as decoded
        pixels, eps = rng.integers(0, 65536, (height, width, 3), dtype=np.uint16), torch.full((1, 1, 1, 1), 0.01)
    reader = TileReader(pixels, torch.device("cpu"), torch.float32)
    read = []
    reader.read = lambda *box: read.append(box) or TileReader.read(reader, *box)  # which route was taken
    for step in range(1, 8):
        read.clear()
        squares = base_at_centres(reader.neighbourhoods(step, BASE_REACH), eps)
        assert torch.equal(base_at_samples(reader, step, eps), squares), step
        assert read == ([(0, 0, height, width)] if step < 2 * BASE_REACH + 1 else []), step


@pytest.mark.parametrize("square", [True, False])
@pytest.mark.parametrize(("height", "width", "tile"), [(375, 500, 362), (1080, 1920, 362), (7, 9, 4), (64, 64, 64)])
def test_regions_cover_the_picture_in_equal_pieces_no_larger_than_the_tile(height, width, tile, square):
    # Workers share the pieces: equal pieces give equal shares (no 13-pixel leftovers beside 362-pixel tiles).
    from scl_lle.engine.tiling import regions

    pieces = list(regions(height, width, tile, square))
    covered = torch.zeros(height, width, dtype=torch.int32)
    for top, left, bottom, right in pieces:
        covered[top:bottom, left:right] += 1
        assert (bottom - top) * (right - left) <= tile * tile
    assert bool((covered == 1).all())
    heights = {bottom - top for top, _, bottom, _ in pieces}
    widths = {right - left for _, left, _, right in pieces}
    assert max(heights) - min(heights) <= 1 and max(widths) - min(widths) <= 1, (heights, widths)


@pytest.mark.parametrize("exposure", ["off", "0.6"])  # 0.6: the solve's thumbnail forward is tiled too
def test_tiled_equals_untiled_on_a_real_photo(official_weights: Path, shared: Path, exposure: str):
    image = Image.open(shared / "data" / "eval_noref_DICM" / "images" / "05.jpg").convert("RGB")
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    whole = Enhancer(official_weights, exposure=exposure, device="cpu", tile=None)(x)
    tiled = Enhancer(official_weights, exposure=exposure, device="cpu", tile=200)(x)
    assert (whole - tiled).abs().max().item() < 1e-5
    assert not torch.equal(whole, x)


def test_tensor_call_keeps_shape_dtype_and_device(enhancer: Enhancer):
    x64 = torch.rand(3, 17, 9, dtype=torch.float64)
    out = enhancer(x64)
    assert out.shape == x64.shape and out.dtype == torch.float64
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(TypeError):
        enhancer(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError):
        enhancer(torch.zeros(1, 4, 4, 4))


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (1, 3, 0, 8), (1, 3, 8, 0)])
def test_an_empty_picture_is_a_clear_value_error(enhancer: Enhancer, shape: tuple[int, ...]):
    with pytest.raises(ValueError, match=r"nothing to enhance: the picture is empty"):
        enhancer(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"nothing to enhance"):
        enhancer.enhance_array(np.zeros((shape[2], shape[3], 3), np.uint8) if shape[0] else np.zeros((0, 0)))


def test_half_precision_compute_is_close(weights_file: Path):
    x = torch.rand(1, 3, 24, 24)
    full = Enhancer(weights_file, exposure="off", device="cpu")(x)
    half = Enhancer(weights_file, exposure="off", device="cpu", dtype=torch.bfloat16)(x)
    assert half.dtype == torch.float32
    assert (full - half).abs().max() < 0.05


def _deep_twin(enhancer: Enhancer, weights: Path) -> Enhancer:
    """What ``enhancer`` runs on numpy pictures of more than 8 bits: under auto, the int8 backend's float32 network
    (tensors, like 8-bit pictures, run the backend's own)."""
    if enhancer.backend != "onnxruntime-int8":
        return enhancer
    return Enhancer(weights, exposure="off", device="cpu", backend="onnxruntime")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_enhance_image_arrays_keep_their_kind(enhancer: Enhancer, weights_file: Path, dtype):
    rng = np.random.default_rng(0)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    rgb = (rng.random((13, 19, 3)) * 0.3 * top).astype(dtype)
    out = enhancer.enhance_image(rgb)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == rgb.shape
    reference = enhancer if dtype == np.uint8 else _deep_twin(enhancer, weights_file)
    as_float = reference(torch.from_numpy(rgb.astype(np.float64) / top).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert np.abs(out.astype(np.float64) / top - as_float).max() <= 0.5 / top + 1e-6


def test_enhance_image_alpha_and_grey(enhancer: Enhancer, weights_file: Path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 80, (11, 7, 4), dtype=np.uint8)
    out = enhancer.enhance_image(rgba)
    assert out.shape == rgba.shape
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(out[..., :3], enhancer.enhance_image(rgba[..., :3]))

    grey = rng.integers(0, 60000, (11, 7), dtype=np.uint16)
    out = enhancer.enhance_image(grey)
    assert out.shape == grey.shape and out.dtype == np.uint16
    rgb = _deep_twin(enhancer, weights_file)(torch.from_numpy(grey / 65535.0).expand(3, -1, -1).float())
    luma = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).numpy()
    assert np.abs(out / 65535.0 - luma).max() < 1e-4

    grey_alpha = rng.integers(0, 80, (5, 6, 2), dtype=np.uint8)
    out = enhancer.enhance_image(grey_alpha)
    assert out.shape == grey_alpha.shape
    np.testing.assert_array_equal(out[..., 1], grey_alpha[..., 1])
    with pytest.raises(ValueError):
        enhancer.enhance_image(np.zeros((4, 4, 5), np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16", "P", "CMYK"])
def test_enhance_image_pil_returns_pil(enhancer: Enhancer, mode: str):
    base = Image.fromarray(np.random.default_rng(2).integers(0, 70, (10, 12, 3), dtype=np.uint8))
    image = base.convert("I;16") if mode == "I;16" else base.convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    out = enhancer.enhance_image(image)
    assert isinstance(out, Image.Image) and out.size == image.size
    expected_mode = {"P": "RGB", "CMYK": "RGB"}.get(mode, mode)
    assert out.mode == expected_mode
    if mode in ("RGBA", "LA"):
        assert out.getchannel("A").tobytes() == image.getchannel("A").tobytes()


def test_cpu_path_never_touches_cuda(weights_file: Path, monkeypatch, tmp_path: Path):
    def forbidden(*args, **kwargs):
        raise AssertionError("CUDA was touched on the CPU path")

    for name in ("is_available", "device_count", "current_device", "synchronize", "init"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    from scl_lle import enhance

    Image.fromarray(np.full((20, 30, 3), 30, np.uint8)).save(tmp_path / "a.png")
    result = enhance([tmp_path / "a.png"], tmp_path / "out", weights=weights_file, device="cpu", progress=False)
    assert result.ok and (tmp_path / "out" / "a.png").is_file()
    assert Enhancer(DCENet(), device="cpu")(torch.rand(1, 3, 8, 8)).device.type == "cpu"


def test_bad_settings_are_refused(weights_file: Path):
    with pytest.raises(ValueError):
        Enhancer(weights_file, exposure="off", scale=0)
    with pytest.raises(ValueError):
        Enhancer(weights_file, exposure="off", tile=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_and_threads_change_nothing(weights_file: Path, channels_last: bool):
    torch.manual_seed(4)
    x = torch.rand(1, 3, 45, 38) * 0.3
    reference = Enhancer(weights_file, exposure="off", device="cpu", tile=None, channels_last=False, backend="torch")(x)
    threads = torch.get_num_threads()
    try:
        enhancer = Enhancer(
            weights_file,
            exposure="off",
            device="cpu",
            tile=16,
            channels_last=channels_last,
            threads=1,
            backend="torch",
        )
        assert torch.get_num_threads() == 1 and enhancer.channels_last is channels_last
        assert (enhancer(x) - reference).abs().max().item() < 1e-5
    finally:
        torch.set_num_threads(threads)
    assert Enhancer(weights_file, exposure="off", device="cpu").channels_last  # the CPU default
    with pytest.raises(ValueError):
        Enhancer(weights_file, exposure="off", threads=0)


def test_scale_path_never_builds_full_resolution_maps(weights_file: Path, monkeypatch):
    """With scale > 1 the 24-channel maps exist only at low resolution, and at full resolution only one curve's
    maps for a block of pixels at a time: the rows between two low-resolution rows, at most BLOCK_PIXELS of them
    (fused upsample + curves; eager here, as the numba kernel serves pictures of 8 MP and more)."""
    from scl_lle.core import curves

    sizes: dict[str, list[tuple[int, ...]]] = {}

    def spy(name: str, real):
        def watched(*args, **kwargs):
            out = real(*args, **kwargs)
            sizes.setdefault(name, []).append(tuple(out.shape))
            return out

        return watched

    monkeypatch.setattr(curves, "BLOCK_PIXELS", 200)
    monkeypatch.setattr(torch, "lerp", spy("lerp", torch.lerp))  # where a block's maps are made
    for name in ("index_select", "lerp_"):
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    for name in ("interpolate", "grid_sample"):
        monkeypatch.setattr(torch.nn.functional, name, spy(name, getattr(torch.nn.functional, name)))
    x = torch.rand(1, 3, 96, 80) * 0.3
    out = Enhancer(weights_file, exposure="off", device="cpu", scale=4, tile=None)(x)
    monkeypatch.undo()
    assert out.shape == x.shape
    maps = sizes["lerp"]  # each curve's maps for a block, mixed just before they are applied
    assert len(maps) >= 8 and all(s[1] == 3 and s[-2] <= 2 * 4 and s[-2] * s[-1] <= 200 for s in maps), maps
    every = [s for shapes in sizes.values() for s in shapes]
    assert not [s for s in every if len(s) == 4 and s[1] > 3 and s[-2:] == (96, 80)]  # no full-size maps at all


def test_auto_backend_resolution(monkeypatch):
    import scl_lle.engine.backends as backends

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(backends, "_onnxruntime_installed", lambda: True)
    assert backends.resolve_backend("auto", cpu) == "onnxruntime-int8"  # the fastest on the CPU
    assert backends.resolve_backend("auto", "cpu", torch.bfloat16) == "torch"  # ONNX Runtime runs float32 only
    assert backends.resolve_backend("auto", cpu, compile=True) == "torch"  # compile asks for PyTorch
    assert backends.resolve_backend("auto", cuda) == "torch"
    assert backends.resolve_backend("auto", torch.device("mps")) == "torch"
    assert backends.resolve_backend("torch", cpu) == "torch"
    assert backends.resolve_backend("onnxruntime", cuda) == "onnxruntime"  # a named backend is kept
    assert backends.resolve_backend("onnxruntime", cpu) == "onnxruntime"
    monkeypatch.setattr(backends, "_onnxruntime_installed", lambda: False)
    assert backends.resolve_backend("auto", cpu) == "torch"
    assert backends.resolve_backend("auto", cuda, weights="net.ONNX") == "onnxruntime"  # only ORT reads .onnx
    assert backends.resolve_backend("auto", cpu, weights="net.onnx") == "onnxruntime-int8"  # int8 on the CPU
    assert backends.resolve_backend("auto", cpu, torch.bfloat16, weights="net.onnx") == "onnxruntime"
    assert backends.resolve_backend("auto", cpu, compile=True, weights="net.onnx") == "onnxruntime"
    with pytest.raises(ValueError, match="backend"):
        backends.resolve_backend("tensorrt", cpu)


def test_auto_backend_falls_back_to_torch_when_onnxruntime_breaks(weights_file: Path, monkeypatch):
    import scl_lle.engine.backends as backends

    def broken(*args, **kwargs):
        raise RuntimeError("no usable ONNX Runtime")

    monkeypatch.setattr(backends, "_onnxruntime_installed", lambda: True)
    monkeypatch.setattr(backends, "_onnxruntime_sessions", broken)
    x = torch.rand(1, 3, 20, 24) * 0.3
    with pytest.warns(UserWarning, match="ONNX Runtime failed"):
        enhancer = Enhancer(weights_file, exposure="off", device="cpu")
    assert enhancer.backend == "torch" and enhancer.model is not None
    assert torch.equal(enhancer(x), Enhancer(weights_file, exposure="off", device="cpu", backend="torch")(x))
    with pytest.raises(RuntimeError, match="no usable"):  # asked for by name: the error is the user's to see
        Enhancer(weights_file, exposure="off", device="cpu", backend="onnxruntime")
    with warnings.catch_warnings():  # a bad weights path is reported as such, not as an ONNX failure
        warnings.simplefilter("error")
        with pytest.raises(WeightsError, match="missing"):
            Enhancer(Path(weights_file).with_name("missing.safetensors"), exposure="off", device="cpu")


def test_auto_backend_is_int8_on_the_cpu_and_stays_close_to_torch(weights_file: Path):
    pytest.importorskip("onnxruntime", reason="auto resolves to torch without onnxruntime")
    pytest.importorskip("onnx", reason="auto resolves to torch without onnx")
    torch.manual_seed(5)
    x = torch.rand(2, 3, 40, 52) * 0.3
    auto = Enhancer(weights_file, exposure="off", device="cpu", scale=2, tile=24)
    assert auto.backend == "onnxruntime-int8" and "backend=onnxruntime-int8" in repr(auto)
    result = auto(x)
    expected = Enhancer(weights_file, exposure="off", device="cpu", scale=2, tile=24, backend="torch")(x)
    assert (result - expected).abs().max().item() < 3 / 255
    assert Enhancer(weights_file, exposure="off", device="cpu", dtype=torch.bfloat16).backend == "torch"
    float32 = Enhancer(weights_file, exposure="off", device="cpu", scale=2, tile=24, backend="onnxruntime")
    from_float32 = float32(x)
    assert float32.backend == "onnxruntime" and (from_float32 - expected).abs().max().item() < 1e-4
    assert (result - from_float32).abs().max().item() > 1e-4  # the integer graph ran, not the float one


def test_auto_backend_runs_pictures_of_more_than_8_bits_in_float32():
    # int8 activations step the curve maps where float32 ones vary smoothly: 16-bit gradations would show it.
    pytest.importorskip("onnxruntime", reason="auto resolves to torch without onnxruntime")
    pytest.importorskip("onnx", reason="auto resolves to torch without onnx")
    ramp = np.linspace(0.002, 0.06, 300)[None, :].repeat(24, 0)
    rgb = np.stack([ramp, ramp * 1.05, ramp * 0.9], -1)
    deep, shallow = np.round(rgb * 65535).astype(np.uint16), np.round(rgb * 255).astype(np.uint8)
    settings = {"device": "cpu", "exposure": "off"}  # the default model, which brightens this ramp
    auto = Enhancer(**settings)
    float32, int8 = Enhancer(**settings, backend="onnxruntime"), Enhancer(**settings, backend="onnxruntime-int8")
    assert auto.backend == "onnxruntime-int8"
    for scale, exposure in ((1, "off"), (4, "off"), (1, 0.3)):  # full-resolution tiles, shrunk picture, the solve
        auto.scale = int8.scale = float32.scale = scale
        expected = float32.enhance_array(deep, exposure)
        assert not np.array_equal(int8.enhance_array(deep, exposure), expected)  # the choice matters here
        assert np.array_equal(auto.enhance_array(deep, exposure), expected)
        for floats in (deep.astype(np.float32) / 65535, deep / 65535.0):  # float32 and float64 arrays
            assert np.array_equal(auto.enhance_array(floats, exposure), float32.enhance_array(floats, exposure))
        assert np.array_equal(auto.enhance_array(shallow, exposure), int8.enhance_array(shallow, exposure))
        x = torch.from_numpy(shallow).permute(2, 0, 1)[None].float() / 255
        assert torch.equal(auto(x, exposure), int8(x, exposure))  # tensors: the backend's own network


def test_auto_backend_runs_weights_refused_in_int8_in_float32(weights_file: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="auto resolves to torch without onnxruntime")
    pytest.importorskip("onnx", reason="auto resolves to torch without onnx")
    import scl_lle.engine.backends as backends
    from scl_lle.apps.export import export_onnx
    from scl_lle.models.hub import load_dcenet
    from scl_lle.models.quantize import QuantizationError

    x = torch.rand(1, 3, 30, 26) * 0.3
    monkeypatch.setattr(backends, "PROBE_TOLERANCE", -1.0)  # every int8 graph strays
    with pytest.warns(UserWarning, match="running the network in float32 ONNX Runtime: .*differ from float32") as seen:
        auto = Enhancer(weights_file, exposure="off", device="cpu")
    assert seen[0].filename == __file__  # points at the user's call
    assert auto.backend == "onnxruntime" and auto.model is None
    expected = Enhancer(weights_file, exposure="off", device="cpu", backend="torch")(x)
    assert (auto(x) - expected).abs().max().item() < 1e-4  # float32, not int8
    with pytest.raises(QuantizationError, match="differ from float32"):  # asked for by name: refused
        Enhancer(weights_file, exposure="off", device="cpu", backend="onnxruntime-int8")
    monkeypatch.undo()

    def broken(data: bytes) -> bytes:
        raise RuntimeError("no calibration")

    monkeypatch.setattr(backends, "quantize_onnx", broken)  # a quantiser that fails: float32 too, an .onnx file too
    onnx_file = tmp_path / "net.onnx"
    export_onnx(load_dcenet(weights_file), onnx_file)
    for weights in (weights_file, onnx_file):
        with pytest.warns(UserWarning, match=r"float32 ONNX Runtime: .*cannot be quantised to int8 \(no calibration\)"):
            assert Enhancer(weights, exposure="off", device="cpu").backend == "onnxruntime"


def test_non_finite_curve_maps_fail_that_picture_clearly_and_the_batch_goes_on(tmp_path) -> None:
    # finite but huge weights overflow to inf/NaN maps: once written as an all-black picture with exit 0
    from PIL import Image

    from scl_lle import enhance
    from scl_lle.engine.enhancer import EnhanceError

    torch.manual_seed(0)
    model = DCENet().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1e30)
    for exposure in ("off", "auto", 0.4):
        for scale in (1, 4):
            enhancer = Enhancer(model, device="cpu", scale=scale, backend="torch", exposure=exposure)
            with pytest.raises(EnhanceError, match="non-finite curve maps"):
                enhancer.enhance_array(np.full((40, 30, 3), 30, dtype=np.uint8))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 24, 3), 25, dtype=np.uint8)).save(folder / name)
    messages: list[str] = []
    enhancer = Enhancer(model, device="cpu", backend="torch", exposure="off")
    result = enhance([folder], tmp_path / "out", enhancer=enhancer, progress=False, report=messages.append)
    assert len(result.failed) == 2 and not result.written
    assert all("non-finite curve maps" in line and "\n" not in line for line in messages)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _peak_rss_growth_mib(run) -> float:
    """Peak RSS growth (MiB) while ``run()`` runs: VmHWM after resetting it through /proc/self/clear_refs."""

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        raise KeyError(key)

    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
    run()
    return (status("VmHWM:") - before) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS is read from Linux's /proc")
def test_memory_grows_with_the_tile_not_with_the_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 12 MP uint8 photo is 34 MiB; as float32 it would be 137 MiB, and the engine used to hold several such
    # copies (input, output, conversions). Read and written a tile at a time, the growth beyond the
    # result (34 MiB) stays near the tile's working set, the same for a picture 4x as large.
    from scl_lle.engine import fused_pass

    enhancer = Enhancer(DCENet().eval(), device="cpu", scale=8, finish=False, backend="torch", tile=256)
    with monkeypatch.context() as patch:  # warm-up: first-call allocations, and the numba kernels' compilation
        patch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)  # (once per process) that 12 MP pictures use
        enhancer.enhance_array(np.full((64, 64, 3), 20, dtype=np.uint8))
    growth = {}
    for height, width in ((1500, 2000), (3000, 4000)):
        pixels = np.random.default_rng(0).integers(0, 60, (height, width, 3), dtype=np.uint8)
        growth[height] = _peak_rss_growth_mib(lambda pixels=pixels: enhancer.enhance_array(pixels))
    for height, width in ((1500, 2000), (3000, 4000)):  # the result's own pixels plus a tile-sized constant
        assert growth[height] < height * width * 3 / 2**20 + 120, growth  # the old engine: 621 MiB at 12 MP


def test_auto_scale_keeps_the_networks_input_about_the_same_size() -> None:
    from scl_lle.defaults import auto_scale

    assert auto_scale(480, 640) == 8 and auto_scale(1080, 1920) == 8  # never below the old --fast scale
    assert auto_scale(3000, 4000) == 16 and auto_scale(3024, 4032) == 16 and auto_scale(4000, 3000) == 16
    assert auto_scale(6000, 8000) == 31  # 258 pixels on the long side


def test_scale_auto_is_the_auto_scale_of_each_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    import scl_lle.defaults

    monkeypatch.setattr(scl_lle.defaults, "AUTO_SCALE_SIDE", 16)  # so that small pictures get large scales
    torch.manual_seed(0)
    model = DCENet().eval()
    wide, tall = torch.rand(1, 3, 40, 320) * 0.3, torch.rand(1, 3, 200, 48) * 0.3
    auto = Enhancer(model, device="cpu", scale="auto", finish=False, exposure="off")
    assert auto.scale_for(40, 320) == 20 and auto.scale_for(200, 48) == 12
    for x, scale in ((wide, 20), (tall, 12)):
        fixed = Enhancer(model, device="cpu", scale=scale, finish=False, exposure="off")
        assert torch.equal(auto(x), fixed(x))
        assert (
            auto.curve_maps(x).shape[-2:]
            == fixed.curve_maps(x).shape[-2:]
            == (-(-x.shape[2] // scale), -(-x.shape[3] // scale))
        )
    for wrong in ("fast", 0, 2.5):
        with pytest.raises(ValueError, match="scale must be"):
            Enhancer(model, device="cpu", scale=wrong)
