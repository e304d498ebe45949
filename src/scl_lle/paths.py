"""Where scl-lle looks for things outside the package: the shared data folder and the user cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "shared_dir"]


def cache_dir() -> Path:
    """The user cache folder for converted assets (VGG16, NIQE parameters, ...).

    ``$SCL_LLE_CACHE`` if set, else ``$XDG_CACHE_HOME/scl-lle``, else ``~/.cache/scl-lle``.
    The folder is not created here; writers create it when they need it.
    """
    if env := os.environ.get("SCL_LLE_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "scl-lle"


def shared_dir() -> Path | None:
    """The project's shared data folder (``$SCL_LLE_SHARED``), or ``None`` when it is not set or missing."""
    env = os.environ.get("SCL_LLE_SHARED")
    if env and Path(env).is_dir():
        return Path(env)
    return None
