"""Old import path of :mod:`scl_lle.models.hub`, kept for one release (0.1.x); import from there instead."""

from .models.hub import *  # noqa: F403
from .models.hub import __all__  # noqa: F401
