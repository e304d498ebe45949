"""ONNX graphs made for a set of weights, kept on disk so that the next process need not make them again.

The CPU default (``backend="auto"``) runs DCE-Net as an ONNX Runtime graph, in int8 (:mod:`scl_lle.models.quantize`)
with its float32 twin beside it. Making them takes the ``onnx`` package (whose import alone took 1.5 s on one of
the project's CPUs, docs/PERFORMANCE.md) and the quantiser (about 0.3 s), in every process before its first
picture. So the graphs are written to :func:`cache_folder` the first time and read back after that, keyed by
what they are made from (:func:`graph_key`: the weights' values, this package's version and the source of its
modules that make them, and the versions of the tools), so that changed weights or tools make new ones.

A file read back is only a candidate: the engine runs it on its test image and takes it only if it gives the
network's curve maps (the float graph within 1e-4 of PyTorch's, the int8 graph within the quantiser's own
tolerance of the float graph); otherwise it makes the graph again and writes it over. Files are written atomically;
a folder that cannot be written is no error (the graphs are then made in each process, as without a cache). At most
:data:`MAX_GRAPHS` are kept, the least recently used removed first; other files in the folder are never touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
import re
from pathlib import Path

from .. import __version__
from ..io.files import atomic_write
from ..paths import cache_dir
from .dcenet import DCENet

__all__ = ["CACHE_ENV", "MAX_GRAPHS", "cache_folder", "graph_key", "load_graph", "store_graph"]

#: Environment variable naming the folder of the graph cache; ``off`` turns the cache off.
CACHE_ENV = "SCL_LLE_ONNX_CACHE"
#: Most graphs kept (each 0.1-0.4 MB); the least recently used go first.
MAX_GRAPHS = 32
_TOOLS = ("onnx", "onnxruntime")
_MAKERS = ("onnx.py", "quantize.py")  # the modules of this package that make the graphs
_NAME = re.compile(r"[0-9a-f]{64}\.onnx")  # the cache's own files (a key and the ending)


def cache_folder() -> Path | None:
    """``$SCL_LLE_ONNX_CACHE`` if set and not empty (``None`` if it is ``off``), else ``cache_dir()/onnx``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return None if env.lower() == "off" else Path(env).expanduser()
    return cache_dir() / "onnx"


@functools.cache
def _makers() -> str:
    """The installed ``onnx`` and ``onnxruntime`` versions and a digest of the modules that make the graphs."""
    versions = []
    for package in _TOOLS:
        try:
            versions.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package}=none")
    digest = hashlib.sha256()
    for module in _MAKERS:
        with contextlib.suppress(OSError):  # an install without sources: the package version stands for them
            digest.update(Path(__file__).with_name(module).read_bytes())
    return f"{' '.join(versions)} makers={digest.hexdigest()}"


def graph_key(model: DCENet, kind: str) -> str:
    """The cache key of the ``kind`` (``"float32"`` or ``"int8"``) graph of ``model``'s weights: a sha256 of
    their names, shapes and values, of ``kind``, of this package's version and the source of the modules that
    make the graphs (:mod:`scl_lle.models.onnx`, :mod:`scl_lle.models.quantize`), and of the installed ``onnx``
    and ``onnxruntime`` versions."""
    digest = hashlib.sha256()
    digest.update(f"scl-lle={__version__} kind={kind} {_makers()}\n".encode())
    for name, tensor in model.state_dict().items():
        values = tensor.detach().to(device="cpu").contiguous()
        digest.update(f"{name} {tuple(values.shape)} {values.dtype}\n".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def _file(key: str) -> Path | None:
    folder = cache_folder()
    return None if folder is None else folder / f"{key}.onnx"


def load_graph(key: str) -> bytes | None:
    """The graph stored under ``key``, or ``None`` (not stored, unreadable, or the cache off). Marks it as used."""
    path = _file(key)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    with contextlib.suppress(OSError):  # a read-only cache is still read
        os.utime(path)
    return data or None


def store_graph(key: str, data: bytes) -> None:
    """Store ``data`` under ``key`` (atomically; nothing happens where the folder cannot be written), then remove
    the least recently used graphs past :data:`MAX_GRAPHS`."""
    path = _file(key)
    if path is None:
        return
    try:
        with atomic_write(path) as temporary:
            temporary.write_bytes(data)
        graphs = [p for p in path.parent.glob("*.onnx") if _NAME.fullmatch(p.name)]  # never another's files
        graphs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in graphs[MAX_GRAPHS:]:
            old.unlink(missing_ok=True)
    except OSError:
        return
