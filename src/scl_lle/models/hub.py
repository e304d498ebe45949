"""Weights files: the one reader of state dicts and checkpoints, the project's format, and named pretrained weights.

The project's own files are safetensors with string metadata (``format``, ``architecture``, ``channels``,
``iterations``, ``scl_lle_version`` and, for trained models, the training ``config`` as JSON). Foreign PyTorch
checkpoints (the released SCL-LLE and Zero-DCE ``.pth`` files, zip or the older pickle format) load with
``torch.load(weights_only=True)``, so a file that would run code when unpickled is refused.

Every file is read here, timm style: :func:`load_state_dict` (model weights, any format) and
:func:`load_checkpoint` (training checkpoints, which also hold optimiser state). Each inspects the file before any
tensor data is read: its pickle (:mod:`scl_lle.models.pickle_check`) or safetensors header is parsed with tensors
as declarations (storage, offset, shape), every declared storage must be stored, uncompressed, in the file with
exactly its declared size, and :func:`load_dcenet` checks the keys and shapes against DCE-Net's. So a small file
that declares gigabytes costs milliseconds, not the gigabytes. Loaded weights must then be finite and give finite
curve maps on a fixed test image (:func:`probe_image`). Each model filters and checks the keys it needs itself.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..io.files import atomic_write
from .dcenet import DCENet
from .pickle_check import Declared, Refused, StorageMismatch, declarations

__all__ = [
    "DEFAULT_WEIGHTS",
    "PRETRAINED",
    "PretrainedWeights",
    "WeightsError",
    "inspect_pickle",
    "list_pretrained",
    "load_checkpoint",
    "load_dcenet",
    "load_state_dict",
    "read_metadata",
    "resolve_weights",
    "save_weights",
]

FORMAT_NAME = "scl-lle"
_REFUSED = (
    "refused to load: it contains Python objects other than tensors, which could run code when unpickled "
    "(weights_only=True)."
)
ARCHITECTURE = "dce-net"


class WeightsError(ValueError):
    """A weights file is missing, unreadable, unsafe, or does not fit the network."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A named set of weights shipped inside the package (``scl_lle/weights/<filename>``)."""

    name: str
    filename: str
    description: str


#: Named weights, looked up by :func:`resolve_weights`. ``weights=None`` means :data:`DEFAULT_WEIGHTS`.
PRETRAINED: dict[str, PretrainedWeights] = {
    "scl-lle": PretrainedWeights(
        name="scl-lle",
        filename="scl-lle.safetensors",
        description="the project's default SCL-LLE enhancer (trained on the data of ../shared)",
    ),
}
DEFAULT_WEIGHTS = "scl-lle"


def list_pretrained() -> list[str]:
    """Names of the pretrained weights this installation ships (those whose file is present)."""
    return [name for name, entry in PRETRAINED.items() if _packaged(entry.filename).is_file()]


def _packaged(filename: str) -> Path:
    return Path(str(resources.files("scl_lle.models") / "weights" / filename))


def resolve_weights(weights: str | os.PathLike[str] | None) -> Path:
    """Turn ``None``, a pretrained name or a path into the path of an existing weights file."""
    name = DEFAULT_WEIGHTS if weights is None else weights
    if isinstance(name, str) and name in PRETRAINED:
        path = _packaged(PRETRAINED[name].filename)
        if not path.is_file():
            raise WeightsError(
                f"no trained '{name}' model ships with this version of scl-lle yet; pass a weights file "
                "instead (CLI: --weights PATH; Python: Enhancer(weights=PATH)), for example the authors' "
                "released SCL-LLE checkpoint or one made by 'scl-lle train'"
            )
        return path
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(PRETRAINED))
        raise WeightsError(f"{path}: no such weights file (pretrained names: {known})")
    return path


def is_onnx_file(weights: object) -> bool:
    """Whether ``weights`` names an ``.onnx`` file (which only the ONNX Runtime backend can run)."""
    return isinstance(weights, (str, os.PathLike)) and str(weights).lower().endswith(".onnx")


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (or its type when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def probe_image(height: int = 32, width: int = 32) -> torch.Tensor:
    """The fixed test input of the load-time checks: ``(1, 3, height, width)`` uniform in [0, 1] (seed 0)."""
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))


_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]  # name -> (shape, dtype)


