"""Old import path of :mod:`scl_lle.models.dcenet`, kept for one release (0.1.x); import from there instead."""

from .models.dcenet import *  # noqa: F403
from .models.dcenet import __all__  # noqa: F401
