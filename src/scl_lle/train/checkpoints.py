"""Training checkpoints: ``checkpoints/step_XXXXXXX.pt`` in a run folder, written atomically, read safely.

A checkpoint is a dict of tensors, numbers, strings and containers of them (the model, optimiser and scaler
states, the step, the log history, ...), saved with ``torch.save``. It is written under a temporary name and
renamed into place (:func:`scl_lle.io.files.atomic_write`), so a run killed while writing never leaves a partial
checkpoint; only the newest ``keep`` are kept. It is read by :func:`scl_lle.models.hub.load_checkpoint` (inspected
before any tensor data is read, then ``torch.load(weights_only=True)``); :func:`newest_readable` skips damaged ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..io.files import atomic_write
from ..models.hub import WeightsError, load_checkpoint

__all__ = ["REQUIRED_KEYS", "checkpoint_files", "newest_readable", "read_checkpoint", "write_checkpoint"]

#: What every training checkpoint holds (besides optional ``bad_steps``, ``ema``, ``best``, ``config``).
REQUIRED_KEYS: tuple[str, ...] = ("step", "model", "optimizer", "scaler", "history")


def checkpoint_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The checkpoints in ``folder``, oldest first (by step)."""
    return sorted(Path(folder).glob("step_*.pt"))


def write_checkpoint(folder: str | os.PathLike[str], state: dict[str, Any], *, keep: int) -> Path:
    """Write ``state`` (with its ``step``) as ``folder/step_XXXXXXX.pt`` atomically; delete all but the newest
    ``keep`` checkpoints. Returns the path written."""
    path = Path(folder) / f"step_{int(state['step']):07d}.pt"
    with atomic_write(path) as temporary:
        torch.save(state, temporary)
    for old in checkpoint_files(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> dict[str, Any]:
    """A training checkpoint written by :func:`write_checkpoint`, its tensors on ``device``.

    Raises :class:`~scl_lle.models.hub.WeightsError` (one line: ``--resume: <path>: <reason>``) for a file holding
    Python objects other than tensors and plain containers (refused without running them), and for one that is
    empty, truncated, damaged or not a checkpoint (found before any tensor data is read, where the file shows it).
    """
    try:
        state = load_checkpoint(path, kind="checkpoint", map_location=device)
    except WeightsError as error:
        raise WeightsError(f"--resume: {error}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise WeightsError(f"--resume: {path}: not a scl-lle training checkpoint (missing {', '.join(missing)})")
    return state


def newest_readable(
    folder: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[Path, dict[str, Any], list[tuple[Path, WeightsError]]]:
    """The newest checkpoint in ``folder`` that :func:`read_checkpoint` reads: ``(path, state, skipped)``, with
    the newer unreadable ones and their errors in ``skipped`` (newest first).

    Raises:
        FileNotFoundError: there is no checkpoint (``--resume: no checkpoint in <folder>``).
        WeightsError: none is readable (the newest one's error).
    """
    candidates = checkpoint_files(folder)
    if not candidates:
        raise FileNotFoundError(f"--resume: no checkpoint in {folder}")
    skipped: list[tuple[Path, WeightsError]] = []
    for path in reversed(candidates):
        try:
            return path, read_checkpoint(path, device), skipped
        except WeightsError as error:  # e.g. damaged on disk after it was written: try the one before
            skipped.append((path, error))
    newest = skipped[0][1]
    raise newest if len(skipped) == 1 else WeightsError(f"{newest}; no older checkpoint is readable either")