def _unwrap(state: Any) -> Any:
    """The state dict inside common wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ...)."""
    for key in ("state_dict", "model", "params_ema", "params"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def _state_of(path: Path, state: Any, kind: type) -> dict[str, Any]:
    """``state`` unwrapped, checked to be ``{str: kind}``, with DataParallel's ``module.`` prefix removed."""
    state = _unwrap(state)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, kind) for k, v in state.items()):
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def inspect_pickle(path: str | os.PathLike[str], kind: str = "weights file") -> Any:
    """The object a PyTorch file (zip or legacy format) holds, tensors as declarations: no tensor data is read.

    Every declared tensor must lie inside a storage that the file holds, uncompressed, at its declared size
    (:func:`scl_lle.models.pickle_check.declarations`). Raises :class:`WeightsError` (one line naming the file;
    ``kind`` names what it should be) for a file holding Python objects other than tensors and plain containers
    (refused without importing them), and for any other problem.
    """
    path = Path(path)
    try:
        return declarations(path)
    except Refused as error:
        raise WeightsError(f"{path}: {_REFUSED} Details: {error}") from None
    except StorageMismatch as error:
        raise WeightsError(f"{path}: {error}") from None
    except Exception as error:  # any other decoding failure: corrupt, truncated, or not a PyTorch file at all
        raise WeightsError(f"{path}: not a readable {kind} ({_first_line(error)})") from None


