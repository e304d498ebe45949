"""Shared fixtures. Tests that need ``../shared`` (data sets, weights, reference values) use ``shared``
and are skipped with a reason when it is absent."""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path | None:
    env = os.environ.get("SCL_LLE_SHARED")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate.resolve() if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder (``$SCL_LLE_SHARED`` or ``../shared`` beside the repository)."""
    path = _find_shared()
    if path is None:
        pytest.skip("../shared is absent (set SCL_LLE_SHARED to the shared data folder)")
    return path


_RUN_GRAPHS = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Until a test's own graph cache is set (below), and for fixtures made before it (module-scoped enhancers),
    the ONNX graph cache is a folder of this test run's, not the user's."""
    import tempfile

    config.stash[_RUN_GRAPHS] = os.environ["SCL_LLE_ONNX_CACHE"] = tempfile.mkdtemp(prefix="scl-lle-test-graphs-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The test run's graph cache folder goes with the run."""
    import shutil

    if (folder := config.stash.get(_RUN_GRAPHS, None)) is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_onnx_graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test starts with an empty ONNX graph cache of its own (``scl_lle.models.graph_cache``), passed on to
    the processes it starts: no test sees graphs that another stored, and none writes to the user's cache. (Its
    own patch: a test's ``monkeypatch.undo()`` leaves it in place.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCL_LLE_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx-graphs")))
        yield


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, randomly initialised DCE-Net saved in the project's safetensors format."""
    import torch

    from scl_lle import DCENet, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.safetensors"
    return save_weights(DCENet(), path, metadata={"note": "random test weights"})


@pytest.fixture(scope="session")
def official_weights(shared: Path) -> Path:
    """The authors' released SCL-LLE enhancer (``../shared/weights/upstream``)."""
    return shared / "weights" / "upstream" / "scl-lle_official.pth"


def synthetic_training_data(root: Path) -> dict[str, Any]:
    """Tiny labelled scenes and exposure pools written under ``root`` ('folders' layout) -> the ``data:`` section.

    Six 48x48 scenes with three label regions, three 48x48 images each of positives (~0.5), under (~0.05), over
    (~0.95) and validation (~0.08); all seeded.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "labels", "positives", "under", "over", "validation"):
        (root / sub).mkdir(parents=True)
    for i in range(6):
        labels = np.zeros((48, 48), np.uint8)
        labels[:, 24:] = 1
        labels[30:, :] = 2
        base = np.array([0.8, 0.5, 0.3])[labels] + rng.normal(0, 0.05, (48, 48))
        rgb = np.clip(base[..., None] * np.array([1.0, 0.9, 0.8]), 0, 1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray(labels).save(root / "labels" / f"s{i}.png")
    for folder, level in (("positives", 0.5), ("under", 0.05), ("over", 0.95), ("validation", 0.08)):
        for i in range(3):
            pixels = np.clip(level + rng.normal(0, 0.1, (48, 48, 3)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(root / folder / f"p{i}.png")
    return {
        "labelled": {
            "layout": "folders",
            "images": str(root / "images"),
            "labels": str(root / "labels"),
            "void_index": 3,
        },
        "positives": [str(root / "positives")],
        "positives_per_batch": 2,
        "negatives": [{"path": str(root / "under"), "per_batch": 1}, {"path": str(root / "over"), "per_batch": 1}],
        "crop_size": 32,
    }


def tiny_training_config(tmp_path: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """A complete training config on :func:`synthetic_training_data` under ``tmp_path``: 20 steps of batch 2,
    random VGG16 guide, no segmentation loss, outputs in ``tmp_path/runs/tiny``; ``overrides`` applied last."""
    from scl_lle.train.config import DEFAULTS, apply_overrides

    config = copy.deepcopy(DEFAULTS)
    config["data"] = synthetic_training_data(tmp_path / "data")
    return apply_overrides(
        config,
        [
            f"output_root={tmp_path / 'runs'}",
            "name=tiny",
            "batch_size=2",
            "steps=20",
            "checkpoint_every=10",
            "sample_every=10",
            "log_every=5",
            "guides.vgg16.allow_random_init=true",
            "guides.vgg16.weights=null",
            "loss.weights.segmentation=0",
            "optim.lr=1e-3",
            "optim.ema_decay=0.9",
            *overrides,
        ],
    )


def http_request(
    app: Any, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request to a running ``scl-lle serve`` app on a fresh connection: (status, headers, body)."""
    import http.client

    host, port = app.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[Any]:
    """Run a ``scl-lle serve`` app (from ``make_server``) on a thread for the block; shut down and closed after."""
    thread = threading.Thread(target=app.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.shutdown()
        app.server_close()
        thread.join(5)


@pytest.fixture()
def server_factory(weights_file: Path) -> Iterator[Any]:
    """Make ``scl-lle serve`` apps: ``make(limits, trained=False, serving=True, local_weighting=False)``,
    ``limits`` a dict of ``ServeLimits`` fields, on any free port, with random weights (or with ``trained`` the
    embedded default model, which brightens dark photos to the exposure asked), serving on a thread unless
    ``serving=False``; all shut down and closed after the test."""
    from scl_lle.apps.serve import ServeLimits, make_server

    started: list[tuple[Any, threading.Thread]] = []

    def make(
        limits: dict[str, Any], *, trained: bool = False, serving: bool = True, local_weighting: bool = False
    ) -> Any:
        weights = None if trained else weights_file
        settings = {"device": "cpu", "limits": ServeLimits(**limits), "local_weighting": local_weighting}
        app = make_server("127.0.0.1", 0, weights=weights, **settings)
        thread = threading.Thread(target=app.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        if serving:
            thread.start()
        started.append((app, thread))
        return app

    yield make
    for app, thread in started:
        if thread.is_alive():
            app.shutdown()
            thread.join(5)
        app.server_close()


def write_noise_clip(path: Path, width: int, height: int, low: int, high: int, frames: int = 24) -> Path:
    """A short H.264 clip at 12 fps of seeded uniform noise in [low, high) (needs PyAV)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        rng = np.random.default_rng(0)
        for t in range(frames):
            pixels = rng.integers(low, high, (height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
