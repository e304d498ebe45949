"""Old import path of :mod:`scl_lle.engine.enhancer`, kept for one release (0.1.x); import from there instead.

Device and backend resolution are now in :mod:`scl_lle.engine.backends`.
"""

from .defaults import BACKENDS, DEFAULT_TILE, FAST_SCALE
from .engine.backends import resolve_backend, resolve_device
from .engine.enhancer import EnhanceError, Enhancer

__all__ = [
    "BACKENDS",
    "DEFAULT_TILE",
    "FAST_SCALE",
    "EnhanceError",
    "Enhancer",
    "resolve_backend",
    "resolve_device",
]
