"""The ONNX graph cache (``scl_lle.models.graph_cache``): a process after the first reads the float32 and int8
graphs of its weights instead of making them (without importing ``onnx``), takes a stored graph only if it gives
the network's curve maps, and never fails for want of a cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scl_lle import DCENet, Enhancer

pytest.importorskip("onnx", reason="the ONNX Runtime backends need 'pip install onnx onnxruntime'")
pytest.importorskip("onnxruntime", reason="the ONNX Runtime backends need 'pip install onnx onnxruntime'")

from scl_lle.engine import backends
from scl_lle.models import graph_cache
from scl_lle.models.graph_cache import CACHE_ENV, cache_folder, graph_key, load_graph, store_graph

SETTINGS = {"device": "cpu", "exposure": "off", "backend": "auto"}  # auto: int8, with its float32 twin


def _model(seed: int) -> DCENet:
    torch.manual_seed(seed)
    return DCENet().eval()


def _picture() -> torch.Tensor:
    return torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1)) * 0.3


def _graphs() -> dict[str, bytes]:
    folder = cache_folder()
    assert folder is not None
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.onnx"))}


def test_a_second_enhancer_reads_both_graphs_instead_of_making_them(monkeypatch: pytest.MonkeyPatch):
    model = _model(3)
    first = Enhancer(model, **SETTINGS)(_picture())
    stored = _graphs()
    assert set(stored) == {f"{graph_key(model, 'float32')}.onnx", f"{graph_key(model, 'int8')}.onnx"}

    def refuse(*args: object) -> bytes:
        raise AssertionError("the graph was made again")

    monkeypatch.setattr(backends, "build_onnx", refuse)
    monkeypatch.setattr(backends, "quantize_onnx", refuse)
    second = Enhancer(model, **SETTINGS)(_picture())
    assert torch.equal(first, second)
    with pytest.warns(UserWarning, match="made again"):  # other weights are not in the cache (auto: PyTorch)
        Enhancer(_model(4), **SETTINGS)


@pytest.mark.parametrize("damage", ["garbage", "other weights"])
def test_a_stored_graph_that_does_not_give_the_networks_maps_is_made_again(
    damage: str, monkeypatch: pytest.MonkeyPatch
):
    model, other = _model(5), _model(6)
    Enhancer(model, **SETTINGS)
    good = _graphs()
    folder = cache_folder()
    assert folder is not None
    if damage == "garbage":
        for name in good:
            (folder / name).write_bytes(b"\x08\x07not a graph")
    else:  # the other weights' graphs under this model's keys: valid graphs that give the wrong maps
        Enhancer(other, **SETTINGS)
        for kind in ("float32", "int8"):
            (folder / f"{graph_key(model, kind)}.onnx").write_bytes(load_graph(graph_key(other, kind)) or b"")
    picture = _picture()
    enhanced = Enhancer(model, **SETTINGS)(picture)
    assert {name: (folder / name).read_bytes() for name in good} == good  # made again and written over
    monkeypatch.setenv(CACHE_ENV, "off")
    assert torch.equal(enhanced, Enhancer(model, **SETTINGS)(picture))


def test_the_cache_can_be_off_and_a_folder_that_cannot_be_written_is_no_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    picture, model = _picture(), _model(7)
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_folder() is None
    expected = Enhancer(model, **SETTINGS)(picture)
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "graphs"))  # mkdir fails: the graphs are made and not kept
    assert torch.equal(Enhancer(model, **SETTINGS)(picture), expected)
    assert load_graph(graph_key(model, "int8")) is None
    monkeypatch.setenv("SCL_LLE_CACHE", str(tmp_path / "user cache"))
    for unset in ("", "  "):  # an empty variable is no folder (it would be the current one)
        monkeypatch.setenv(CACHE_ENV, unset)
        assert cache_folder() == tmp_path / "user cache" / "onnx"  # the default: under the user cache folder


def test_keys_follow_the_weights_the_kind_and_the_tools(monkeypatch: pytest.MonkeyPatch):
    model = _model(8)
    key = graph_key(model, "int8")
    assert key == graph_key(_model(8), "int8")  # the same values: the same key
    assert key != graph_key(_model(9), "int8") and key != graph_key(model, "float32")
    changed = _model(8)
    with torch.no_grad():
        changed.e_conv7.bias[0] += 1e-6
    assert graph_key(changed, "int8") != key
    makers = graph_cache._makers()
    assert "onnx=" in makers and "onnxruntime=" in makers and len(makers.split("makers=")[1]) == 64
    monkeypatch.setattr(graph_cache, "_makers", lambda: makers.replace("onnxruntime=", "onnxruntime=9.9+"))
    assert graph_key(model, "int8") != key  # another quantiser may make another graph
    monkeypatch.setattr(graph_cache, "_makers", lambda: makers[:-1] + ("0" if makers[-1] != "0" else "1"))
    assert graph_key(model, "int8") != key  # so may changed code in models/onnx.py or models/quantize.py


def test_the_least_recently_used_graphs_go_past_the_limit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(graph_cache, "MAX_GRAPHS", 3)
    folder = cache_folder()
    assert folder is not None
    a, b, c, d, e = (letter * 64 for letter in "abcde")  # keys are sha256 digests
    for age, key in enumerate((a, b, c, d)):
        store_graph(key, key[:1].encode())
        os.utime(folder / f"{key}.onnx", (1000 + age, 1000 + age))  # a oldest, d newest
    assert sorted(p.stem[0] for p in folder.glob("*.onnx")) == ["b", "c", "d"]  # a went when d came
    assert load_graph(b) == b"b"  # used now: the most recent
    store_graph(e, b"e")
    assert sorted(p.stem[0] for p in folder.glob("*.onnx")) == ["b", "d", "e"]
    assert not list(folder.glob(".*"))  # no temporary files left

    def read_only(*args: object) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(graph_cache.os, "utime", read_only)
    assert load_graph(d) == b"d"  # a cache that cannot be marked is still read


def test_files_in_the_folder_that_are_not_the_caches_own_are_never_removed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(graph_cache, "MAX_GRAPHS", 1)
    folder = cache_folder()
    assert folder is not None
    folder.mkdir(parents=True, exist_ok=True)
    theirs = [folder / "user_model.onnx", folder / f"{'A' * 64}.onnx", folder / "notes.txt"]
    for path in theirs:
        path.write_bytes(b"a user's file")
    first, second = "1" * 64, "2" * 64
    store_graph(first, b"old")
    os.utime(folder / f"{first}.onnx", (1000, 1000))
    store_graph(second, b"new")
    assert all(path.read_bytes() == b"a user's file" for path in theirs)
    assert load_graph(first) is None and load_graph(second) == b"new"  # only the cache's own file went


def test_a_process_after_the_first_does_not_import_onnx(tmp_path: Path):
    script = (
        "import sys, torch\n"
        "from scl_lle import Enhancer\n"
        "Enhancer(device='cpu', exposure='off')(torch.rand(1, 3, 32, 32))\n"
        "print('onnx' in sys.modules, 'onnxruntime.quantization' in sys.modules)\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
        for _ in range(2)
    ]
    assert [run.stdout.split() for run in runs] == [["True", "True"], ["False", "False"]], runs[1].stderr
