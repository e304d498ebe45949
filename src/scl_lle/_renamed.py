"""Arguments renamed so that each concept has one name from CLI flag to API argument (kept for 0.1.x only).

| old argument | new argument (= CLI flag) | where |
|---|---|---|
| ``tile_size`` | ``tile`` (``--tile``) | ``Enhancer``, ``enhance`` |
| ``smoothing`` | ``temporal_smoothing`` (``--temporal-smoothing``) | ``enhance_video`` |
| ``batch_size`` | ``video_batch`` (``--video-batch``) | ``enhance_video`` |
| ``include_curves`` | ``with_curves`` (``--with-curves``) | ``export_onnx`` |
| ``max_upload_bytes`` | ``max_upload_mb`` (``--max-upload-mb``) | ``ServeLimits`` (a read-only property now) |
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["UNSET", "renamed"]

#: The default of a renamed (old) argument: "not given".
UNSET: Any = object()


def renamed(where: str, old: str, new: str, old_value: Any, new_value: Any) -> Any:
    """``new_value``, or ``old_value`` with a :class:`DeprecationWarning` when the caller used the old name."""
    if old_value is UNSET:
        return new_value
    warnings.warn(
        f"{where}({old}=...) is now {where}({new}=...); the old name goes after scl-lle 0.1",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
