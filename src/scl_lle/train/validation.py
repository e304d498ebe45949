"""Validation during training: NIQE and mean brightness of the enhanced photos of a folder, and the best-so-far rule.

The config's ``validation`` section names a folder of real low-light photos (read once, shrunk to ``max_side``);
:func:`score` enhances them with the served model and returns the values logged as ``val/niqe`` and
``val/brightness``; :func:`better` decides whether a validation beats the best so far (``best.safetensors``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.colour import mean_brightness
from ..evaluation.niqe import niqe
from ..io.files import image_files
from ..io.image import read_image
from ..io.pixels import tensor_view, to_unit
from .config import expand_path
from .exposure import ExposureSetting, scored_at_exposure

__all__ = ["better", "load_images", "score"]


def load_images(cfg: Mapping[str, Any]) -> list[torch.Tensor]:
    """The first ``max_images`` photos of ``cfg["folder"]`` as ``(1, 3, H, W)`` float32 in [0, 1], their long side
    shrunk (area average) to at most ``max_side``; grey photos are repeated to three channels."""
    files = image_files(expand_path(cfg["folder"]))[: int(cfg["max_images"])]
    images = []
    for path in files:
        pixels = to_unit(tensor_view(read_image(path).pixels))
        x = (pixels[..., None].expand(-1, -1, 3) if pixels.ndim == 2 else pixels).permute(2, 0, 1)[None]
        side = max(x.shape[-2:])
        if side > int(cfg["max_side"]):
            size = [round(s * int(cfg["max_side"]) / side) for s in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="area")
        images.append(x)
    return images


@torch.no_grad()
def score(
    model: nn.Module, images: Sequence[torch.Tensor], device: torch.device, exposure: ExposureSetting
) -> dict[str, float]:
    """``{"val/brightness": mean, "val/niqe": mean}`` of ``model``'s outputs for ``images`` (NIQE left out where
    no image is large enough, or without NIQE parameters, with a warning). The model is scored at auto exposure
    when ``exposure`` is not ``"off"`` (as the enhancer serves a model trained for exposure control)."""
    scores, brightness = [], []
    model.eval()
    for x in images:
        x = x.to(device)
        if exposure == "off":
            y = model(x).float().cpu()
        else:
            maps = model.curve_maps(x)
            y = scored_at_exposure(x, maps, "auto", 1.0, torch.Generator()).float().cpu()
        brightness.append(float(mean_brightness(y)[0]))
        try:
            scores.append(float(niqe(y)[0]))
        except ValueError:  # too small for NIQE
            pass
        except FileNotFoundError as error:  # no NIQE parameters: brightness only
            warnings.warn(f"validation without NIQE: {error}", stacklevel=2)
            break
    model.train()
    row = {"val/brightness": float(np.mean(brightness))}
    if scores:
        row["val/niqe"] = float(np.mean(scores))
    return row


def better(row: Mapping[str, float], best: Mapping[str, float] | None, brightness_range: Sequence[float]) -> bool:
    """Brightness-aware selection: a validation inside ``brightness_range`` beats any outside it; inside, lower
    NIQE wins; outside, the one closer to the range wins. Anything beats ``best=None``."""
    low, high = brightness_range

    def key(r: Mapping[str, float]) -> tuple[float, float]:
        distance = max(low - r["val/brightness"], r["val/brightness"] - high, 0.0)
        return (distance, r.get("val/niqe", 0.0)) if distance == 0 else (1.0 + distance, 0.0)

    return best is None or key(row) < key(best)
