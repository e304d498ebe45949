"""Enhancement methods by name: the registry of what ``scl-lle evaluate --methods`` accepts.

A method maps a float tensor ``(1, 3, H, W)`` in [0, 1] to the same shape, on the evaluation device. Accepted
names and specs (see :func:`get_method`): the classical baselines of :mod:`scl_lle.evaluation.baselines`
(``identity``, ``gamma``, ``histeq``, ``clahe``, ``lime``); parametrised specs (``gamma:2.2``, ``clahe:3.0``);
DCE-Net weights (``dcenet:PATH``, a bare ``.pth`` / ``.safetensors`` path, named entries under ``methods:`` in the
registry YAML such as ``scl-lle-release`` and ``zero-dce``); the project's default model ``scl-lle`` (and
``scl-lle-curves``) when the package ships one; ``finished:SPEC``, ``local-weighting:SPEC`` and ``SPEC@EXPOSURE``
(``scl-lle@off``, ``zero-dce@auto``, ``scl-lle@0.45``) around a DCE-Net spec; ``LABEL=SPEC`` names a spec's column
in the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.exposure import AUTO, OFF, Exposure, parse_exposure
from . import baselines
from .datasets import RegistryError, UnknownNameError, load_registry, registry_path

__all__ = [
    "CURVES_ONLY",
    "FINISHED_PREFIX",
    "LOCAL_WEIGHTING_PREFIX",
    "Method",
    "describe_method",
    "get_method",
    "label_and_spec",
    "list_methods",
]

Method = Callable[[torch.Tensor], torch.Tensor]
"""An enhancement method: ``(1, 3, H, W)`` float in [0, 1] -> same shape, in [0, 1]."""

#: ``finished:SPEC``: the DCE-Net method SPEC with the enhancer's finishing (:mod:`scl_lle.engine.finishing`).
FINISHED_PREFIX = "finished:"
#: ``local-weighting:SPEC``: the DCE-Net method SPEC with the enhancer's ``local_weighting`` (at its exposure).
LOCAL_WEIGHTING_PREFIX = "local-weighting:"
#: The packaged default model without the finishing: the network's curves alone.
CURVES_ONLY = "scl-lle-curves"
_PARAMETRISED = {
    "gamma": ("gamma:G", "fixed gamma correction x ** (1/G)"),
    "clahe": ("clahe:CLIP", "CLAHE with clip limit CLIP (8x8 tiles)"),
}
_BUILTIN_HELP = {
    "identity": "the input unchanged (= raw)",
    "gamma": "adaptive gamma: mean luminance -> 0.45, never darkens",
    "histeq": "global histogram equalisation of the luminance",
    "clahe": "CLAHE on the luminance, 8x8 tiles, clip limit 2.0",
    "lime": "LIME: max-RGB illumination, structure-aware refinement, gamma 0.8",
}


def _shipped_default() -> bool:
    from ..models.hub import list_pretrained

    return bool(list_pretrained())


def list_methods(registry: str | os.PathLike[str] | None = None) -> list[str]:
    """Names accepted by :func:`get_method`: the baselines, the registry's named weights (when the registry is
    readable) and ``scl-lle`` when a default model ships. Specs (``gamma:2.2``, ``clahe:3``, ``dcenet:PATH``,
    a weights path) are accepted too."""
    names = list(baselines.BASELINES)
    try:
        names += [n for n in load_registry(registry)["methods"] if n not in names]
    except RegistryError:
        if registry is not None:
            raise
    if _shipped_default():
        names += ["scl-lle", CURVES_ONLY]
    return names


def label_and_spec(method: str) -> tuple[str, str]:
    """``"LABEL=SPEC"`` -> ``(LABEL, SPEC)`` (a short column name for a long spec); ``"SPEC"`` -> ``(SPEC, SPEC)``."""
    label, sep, spec = method.strip().partition("=")
    if sep and label.strip() and spec.strip() and "/" not in label and ":" not in label:
        return label.strip(), spec.strip()
    return method.strip(), method.strip()


def describe_method(name: str, registry: dict[str, Any] | None) -> str:
    """A one-line description of method spec ``name`` for the report (``""`` when there is none to give)."""
    if "@" in name:
        spec, setting = _split_exposure(name)
        if setting is not None:
            return f"{describe_method(spec, registry)}, exposure {setting}"
    for prefix, what in ((FINISHED_PREFIX, "finished"), (LOCAL_WEIGHTING_PREFIX, "local weighting")):
        if name.startswith(prefix):
            return f"{describe_method(name.removeprefix(prefix), registry)}, {what}"
    if name in _BUILTIN_HELP:
        return _BUILTIN_HELP[name]
    if registry and name in registry["methods"]:
        entry = registry["methods"][name] or {}
        return str(entry.get("description") or entry.get("weights") or "")
    if name.startswith("dcenet:") or name.endswith((".pth", ".safetensors")):
        return "DCE-Net weights " + name.removeprefix("dcenet:")
    kind = name.split(":", 1)[0]
    if kind in _PARAMETRISED:
        return _PARAMETRISED[kind][1].replace(_PARAMETRISED[kind][0].split(":")[1], name.split(":", 1)[1])
    if name == "scl-lle":
        return "the project's default model, finished as scl-lle enhance does"
    if name == CURVES_ONLY:
        return "the project's default model, its curves alone (--no-finish)"
    return ""


def _dcenet_method(
    weights: str | os.PathLike[str] | None,
    device: torch.device,
    finish: bool = False,
    exposure: Exposure = OFF,
    local_weighting: bool = False,
) -> Method:
    from ..engine.enhancer import Enhancer

    # PyTorch whatever is installed: the documented metrics come from one implementation of the network.
    enhancer = Enhancer(
        weights=weights,
        device=device,
        backend="torch",
        finish=finish,
        exposure=exposure,
        local_weighting=local_weighting,
    )

    def run(x: torch.Tensor) -> torch.Tensor:
        return enhancer(x)

    return run


def _on_device(fn: Callable[..., torch.Tensor], device: torch.device, **kwargs: Any) -> Method:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x.to(device), **kwargs)

    return run


def get_method(
    name_or_spec: str,
    device: str | torch.device = "cpu",
    registry: str | os.PathLike[str] | dict[str, Any] | None = None,
) -> Method:
    """The method ``name_or_spec`` as a callable ``(1, 3, H, W)`` in [0, 1] -> same shape, on ``device``.

    Accepted: a baseline name (``identity``, ``gamma``, ``histeq``, ``clahe``, ``lime``); ``gamma:G`` (fixed
    ``x ** (1/G)``); ``clahe:CLIP``; ``dcenet:PATH`` or a path to ``.pth`` / ``.safetensors`` weights; a name
    under ``methods:`` in the registry YAML; ``scl-lle`` (the packaged default model, finished as ``scl-lle
    enhance`` does, exposure auto); ``scl-lle-curves`` (its curves alone, exposure auto). Other DCE-Net methods
    run their curves alone at full strength, as released; ``finished:SPEC`` adds the finishing
    (:mod:`scl_lle.engine.finishing`) to any of them. ``SPEC@EXPOSURE`` sets the exposure of a DCE-Net method
    (:mod:`scl_lle.engine.exposure`): ``scl-lle@off`` (the network's curves at full strength), ``scl-lle@0.45``,
    ``zero-dce@auto``. ``local-weighting:SPEC`` turns on the enhancer's ``local_weighting`` (``--local-weighting``),
    which acts at a level only: ``local-weighting:zero-dce@auto``; a spec left at ``off`` is refused.
    Raises :class:`UnknownNameError` listing the known names.
    """
    from ..engine.backends import resolve_device

    dev = resolve_device(device)
    name = name_or_spec.strip()
    if name in baselines.BASELINES:
        return _on_device(baselines.BASELINES[name], dev)
    kind, _, arg = name.partition(":")
    if kind in _PARAMETRISED and arg:
        try:
            value = float(arg)
        except ValueError:
            raise UnknownNameError(f"method {name!r}: {kind} needs a number, as in {_PARAMETRISED[kind][0]}") from None
        if kind == "gamma":
            return _on_device(baselines.gamma_correction, dev, gamma=value)
        return _on_device(baselines.clahe, dev, clip_limit=value)
    name, exposure = _split_exposure(name)
    name, prefixes = _split_prefixes(name)
    local = LOCAL_WEIGHTING_PREFIX in prefixes
    if FINISHED_PREFIX in prefixes:
        finish, default = True, OFF
    else:  # the packaged model as enhance runs it; other weights as released
        finish, default = name == "scl-lle", AUTO if name in ("scl-lle", CURVES_ONLY) else OFF
    if prefixes and name in baselines.BASELINES:
        raise UnknownNameError(
            f"method {name_or_spec!r}: {' and '.join(sorted(prefixes))} apply to DCE-Net methods only"
        )
    weights = _dcenet_weights(name, registry)
    exposure = exposure or default
    if local and exposure == OFF:
        raise UnknownNameError(f"method {name_or_spec!r}: local weighting acts at a level; use @auto or @E, not off")
    return _dcenet_method(weights, dev, finish=finish, exposure=exposure, local_weighting=local)


def _split_prefixes(name: str) -> tuple[str, set[str]]:
    """``"finished:local-weighting:SPEC"`` (the prefixes in either order, each optional) -> ``(SPEC, prefixes)``."""
    prefixes: set[str] = set()
    while prefix := next((p for p in (FINISHED_PREFIX, LOCAL_WEIGHTING_PREFIX) if name.startswith(p)), None):
        prefixes.add(prefix)
        name = name.removeprefix(prefix).strip()
    return name, prefixes


def _split_exposure(name: str) -> tuple[str, Exposure | None]:
    """``"SPEC@EXPOSURE"`` -> ``(SPEC, exposure)`` (``auto``, ``off`` or a number in (0, 1)); else ``(name, None)``."""
    spec, sep, setting = name.rpartition("@")
    if not sep or not spec.strip():
        return name, None
    try:
        return spec.strip(), parse_exposure(setting)
    except ValueError as error:
        raise UnknownNameError(f"method {name!r}: {error}") from None


def _dcenet_weights(name: str, registry: str | os.PathLike[str] | dict[str, Any] | None) -> Path | None:
    """The weights file of a DCE-Net method spec (``None``: the packaged default model); raises
    :class:`UnknownNameError` when ``name`` names no DCE-Net."""
    kind, _, arg = name.partition(":")
    if kind == "dcenet" and arg:
        return Path(arg).expanduser()
    if name.endswith((".pth", ".safetensors")) and Path(name).expanduser().is_file():
        return Path(name).expanduser()
    if name in ("scl-lle", CURVES_ONLY):
        return None
    reg: dict[str, Any] | None
    if isinstance(registry, dict):
        reg = registry
    else:
        try:
            reg = load_registry(registry)
        except RegistryError:
            if registry is not None:
                raise
            reg = None
    if reg is not None and name in reg["methods"]:
        entry = reg["methods"][name] or {}
        if "weights" not in entry:
            raise RegistryError(f"{reg['path']}: method {name!r} needs 'weights: PATH'")
        path = registry_path(entry["weights"], f"method {name!r}", Path(reg["path"]).parent)
        if not path.is_file():
            raise RegistryError(f"method {name!r}: weights file not found: {path}")
        return path
    known = list(baselines.BASELINES) + (list(reg["methods"]) if reg else [])
    if _shipped_default():
        known += ["scl-lle", CURVES_ONLY]
    raise UnknownNameError(
        f"unknown method {name!r}; known: {', '.join(known)}; or a spec: gamma:G, clahe:CLIP, dcenet:PATH, "
        f"a .pth/.safetensors path, {FINISHED_PREFIX}SPEC, {LOCAL_WEIGHTING_PREFIX}SPEC, SPEC@auto|off|E"
    )
