"""Foreign weights: hostile or broken .pth and .onnx files are refused at load time, cheaply, in one line."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from scl_lle import DCENet, WeightsError, load_dcenet
from scl_lle.cli import main

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ hand-made .pth


class _Storage:
    """Stands for a storage in :func:`_pickle_state`; pickled as a persistent id that declares ``numel``."""

    def __init__(self, numel: int, legacy: bool) -> None:
        self.numel, self.legacy = numel, legacy


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple[int, ...]) -> None:
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        args = (self.storage, 0, self.shape, stride, False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


def _pickle_state(state: dict[str, _Tensor]) -> bytes:
    """The pickle torch.save writes for ``state`` (float32 storages named 0, 1, ...), without any tensor data."""
    keys = {id(t.storage): str(i) for i, t in enumerate(state.values())}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object):
            if not isinstance(obj, _Storage):
                return None
            declared = ("storage", torch.FloatStorage, keys[id(obj)], "cpu", obj.numel)
            return (*declared, None) if obj.legacy else declared

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    return buffer.getvalue()


def _write_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip from ``(name, stored bytes, crc32, uncompressed size, method)`` entries (8: raw deflate)."""
    out, central = bytearray(), bytearray()
    for name, data, crc, size, method in entries:
        encoded, offset = name.encode(), len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(encoded), 0)
        out += encoded + data
        fields = (20, 20, 0, method, 0, 0, crc, len(data), size, len(encoded), 0, 0, 0, 0, 0, offset)
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", *fields)
        central += encoded
    tail = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + tail))


def _stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return (name, data, zlib.crc32(data), len(data), 0)


GIB2 = 2**31
ZEROS_2GIB_CRC32 = 0x4DBDF21C  # zlib.crc32(bytes(2**31)), computed once (it takes seconds)


