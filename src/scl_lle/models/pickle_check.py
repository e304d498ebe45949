"""A restricted unpickler that reads what a PyTorch file declares without reading any tensor data.

A PyTorch file (the zip format of ``torch.save``, or the legacy format of PyTorch < 1.6) holds a pickle of the saved
object, with tensors as references to storages stored beside it. :func:`declarations` unpickles it with every tensor
replaced by a :class:`Declared` record (storage, offset, shape, stride) and only containers, tensors, storage types,
dtypes and devices allowed: any other global is refused (:class:`Refused`) without being imported, so nothing in the
file can run. Every declared tensor must then lie inside a storage that the file holds, uncompressed, at its declared
size (:class:`StorageMismatch` otherwise), so a small file that declares gigabytes costs milliseconds to refuse.

:mod:`scl_lle.models.hub` turns these into one-line :class:`~scl_lle.models.hub.WeightsError` s naming the file.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch

__all__ = ["Declared", "Refused", "StorageMismatch", "declarations"]

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_MAX_PICKLE_BYTES = 64 * 2**20  # a state dict's pickle is kilobytes; the tensors are stored beside it


class _Storage(NamedTuple):
    """A storage as a checkpoint's pickle declares it; ``start``/``length``: the part a (legacy) view covers."""

    key: str
    dtype: torch.dtype
    numel: int  # elements of ``dtype``
    start: int = 0
    length: int = -1  # -1: up to ``numel``


