"""Old import path of :mod:`scl_lle.engine.enhancer`, kept for one release (0.1.x); import from there instead."""

from .engine.enhancer import *  # noqa: F403
from .engine.enhancer import __all__  # noqa: F401
