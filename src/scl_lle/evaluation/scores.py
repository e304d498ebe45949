"""What an evaluation scores: the result keys of ``results.json`` / the CSVs, the metric behind each, its title.

Per image (:data:`IMAGE_METRICS`, in column order): NIQE, LOE against the input, mean brightness, exposure error
(:data:`EXPOSURE_PATCH` patches against 0.5), colourfulness, and PSNR / SSIM against the reference of paired sets.
Per set: ``miou`` (:class:`~scl_lle.evaluation.segmentation.MeanIoU`) and, for the dark/lit split,
``brightness_change``. :func:`title` names a key for tables, with the metric's direction (↑ higher is better,
↓ lower is better, nothing for a plain statistic).
"""

from __future__ import annotations

from typing import Any

from .metrics import LOE, PSNR, SSIM, BrightnessChange, Colourfulness, ExposureError, MeanBrightness, Metric
from .niqe import NIQE, NIQEParams
from .segmentation import MeanIoU

__all__ = ["EXPOSURE_PATCH", "IMAGE_METRICS", "image_metrics", "metric_class", "title"]

#: Side of the square patches of the exposure error (Zero-DCE's exposure measure), in pixels.
EXPOSURE_PATCH = 16

#: Result key -> (metric class, its options), measured on every output image, in this order.
IMAGE_METRICS: dict[str, tuple[type[Metric], dict[str, Any]]] = {
    "niqe": (NIQE, {}),
    "loe": (LOE, {}),
    "brightness": (MeanBrightness, {}),
    "exposure_error": (ExposureError, {"target": 0.5, "patch_size": EXPOSURE_PATCH}),
    "colourfulness": (Colourfulness, {}),
    "psnr": (PSNR, {}),
    "ssim": (SSIM, {}),
}

_SET_METRICS: dict[str, type[Any]] = {"miou": MeanIoU, "brightness_change": BrightnessChange}


def image_metrics(niqe_params: NIQEParams | None) -> dict[str, Metric]:
    """Fresh metric objects for every key of :data:`IMAGE_METRICS` (without NIQE when ``niqe_params`` is None)."""
    metrics = {}
    for key, (cls, options) in IMAGE_METRICS.items():
        if cls is NIQE:
            if niqe_params is not None:
                metrics[key] = NIQE(niqe_params)
        else:
            metrics[key] = cls(**options)
    return metrics


def metric_class(key: str) -> type[Any]:
    """The metric class behind result ``key`` (its ``name``, ``unit``, ``higher_is_better``)."""
    return IMAGE_METRICS[key][0] if key in IMAGE_METRICS else _SET_METRICS[key]


def title(key: str) -> str:
    """Table title of result ``key``: the metric's name, ↑ / ↓ from its ``higher_is_better``, its unit."""
    cls = metric_class(key)
    arrow = {True: "↑", False: "↓", None: ""}[cls.higher_is_better]
    return f"{cls.name}{arrow}" + (f" ({cls.unit})" if cls.unit else "")