def _deflated_zeros(size: int) -> bytes:
    """Raw deflate of ``size`` zero bytes (about size / 1000 bytes), made from one compressed MiB repeated."""
    chunk = 2**20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)  # history reset: repeatable
    return block * (size // chunk) + compressor.flush()


def _huge_zip_pth(path: Path) -> Path:
    """A 2 MB torch.save zip whose one tensor (``e_conv1.weight``) holds 2 GiB of (deflated) zeros."""
    storage = _Storage(GIB2 // 4, legacy=False)
    pkl = _pickle_state({"e_conv1.weight": _Tensor(storage, (GIB2 // 4,))})
    entries = [_stored("archive/data.pkl", pkl), _stored("archive/byteorder", b"little")]
    entries += [
        ("archive/data/0", _deflated_zeros(GIB2), ZEROS_2GIB_CRC32, GIB2, 8),
        _stored("archive/version", b"3\n"),
    ]
    _write_zip(path, entries)
    return path


def _legacy_pth(path: Path, state: dict[str, _Tensor], data: list[tuple[int, bytes]]) -> Path:
    """A file in torch's pre-1.6 format: magic, protocol, system info, the state, storage keys, then per storage
    ``(numel header, bytes)`` from ``data``."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    buffer = io.BytesIO()
    info = {
        "protocol_version": PROTOCOL_VERSION,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, info):
        pickle.dump(header, buffer, protocol=2)
    buffer.write(_pickle_state(state))
    pickle.dump([str(i) for i in range(len(data))], buffer, protocol=2)
    for numel, raw in data:
        buffer.write(struct.pack("<q", numel) + raw)
    path.write_bytes(buffer.getvalue())
    return path


_MEASURE = """
import json, resource, sys, time
from scl_lle.models.hub import WeightsError, load_dcenet
before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
try:
    load_dcenet(sys.argv[1])
    error = None
except WeightsError as caught:
    error = str(caught)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"error": error, "seconds": time.perf_counter() - started, "grown_mb": grown}))
"""


def _measure_load(path: Path) -> dict:
    """``load_dcenet(path)`` in a fresh interpreter: its error (or None), seconds and peak memory growth (MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_pth_declaring_2gib_is_refused_before_reading_it(tmp_path: Path):
    path = _huge_zip_pth(tmp_path / "huge.pth")
    assert path.stat().st_size < 3_000_000
    result = _measure_load(path)
    assert result["seconds"] < 2.0, result
    assert result["grown_mb"] < 300, result
    assert result["error"] is not None and "\n" not in result["error"]
    assert "huge.pth" in result["error"] and "e_conv1.weight" in result["error"]


def test_a_pickle_sharing_one_list_many_times_is_refused_quickly(tmp_path: Path):
    # 60 nested pairs of the same list: a few hundred bytes of pickle, 2^60 places when walked as a tree.
    shared: list = []
    for _ in range(60):
        shared = [shared, shared]
    path = tmp_path / "shared.pth"
    _write_zip(path, [_stored("archive/data.pkl", pickle.dumps(shared, protocol=2))])
    assert path.stat().st_size < 2000
    result = _measure_load(path)
    assert result["seconds"] < 2.0, result
    assert result["error"] is not None and "shared.pth" in result["error"] and "\n" not in result["error"]


def test_legacy_pth_declaring_more_than_it_holds_is_refused(tmp_path: Path):
    numel = GIB2 // 4
    storage = _Storage(numel, legacy=True)
    path = _legacy_pth(
        tmp_path / "legacy.pth", {"e_conv1.weight": _Tensor(storage, (32, 3, 3, 3))}, [(numel, b"0" * 64)]
    )
    result = _measure_load(path)
    assert result["error"] is not None and "legacy.pth" in result["error"]
    assert result["seconds"] < 2.0 and result["grown_mb"] < 300, result


def test_storage_sizes_are_checked_against_the_file(tmp_path: Path):
    """Shapes that fit DCE-Net but tensor data missing from (or shorter in) the file: refused, naming the tensor."""
    shapes = {k: tuple(v.shape) for k, v in DCENet().state_dict().items()}
    state = {k: _Tensor(_Storage(int(np.prod(s)), legacy=False), s) for k, s in shapes.items()}
    entries = [_stored("archive/data.pkl", _pickle_state(state)), _stored("archive/byteorder", b"little")]
    for i, (key, shape) in enumerate(shapes.items()):
        size = 4 * int(np.prod(shape)) // (2 if key == "e_conv4.weight" else 1)
        entries.append(_stored(f"archive/data/{i}", bytes(size)))
    _write_zip(tmp_path / "short.pth", entries)
    with pytest.raises(WeightsError, match=r"short\.pth.*e_conv4\.weight"):
        load_dcenet(tmp_path / "short.pth")
    _write_zip(tmp_path / "absent.pth", [e for e in entries if e[0] != "archive/data/3"])
    with pytest.raises(WeightsError, match=r"absent\.pth"):
        load_dcenet(tmp_path / "absent.pth")


def test_good_pth_files_still_load(tmp_path: Path):
    torch.manual_seed(0)
    model = DCENet(channels=16, iterations=4)
    torch.save({"model": model.state_dict(), "optimizer": {"lr": 1e-4, "betas": (0.9, 0.99)}}, tmp_path / "zip.pth")
    torch.save(model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    for path in (tmp_path / "zip.pth", tmp_path / "legacy.pth"):
        loaded = load_dcenet(path)
        assert (loaded.channels, loaded.iterations) == (16, 4)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_released_checkpoints_still_load(shared: Path):
    for name in ("scl-lle_official.pth", "zero-dce_official_epoch99.pth"):
        loaded = load_dcenet(shared / "weights" / "upstream" / name)
        assert (loaded.channels, loaded.iterations) == (32, 8)


# ------------------------------------------------------------------------------------- non-finite weights


def test_finite_but_huge_weights_are_refused(tmp_path: Path):
    torch.manual_seed(0)
    state = {k: v * 1e30 for k, v in DCENet().state_dict().items()}
    assert all(bool(torch.isfinite(v).all()) for v in state.values())
    torch.save(state, tmp_path / "huge_values.pth")
    with pytest.raises(WeightsError, match=r"huge_values\.pth.*non-finite curve maps"):
        load_dcenet(tmp_path / "huge_values.pth")


# ------------------------------------------------------------------------------------------------- ONNX

try:
    import onnx
    import onnxruntime  # noqa: F401
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # the pickle tests above still run
    onnx = None

from scl_lle.apps.export import export_onnx  # noqa: E402
from scl_lle.engine.backends import onnxruntime_session  # noqa: E402
from scl_lle.models.onnx import build_onnx  # noqa: E402

needs_onnx = pytest.mark.skipif(onnx is None, reason="the ONNX features need 'pip install onnx onnxruntime'")


def _graph_model(nodes: list, initializers: list, outputs: list, inputs: list | None = None) -> onnx.ModelProto:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    graph = helper.make_graph(nodes, "g", inputs or [image], outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _maps_output(name: str = "maps") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 24, "height", "width"])


def _conv24(output: str = "maps") -> tuple[list, list]:
    weight = numpy_helper.from_array(np.full((24, 3, 3, 3), 0.01, np.float32), "w")
    return [helper.make_node("Conv", ["image", "w"], [output], pads=[1, 1, 1, 1])], [weight]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


@needs_onnx
def test_onnx_sanity_graph_is_accepted(tmp_path: Path):
    """The hand-made graphs below differ from this accepted one only in what each refusal is about."""
    nodes, initializers = _conv24()
    session = onnxruntime_session(_save(_graph_model(nodes, initializers, [_maps_output()]), tmp_path / "ok.onnx"))
    (maps,) = session.run(None, {"image": np.zeros((1, 3, 8, 8), np.float32)})
    assert maps.shape == (1, 24, 8, 8)


def _bad_onnx_files(folder: Path, weights_file: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the one-line error must mention)."""
    files: dict[str, tuple[Path, str]] = {}
    rng = np.random.default_rng(0)
    random = folder / "random.onnx"
    random.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["random bytes"] = (random, "random.onnx")
    good = build_onnx(weights_file).SerializeToString()
    truncated = folder / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    files["truncated"] = (truncated, "truncated.onnx")
    nodes = [helper.make_node("Enhance", ["image"], ["maps"], domain="com.example.custom")]
    model = _graph_model(nodes, [], [_maps_output()])
    model.opset_import.append(helper.make_opsetid("com.example.custom", 1))
    files["custom domain"] = (_save(model, folder / "custom.onnx"), "com.example.custom")
    nodes, initializers = _conv24()
    initializers[0].ClearField("raw_data")
    initializers[0].ClearField("float_data")
    initializers[0].data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", str(24 * 27 * 4))):
        entry = initializers[0].external_data.add()
        entry.key, entry.value = key, value
    files["external data"] = (
        _save(_graph_model(nodes, initializers, [_maps_output()]), folder / "ext.onnx"),
        "external",
    )
    identity = _graph_model([helper.make_node("Identity", ["image"], ["same"])], [], [_maps_output("same")])
    files["returns the image"] = (_save(identity, folder / "identity.onnx"), "24")
    nodes, initializers = _conv24("full")
    nodes.append(helper.make_node("AveragePool", ["full"], ["maps"], kernel_shape=[2, 2], strides=[2, 2]))
    files["half size"] = (_save(_graph_model(nodes, initializers, [_maps_output()]), folder / "half.onnx"), "32")
    fixed = build_onnx(weights_file)  # the probe's own size: every other picture failed, one error per file
    for dim, size in zip(fixed.graph.input[0].type.tensor_type.shape.dim, (1, 3, 32, 32), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    files["fixed size"] = (_save(fixed, folder / "fixed.onnx"), "fixed size (1, 3, 32, 32)")
    nodes, initializers = _conv24("full")
    corner = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("s", [0, 0]), ("e", [32, 32]))]
    corner.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    nodes.append(helper.make_node("Slice", ["full", "s", "e", "axes"], ["maps"]))
    cropped = _graph_model(nodes, initializers + corner, [_maps_output()])
    files["cropped to the probe"] = (_save(cropped, folder / "cropped.onnx"), "(1, 3, 24, 40)")
    nodes, initializers = _conv24()
    extra = helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    two = _graph_model(nodes, initializers, [_maps_output()], inputs=[image, extra])
    files["two inputs"] = (_save(two, folder / "two.onnx"), "input")
    nan = build_onnx(weights_file)
    first = nan.graph.initializer[0]
    values = numpy_helper.to_array(first).copy()
    values.flat[0] = np.nan
    first.CopyFrom(numpy_helper.from_array(values, first.name))
    files["NaN initialiser"] = (_save(nan, folder / "nan.onnx"), first.name)
    torch.manual_seed(0)
    huge = DCENet()
    huge.load_state_dict({k: v * 1e30 for k, v in huge.state_dict().items()})
    files["huge initialisers"] = (_save(build_onnx(huge), folder / "huge.onnx"), "non-finite curve maps")
    return files


BAD_ONNX = [
    "random bytes",
    "truncated",
    "custom domain",
    "external data",
    "returns the image",
    "half size",
    "fixed size",
    "cropped to the probe",
    "two inputs",
    "NaN initialiser",
    "huge initialisers",
]


@needs_onnx
@pytest.mark.parametrize("case", BAD_ONNX)
def test_bad_onnx_files_are_refused_at_load_in_one_line(
    case: str, weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)  # a relative external-data path would be read from here
    Path("weights.bin").write_bytes(np.full(24 * 27, 0.01, np.float32).tobytes())
    path, mentioned = _bad_onnx_files(tmp_path, weights_file)[case]
    with pytest.raises(WeightsError) as caught:
        onnxruntime_session(path)
    message = str(caught.value)
    assert "\n" not in message and path.name in message and mentioned in message, message


@needs_onnx
@pytest.mark.parametrize("case", ["random bytes", "custom domain", "external data", "half size", "fixed size"])
def test_bad_onnx_files_exit_2_from_the_cli(case: str, weights_file: Path, tmp_path: Path, capsys):
    from PIL import Image

    path, _ = _bad_onnx_files(tmp_path, weights_file)[case]
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((16, 16, 3), 20, np.uint8)).save(tmp_path / "in" / "a.png")
    code = main(["enhance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-w", str(path), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and path.name in err


@needs_onnx
@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_an_onnx_graph_exported_for_batch_1_runs_a_picture_at_a_time(weights_file: Path, tmp_path: Path, backend: str):
    # torch.onnx.export with only height and width dynamic fixes the batch at 1: still usable, for videos too.
    from scl_lle import Enhancer

    dynamic = _save(build_onnx(weights_file), tmp_path / "dynamic.onnx")
    single = build_onnx(weights_file)
    batch = single.graph.input[0].type.tensor_type.shape.dim[0]
    batch.ClearField("dim_param")
    batch.dim_value = 1
    single = _save(single, tmp_path / "single.onnx")
    frames = torch.rand(3, 3, 20, 28, generator=torch.Generator().manual_seed(0)) * 0.3
    expected = Enhancer(dynamic, device="cpu", backend=backend, exposure="off")(frames)
    enhancer = Enhancer(single, device="cpu", backend=backend, exposure="off")
    torch.testing.assert_close(enhancer(frames), expected, rtol=0, atol=1e-6)


@needs_onnx
def test_onnx_weights_for_torch_say_what_to_do(weights_file: Path, tmp_path: Path, capsys):
    net = export_onnx(weights_file, tmp_path / "net.onnx")
    with pytest.raises(WeightsError, match=r"net\.onnx is an ONNX model; use it with --backend onnxruntime") as caught:
        load_dcenet(net)
    assert "pickle" not in str(caught.value) and "code" not in str(caught.value)
    renamed = tmp_path / "net.pth"
    renamed.write_bytes(net.read_bytes())
    with pytest.raises(WeightsError, match="is an ONNX model"):
        load_dcenet(renamed)
    assert main(["export", "--onnx", str(tmp_path / "again.onnx"), "-w", str(net)]) == 2
    assert "is an ONNX model" in capsys.readouterr().err
