"""The ``scl-lle`` command line: a thin layer over the public API (``main`` is the console script)."""

from __future__ import annotations

from .commands import main

__all__ = ["main"]
