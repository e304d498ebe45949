"""Old import path of :mod:`scl_lle.models.dcenet`, kept for one release (0.1.x); import from there instead.

The curve functions it held are now in :mod:`scl_lle.core.curves`.
"""

from .core.curves import (
    CurveTaps,
    apply_curves,
    apply_upsampled_curves,
    curve_taps,
    downsample,
    upsample_maps,
    upsampled_curves_band,
)
from .models.dcenet import RECEPTIVE_RADIUS, DCENet

__all__ = [
    "RECEPTIVE_RADIUS",
    "CurveTaps",
    "DCENet",
    "apply_curves",
    "apply_upsampled_curves",
    "curve_taps",
    "downsample",
    "upsample_maps",
    "upsampled_curves_band",
]
