"""Optimisation settings of a training run: the learning-rate schedule and the mixed-precision dtype.

Both read the config (:data:`scl_lle.train.config.DEFAULTS`): ``optim.schedule`` / ``warmup_steps`` /
``min_lr_ratio`` and the top-level ``amp``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["amp_dtype", "learning_rate_factor"]


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the config's ``amp`` (``auto`` | ``off`` | ``bf16`` | ``fp16``) on ``device``:
    ``None`` (float32) off CUDA; ``auto`` is bf16 where the GPU supports it, else fp16."""
    if setting == "off" or device.type != "cuda":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def learning_rate_factor(step: int, optim: Mapping[str, Any], total: int) -> float:
    """The factor on ``optim["lr"]`` at ``step`` of ``total``: a linear warm-up over ``warmup_steps``, then
    ``constant`` (1) or ``cosine`` (from 1 down to ``min_lr_ratio`` at ``total``), per ``optim["schedule"]``."""
    warmup = int(optim["warmup_steps"])
    if warmup and step < warmup:
        return (step + 1) / warmup
    if optim["schedule"] == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        floor = float(optim["min_lr_ratio"])
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if optim["schedule"] != "constant":
        raise ValueError(f"optim.schedule must be constant or cosine, got {optim['schedule']!r}")
    return 1.0
