"""Experiment configuration: one YAML file describes a whole training run (BasicSR style).

:data:`DEFAULTS` lists every key with its default; a config file only states what differs. ``key.sub=value``
overrides (the value parsed as YAML) are applied last. Unknown keys are errors, so a typo never silently
falls back to a default. Strings may use environment variables (``${SCL_LLE_SHARED}``), expanded where paths
are used.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULTS", "ConfigError", "apply_overrides", "expand_path", "load_config", "merge"]


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


#: Every configuration key with its default. ``data`` is described in :mod:`scl_lle.train.data`.
DEFAULTS: dict[str, Any] = {
    "name": "scl_lle",  # the run folder is <output_root>/<name>
    "output_root": "runs",
    "seed": 0,
    "device": "auto",
    "steps": 20000,
    "stop_after": None,  # stop (and export) at this step; the schedule still runs to `steps` (cheap ablations)
    "batch_size": 8,
    "deterministic": True,  # deterministic algorithms (exact on CPU; may be slower on GPUs)
    "amp": "auto",  # auto: bf16 (or fp16) autocast on CUDA, fp32 elsewhere; or off | bf16 | fp16
    "data": {},
    "model": {"channels": 32, "iterations": 8, "init_std": 0.02, "init_weights": None},
    "guides": {
        "vgg16": {"weights": None, "allow_random_init": False},
        "segmenter": {"name": "espnet-camvid", "weights": None},
    },
    "loss": {
        "weights": {
            "tv": 200.0,
            "colour": 8.0,
            "semantic": 1.0,
            "contrastive": 10.0,
            "texture": 5.0,
            "feature": 1.0,
            "segmentation": 1.0,
            "exposure": 0.0,
            "keep": 0.0,  # keep_well_lit_loss: penalise changes to inputs brighter than keep_above
            "tone": 0.0,  # tone_prior_loss: stay near an exposure-adaptive gamma curve of the input
        },
        "semantic_variant": "class",  # class (the paper's intent) | upstream (the released formula)
        "segmentation_detach": False,  # true reproduces the release: no segmentation gradient
        "contrastive_margin": 0.3,
        "grey_distance": "pixel",  # pixel (the paper's) | sorted (compare brightness distributions)
        "texture_margin": 0.04,
        "exposure_patch": 16,
        "exposure_target": 0.6,
        "keep_above": 0.3,
        "tone_target": 0.45,  # mean luminance the tone term's gamma curve maps dark inputs to
        "num_classes": None,  # classes of the label maps; default: the segmenter's, else void_index + 1
        "pseudo_labels": False,  # label real unlabelled lows with the segmenter (else semantic terms skip them)
    },
    "optim": {
        "lr": 1.0e-4,
        "weight_decay": 1.0e-4,
        "grad_clip": 0.1,
        "schedule": "constant",  # constant | cosine
        "warmup_steps": 0,
        "min_lr_ratio": 0.1,  # cosine floor, as a fraction of lr
        "ema_decay": 0.0,  # > 0: export, validate and show an exponential moving average of the weights
    },
    # The exposure the losses score the outputs at, as the enhancer applies it (docs/MODEL_CARD.md, "Exposure"):
    # off (the curves at full strength, the paper's) | auto | a level E | [low, high], a level drawn per image.
    # A share `exposure_share` of each batch is scored at it, the rest at full strength.
    "exposure": "off",
    "exposure_share": 0.5,
    "max_bad_steps": 20,  # consecutive non-finite losses before training stops
    "log_every": 10,
    "checkpoint_every": 500,
    "keep_checkpoints": 3,
    "sample_every": 500,
    "validation": {
        "folder": None,  # real low-light photos; NIQE and mean brightness of the outputs are logged
        "every": 500,
        "max_images": 8,
        "max_side": 512,
        "brightness_range": [0.35, 0.55],  # best.safetensors: lowest NIQE among validations in this range
    },
}

# Sections whose keys are free-form (validated by their own modules).
_OPEN_SECTIONS = {("data",), ("model", "init_weights")}


# YAML 1.1 reads "3e-4" (no dot) as a string; people mean a number.
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _parse(text: str) -> Any:
    """YAML-parse ``text``, also reading exponent floats without a dot (``3e-4``) as numbers."""
    return _numbers(yaml.safe_load(text))


def _numbers(value: Any) -> Any:
    if isinstance(value, str) and _FLOAT.match(value):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def merge(base: dict[str, Any], update: dict[str, Any], *, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; keys unknown to ``base`` raise :class:`ConfigError`."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        here = (*path, key)
        if path in _OPEN_SECTIONS or here in _OPEN_SECTIONS:
            current = result.get(key)
            both = isinstance(current, dict) and isinstance(value, dict)
            result[key] = _merge_free(current, value) if both else copy.deepcopy(value)
            continue
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown setting '{'.'.join(here)}'{hint}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            result[key] = merge(base[key], value, path=here)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_free(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge without key checks (sections validated by their own modules)."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        both = isinstance(result.get(key), dict) and isinstance(value, dict)
        result[key] = _merge_free(result[key], value) if both else copy.deepcopy(value)
    return result


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (value parsed as YAML: ``3e-4``, ``true``, ``[1, 2]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, _, text = item.partition("=")
        update: dict[str, Any] = {}
        cursor = update
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        try:
            cursor[parts[-1]] = _parse(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override '{item}': cannot parse the value ({error})") from None
        config = merge(config, update)
    return config


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML experiment file over :data:`DEFAULTS`, then apply overrides.

    A file may start from another with ``base: other.yaml`` (relative to the file's folder); its settings are
    applied first, then the file's own, so an ablation states only what it changes.
    """
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        for layer in _read_with_bases(Path(path), ()):
            config = merge(config, layer)
    return apply_overrides(config, overrides)


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> list[dict[str, Any]]:
    """The mappings of ``path`` and its ``base`` chain, the most basic first."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' settings form a cycle ({' -> '.join(map(str, (*seen, path)))})")
    try:
        loaded = _parse(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    base = loaded.pop("base", None)
    if base is None:
        return [loaded]
    return [*_read_with_bases(path.parent / str(base), (*seen, path.resolve())), loaded]


_ENV_VAR = re.compile(r"\$(?:\{([^}]*)\}|(\w+))")


def expand_path(
    value: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None, key: str | None = None
) -> Path:
    """Expand ``${VAR}``, ``$VAR`` and ``~``; relative paths are taken from ``root`` (else the working folder),
    except those that start with a variable, which are taken from the working folder.

    Raises:
        ConfigError: a variable is not set (the message names it, and the config ``key`` when given).
    """
    text = os.fspath(value)
    for match in _ENV_VAR.finditer(text):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name not in os.environ:
            where = f" used in {key}" if key else ""
            hint = " (export SCL_LLE_SHARED=/path/to/shared)" if name == "SCL_LLE_SHARED" else ""
            raise ConfigError(f"environment variable {name}{where} ({text!r}) is not set{hint}")
    path = Path(os.path.expanduser(os.path.expandvars(text)))
    # a relative folder held in a variable is meant from the working folder, as typed in the shell
    if root is not None and not path.is_absolute() and not text.startswith("$"):
        path = Path(root) / path
    return path
