"""Argument types and options shared by the sub-commands: checked numbers, ``--exposure`` and ``-q``/``-v``.

Torch-free: the parsers are built from these without loading PyTorch (``scl-lle --help`` stays quick).
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "add_verbosity",
    "exposure",
    "non_negative_int",
    "port",
    "positive_int",
    "positive_number",
    "quality",
    "scale_setting",
    "smoothing",
    "verbosity",
]


def positive_int(text: str) -> int:
    """A whole number >= 1 (``--tile``, ``--threads``, ...)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def scale_setting(text: str) -> int | str:
    """``--scale``: a whole number >= 1, or ``auto``."""
    return "auto" if text == "auto" else positive_int(text)


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (``--max-pixels``, where 0 means no limit)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 0-65535 (``--port``; 0: any free port)."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port within 0-65535, got {text}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 (``--max-upload-mb``, ``--max-video-seconds``): NaN would remove the limit."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def quality(text: str) -> int:
    """An encoder quality within 1..100 (``--quality``)."""
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 1..100, got {text}")
    return value


def smoothing(text: str) -> float:
    """A share within [0, 1) (``--temporal-smoothing``)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1), got {text}")
    return value


def exposure(text: str) -> str | float:
    """``auto``, ``off`` or a mean brightness in (0, 1) (``--exposure``), read by
    :func:`scl_lle.engine.exposure.parse_exposure`."""
    from ..engine.exposure import parse_exposure

    try:
        return parse_exposure(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q``/``-qq`` and ``-v`` on a command's parser (read by :func:`verbosity`)."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="less output: -q no progress bars and no notes (warnings, errors and the final summary stay); "
        "-qq errors only",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output: the engine's settings (device, backend, tile) and a line per file",
    )


def verbosity(args: argparse.Namespace) -> int:
    """-2 (errors only), -1 (no progress bars, no notes), 0 (default) or 1 (details)."""
    return max(-2, min(1, getattr(args, "verbose", 0) - getattr(args, "quiet", 0)))