def _torch_load(path: Path, kind: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of a file that :func:`inspect_pickle` accepted, errors as one line."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(f"{path}: {_REFUSED} Details: {_first_line(error)}") from None
    except Exception as error:  # damaged in a way the inspection could not see
        raise WeightsError(f"{path}: not a readable {kind} ({_first_line(error)})") from None


def load_checkpoint(
    path: str | os.PathLike[str], *, kind: str = "checkpoint", map_location: str | torch.device = "cpu"
) -> Any:
    """The object a PyTorch file holds (tensors, numbers, strings and containers of them: a training checkpoint).

    The file is inspected first (:func:`inspect_pickle`: nothing is imported and no tensor data is read), then
    loaded with ``torch.load(weights_only=True)`` onto ``map_location``. Every problem is one
    :class:`WeightsError` line naming the file; ``kind`` names what it should be (``not a readable <kind>``).
    """
    path = Path(path)
    inspect_pickle(path, kind)
    return _torch_load(path, kind, map_location)


def _declared_safetensors(path: Path) -> Shapes:
    from safetensors import safe_open

    try:  # the header only; safetensors checks that it fits the file
        with safe_open(str(path), framework="pt") as handle:
            slices = {k: handle.get_slice(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)
            shapes = {
                k: (tuple(s.get_shape()), _SAFETENSORS_DTYPES.get(s.get_dtype(), torch.uint8))
                for k, s in slices.items()
            }
    except Exception as error:
        raise WeightsError(f"{path}: not a readable weights file ({_first_line(error)})") from None
    return {k.removeprefix("module."): v for k, v in shapes.items()}


def _looks_like_onnx(path: Path) -> bool:
    """An ``.onnx`` name, or a protobuf's first byte (ModelProto field 1, ``ir_version``), which no pickle has."""
    with open(path, "rb") as handle:
        return is_onnx_file(path) or handle.read(1) == b"\x08"


def _declared(path: Path) -> Shapes:
    """Names, shapes and dtypes of the state dict in ``path``, checked against the file, without reading tensor
    data. Raises :class:`WeightsError` (one line naming the file) for any file that is not readable weights."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if _is_safetensors(path):
        return _declared_safetensors(path)
    if _looks_like_onnx(path):
        raise WeightsError(
            f"{path} is an ONNX model; use it with --backend onnxruntime (scl-lle enhance), "
            "or give the .safetensors/.pth weights"
        )
    return {k: (v.shape, v.storage.dtype) for k, v in _state_of(path, inspect_pickle(path), Declared).items()}


def _read(path: Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a file that :func:`_declared` accepted."""
    if not _is_safetensors(path):
        return _state_of(path, _torch_load(path, "weights file"), torch.Tensor)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as error:  # any other decoding failure: corrupt or not a weights file
        raise WeightsError(f"{path}: not a readable weights file ({_first_line(error)})") from None
    return _state_of(path, state, torch.Tensor)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a PyTorch checkpoint, on the CPU: the one reader of model weights.

    PyTorch files load with ``weights_only=True``; common wrappers (``{"state_dict": ...}``, ``{"model": ...}``)
    and the ``module.`` prefix of DataParallel checkpoints are unwrapped. The file is inspected first
    (:func:`_declared`), so hostile pickles and declared tensors that the file does not hold are refused before
    anything is read. Each model then checks (and filters) the keys it needs: :func:`load_dcenet` here,
    :func:`scl_lle.models.segmenter.load_segmenter`, :func:`scl_lle.models.vgg.load_vgg16_state_dict`.
    Raises :class:`WeightsError` (one line naming the file).
    """
    path = Path(path)
    _declared(path)
    return _read(path)


def _dcenet_shape(shapes: Shapes) -> tuple[int, int]:
    """(channels, iterations) of the DCE-Net that ``shapes`` describe; (32, 8) where they do not say."""
    conv1 = shapes.get("e_conv1.weight", ((),))[0]
    conv7 = shapes.get("e_conv7.weight", ((),))[0]
    channels = conv1[0] if len(conv1) == 4 and conv1[1:] == (3, 3, 3) and 0 < conv1[0] <= 2**16 else 32
    fits = len(conv7) == 4 and conv7[0] % 3 == 0 and 0 < conv7[0] <= 3 * 2**16
    return channels, conv7[0] // 3 if fits else 8


@functools.lru_cache(maxsize=8)
def _expected_shapes(channels: int, iterations: int) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only, no memory
        return {k: tuple(v.shape) for k, v in DCENet(channels, iterations).state_dict().items()}


def _check_fit(path: Path, shapes: Shapes) -> tuple[int, int]:
    """Check names, shapes and dtypes against DCE-Net; returns its (channels, iterations)."""
    channels, iterations = _dcenet_shape(shapes)
    expected = _expected_shapes(channels, iterations)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path}: not DCE-Net weights: missing keys {missing or 'none'}, unexpected keys "
            f"{unexpected[:8] or 'none'}{' ...' if len(unexpected) > 8 else ''}"
        )
    wrong = [f"{k} {shapes[k][0]} (expected {v})" for k, v in expected.items() if shapes[k][0] != v]
    if wrong:
        raise WeightsError(f"{path}: tensor shapes do not fit DCE-Net: {'; '.join(wrong)}")
    not_float = [k for k in expected if not shapes[k][1].is_floating_point]
    if not_float:
        raise WeightsError(f"{path}: tensors must be floating point, found {shapes[not_float[0]][1]} in {not_float}")
    return channels, iterations


def check_probe(name: object, maps: torch.Tensor, channels: int) -> None:
    """Refuse curve maps estimated on :func:`probe_image` that do not have the shape ``(1, channels, 32, 32)`` or
    are not finite (:class:`WeightsError` naming ``name``)."""
    expected = (1, channels, 32, 32)
    if tuple(maps.shape) != expected:
        raise WeightsError(
            f"{name}: gives an output of shape {tuple(maps.shape)} for a (1, 3, 32, 32) test image; the engine needs "
            f"curve maps of shape {expected}"
        )
    if not bool(torch.isfinite(maps).all()):
        raise WeightsError(
            f"{name}: weights give non-finite curve maps (NaN or infinity) on a test image; they are unusable "
            "(diverged training or corrupted values?)"
        )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for other formats)."""
    path = Path(path)
    if not _is_safetensors(path):
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_dcenet(weights: str | os.PathLike[str] | None = None) -> DCENet:
    """Build a :class:`DCENet` from weights (``None`` = the default model, a pretrained name, or a path).

    The network's width and number of curves are read from the tensors, so any DCE-Net variant loads. Keys, shapes
    and dtypes are checked before any tensor data is read; then NaN or infinite values, and weights whose curve
    maps on a test image are not finite, are refused too. Every refusal is a :class:`WeightsError` naming the file.
    """
    path = resolve_weights(weights)
    declared = _declared(path)
    metadata = read_metadata(path)
    if metadata.get("architecture", ARCHITECTURE) != ARCHITECTURE:
        raise WeightsError(f"{path}: holds a '{metadata['architecture']}' model, not a {ARCHITECTURE}")
    _check_fit(path, declared)
    state = _read(path)
    channels, iterations = _check_fit(path, {k: (tuple(v.shape), v.dtype) for k, v in state.items()})
    not_finite = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if not_finite:  # e.g. saved from a diverged training run: every output would be garbage
        raise WeightsError(f"{path}: weights are not finite (NaN or infinity) in {not_finite}")
    model = DCENet(channels=channels, iterations=iterations)
    # Finite but huge weights overflow on the way through the network: probe it. Subnormal weights (the released
    # SCL-LLE checkpoint has some) are read as 0 for the probe, where they would only make it slow (200 ms instead
    # of 4 on x86 CPUs unless denormals are flushed, see inference.py); zeroing them changes no finite result to a
    # non-finite one unless an activation is already infinite.
    tiny = torch.finfo(torch.float32).tiny
    model.load_state_dict({k: torch.where(v.abs() < tiny, 0.0, v.float()) for k, v in state.items()})
    with torch.no_grad():
        check_probe(path, model.curve_maps(probe_image()), 3 * iterations)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model


def save_weights(
    model: DCENet,
    path: str | os.PathLike[str],
    *,
    config: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` as safetensors with metadata, atomically; returns the path."""
    from .. import __version__

    info = {
        "format": FORMAT_NAME,
        "architecture": ARCHITECTURE,
        "channels": str(model.channels),
        "iterations": str(model.iterations),
        "scl_lle_version": __version__,
    }
    if config is not None:
        info["config"] = json.dumps(config, sort_keys=True, default=str)
    info.update(metadata or {})
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as temporary:
        save_file(tensors, str(temporary), metadata=info)
    return Path(path)