class Declared(NamedTuple):
    """A tensor as a checkpoint's pickle declares it: ``shape`` and ``stride`` from ``offset`` into ``storage``."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def overrun(self) -> str | None:
        """Why the tensor does not lie inside its storage, or None."""
        length = self.storage.numel - self.storage.start if self.storage.length < 0 else self.storage.length
        if self.offset < 0 or any(s < 0 for s in self.shape) or any(s < 0 for s in self.stride):
            return "negative offset, size or stride"
        end = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        if 0 not in self.shape and (end > length or self.storage.start + length > self.storage.numel):
            return f"shape {self.shape} at offset {self.offset} reaches beyond its storage of {length} elements"
        return None


class Refused(pickle.UnpicklingError):
    """The pickle names something other than tensors and plain containers."""


def _declare(storage: Any, offset: Any, shape: Any, stride: Any, *_: Any) -> Declared:
    """``torch._utils._rebuild_tensor_v2`` for :class:`_Inspector`: a declaration instead of a tensor."""
    well_formed = (
        isinstance(storage, _Storage)
        and isinstance(shape, tuple)
        and isinstance(stride, tuple)
        and len(shape) == len(stride)
        and all(isinstance(v, int) for v in (offset, *shape, *stride))
    )
    if not well_formed:
        raise pickle.UnpicklingError("malformed tensor declaration")
    return Declared(storage, offset, shape, stride)


def _parameter(data: Any, *_: Any) -> Any:
    """``torch._utils._rebuild_parameter`` for :class:`_Inspector`: the declaration of its data."""
    return data


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


class _Inspector(pickle.Unpickler):
    """Unpickles a checkpoint's pickle with tensors as :class:`Declared` records: no storage is read and only
    containers, tensors, storage types, dtypes and devices are allowed (any other global is refused, not imported).
    ``storages`` collects the storages declared, by key."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = {} if storages is None else storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _declare
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "torch" and (name in ("Size", "device") or isinstance(vars(torch).get(name), torch.dtype)):
            return vars(torch)[name]
        raise Refused(f"unsupported global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and _ascii(pid[0]) == "storage"):
            raise Refused(f"unsupported persistent id {str(pid)[:60]}")
        dtype, key, numel = pid[1], str(_ascii(pid[2])), pid[4]
        if not isinstance(dtype, torch.dtype) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage declaration {str(pid)[:60]}")
        storage = self.storages.setdefault(key, _Storage(key, dtype, numel))
        if (storage.dtype, storage.numel) != (dtype, numel):
            raise pickle.UnpicklingError(f"storage {key} declared twice with different sizes")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # (view key, offset, size): a part of the storage (files of PyTorch < 0.4)
            if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
                raise pickle.UnpicklingError("malformed storage view")
            return storage._replace(start=view[1], length=view[2])
        return storage


def _declared_tensors(obj: Any) -> Iterator[tuple[str, Declared]]:
    """Every declared tensor in a checkpoint's object, with its place (``key.key``), in the order of a walk from
    the top. Each container is walked once: a pickle can share one list many times over (60 nested pairs of the
    same list, a few hundred bytes, are 2^60 places as a tree), so a shared one is named at its first place only."""
    stack: list[tuple[str, Any]] = [("", obj)]
    walked: set[int] = set()
    while stack:
        where, item = stack.pop()
        if isinstance(item, Declared):
            yield where, item
        elif isinstance(item, (dict, list, tuple)) and id(item) not in walked:
            walked.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend(reversed([(f"{where}.{key}" if where else str(key), value) for key, value in pairs]))


def _zip_problems(storages: dict[str, _Storage], archive: zipfile.ZipFile, prefix: str) -> dict[str, str]:
    """Storage key -> why the zip does not hold that storage's data as declared."""
    problems = {}
    for key, storage in storages.items():
        nbytes = storage.numel * storage.dtype.itemsize
        try:
            entry = archive.getinfo(f"{prefix}/data/{key}")
        except KeyError:
            problems[key] = f"its data ({nbytes} bytes) is not in the file"
            continue
        if entry.compress_type != zipfile.ZIP_STORED:
            problems[key] = f"its data ({nbytes} bytes) is compressed (torch.save stores tensors uncompressed)"
        elif entry.file_size != nbytes:
            problems[key] = f"declares {nbytes} bytes of data but the file holds {entry.file_size}"
    return problems


def _inspect_zip(path: Path) -> tuple[Any, dict[str, str]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        prefix = names[0].split("/")[0] if names else ""
        try:
            info = archive.getinfo(f"{prefix}/data.pkl")
        except KeyError:
            raise ValueError(f"a zip without {prefix}/data.pkl") from None
        if info.file_size > _MAX_PICKLE_BYTES:
            raise ValueError(f"{info.file_size} bytes of pickle")
        storages: dict[str, _Storage] = {}
        with archive.open(info) as handle:
            obj = _Inspector(handle, storages).load()
        return obj, _zip_problems(storages, archive, prefix)


def _inspect_legacy(path: Path) -> tuple[Any, dict[str, str]]:
    """The format of ``torch.save(..., _use_new_zipfile_serialization=False)`` (and of PyTorch < 1.6): pickles of
    a magic number, the protocol, system info, the object and its storage keys, then each storage's element count
    (8 bytes) and data."""
    from torch.serialization import MAGIC_NUMBER

    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(2)
        if not head or head == b"PK":
            raise ValueError("the file is empty" if not head else "a truncated or damaged zip archive")
        handle.seek(0)
        if _Inspector(handle).load() != MAGIC_NUMBER:
            raise ValueError("neither a PyTorch file nor safetensors")
        _Inspector(handle).load()  # protocol version
        info = _Inspector(handle).load()
        storages: dict[str, _Storage] = {}
        obj = _Inspector(handle, storages).load()
        keys = _Inspector(handle).load()
        order = "little" if not isinstance(info, dict) or info.get("little_endian", True) else "big"
        if not isinstance(keys, list) or not all(str(k) in storages for k in keys):
            raise ValueError("its list of storages does not match its tensors")
        problems, position = {}, handle.tell()
        for key in keys:
            storage = storages[str(key)]
            handle.seek(position)
            numel = int.from_bytes(handle.read(8).ljust(8, b"\xff"), order, signed=True)  # short read: -1
            position += 8 + max(numel, 0) * storage.dtype.itemsize
            if numel != storage.numel or position > size:
                nbytes = storage.numel * storage.dtype.itemsize
                problems[storage.key] = f"declares {nbytes} bytes of data but the file does not hold them"
        listed = {str(k) for k in keys}
        problems |= {k: "its data is not in the file" for k in storages if k not in listed}
    return obj, problems


class StorageMismatch(ValueError):
    """A declared tensor does not lie inside data that the file holds (the message says which and why)."""


def declarations(path: str | Path) -> Any:
    """The object a PyTorch file holds, tensors as :class:`Declared` records: no tensor data is read.

    Raises:
        Refused: the pickle names Python objects other than tensors and plain containers (none is imported).
        StorageMismatch: a declared tensor is not held by the file (missing, compressed, short or overrun data).
        Exception: anything else that stops decoding (empty, truncated, not a PyTorch file at all).
    """
    path = Path(path)
    obj, problems = _inspect_zip(path) if zipfile.is_zipfile(path) else _inspect_legacy(path)
    for where, tensor in _declared_tensors(obj):
        problem = problems.get(tensor.storage.key) or tensor.overrun()
        if problem:
            raise StorageMismatch(f"tensor {where}: {problem}")
    return obj
