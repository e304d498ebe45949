"""Enhancer weights: the project's safetensors format, foreign ``.pth`` state dicts, and named pretrained weights.

The project's own files are safetensors with string metadata (``format``, ``architecture``, ``channels``,
``iterations``, ``scl_lle_version`` and, for trained models, the training ``config`` as JSON). Foreign PyTorch
checkpoints (the released SCL-LLE and Zero-DCE ``.pth`` files) load with ``torch.load(weights_only=True)``, so a
file that would run code when unpickled is refused.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .model import DCENet

__all__ = [
    "DEFAULT_WEIGHTS",
    "PRETRAINED",
    "PretrainedWeights",
    "WeightsError",
    "list_pretrained",
    "load_dcenet",
    "load_state_dict",
    "read_metadata",
    "resolve_weights",
    "save_weights",
]

FORMAT_NAME = "scl-lle"
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
    return Path(str(resources.files("scl_lle") / "weights" / filename))


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


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a PyTorch checkpoint, on the CPU.

    PyTorch files load with ``weights_only=True``; common wrappers (``{"state_dict": ...}``, ``{"model": ...}``)
    and the ``module.`` prefix of DataParallel checkpoints are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        if _is_safetensors(path):
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"{path}: refused to load: it contains Python objects other than tensors, which could run code "
            f"when unpickled (weights_only=True). Details: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # any other decoding failure: corrupt or not a weights file
        raise WeightsError(f"{path}: not a readable weights file ({error})") from None
    for key in ("state_dict", "model", "params_ema", "params"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


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

    The network's width and number of curves are read from the tensors, so any DCE-Net variant loads; keys,
    shapes and dtypes that do not fit, and NaN or infinite values, give a :class:`WeightsError` naming the file.
    """
    path = resolve_weights(weights)
    state = load_state_dict(path)
    metadata = read_metadata(path)
    if metadata.get("architecture", ARCHITECTURE) != ARCHITECTURE:
        raise WeightsError(f"{path}: holds a '{metadata['architecture']}' model, not a {ARCHITECTURE}")
    try:
        channels = state["e_conv1.weight"].shape[0]
        iterations = state["e_conv7.weight"].shape[0] // 3
    except (KeyError, IndexError):
        channels, iterations = 32, 8
    model = DCENet(channels=channels, iterations=iterations)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path}: not DCE-Net weights: missing keys {missing or 'none'}, unexpected keys "
            f"{unexpected[:8] or 'none'}{' ...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise WeightsError(f"{path}: tensor shapes do not fit DCE-Net: {'; '.join(wrong)}")
    not_float = [k for k in expected if not state[k].is_floating_point()]
    if not_float:
        raise WeightsError(f"{path}: tensors must be floating point, found {state[not_float[0]].dtype} in {not_float}")
    not_finite = [k for k in expected if not bool(torch.isfinite(state[k]).all())]
    if not_finite:  # e.g. saved from a diverged training run: every output would be garbage
        raise WeightsError(f"{path}: weights are not finite (NaN or infinity) in {not_finite}")
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
    from . import __version__

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
