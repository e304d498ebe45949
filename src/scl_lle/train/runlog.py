"""The log of a training run: every logged row in order, as ``log.jsonl``, TensorBoard scalars and a loss plot.

Rows are dicts of numbers with their ``step`` (``loss``, ``loss/<term>``, ``lr``, ``brightness``, ``val/*``, ...).
The history is kept in memory (and saved in checkpoints); the process that writes the outputs (rank 0) appends
each row to ``<run>/log.jsonl`` and to TensorBoard (``<run>/tb/``, when the ``tensorboard`` package is installed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..io.files import atomic_write

__all__ = ["RunLog"]


class RunLog:
    """The log of the run in ``folder``; ``write``: whether this process writes files (rank 0)."""

    def __init__(self, folder: str | os.PathLike[str], *, write: bool) -> None:
        self.folder = Path(folder)
        self.write = write
        self.history: list[dict[str, float]] = []
        self._writer: Any = None  # the TensorBoard writer: None until the first row, False without tensorboard

    def append(self, row: dict[str, float]) -> None:
        """Log ``row`` (with its ``step``)."""
        self.history.append(row)
        if not self.write:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "log.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._writer is None:
            self._writer = _tensorboard(self.folder / "tb")
        if self._writer:
            for key, value in row.items():
                if key != "step":
                    self._writer.add_scalar(key, value, int(row["step"]))

    def restore(self, history: Iterable[dict[str, float]]) -> None:
        """Go on from a checkpoint's history: ``log.jsonl`` is rewritten to hold exactly those rows."""
        self.history = list(history)
        if self.write:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.folder / "log.jsonl") as temporary:
                temporary.write_text("".join(json.dumps(row) + "\n" for row in self.history))

    def plot(self, title: str) -> Path | None:
        """Plot every logged loss term, the brightness and the validation values against the step
        (``loss_curve.png``); None when nothing is logged or this process does not write."""
        if not self.write or not self.history:
            return None
        from ..evaluation.report import plot_curves

        keys = list(dict.fromkeys(k for row in self.history for k in row if k != "step"))
        keys = [k for k in keys if k.startswith("loss")] + [
            k for k in keys if k == "brightness" or k.startswith("val/")
        ]
        return plot_curves(self.history, keys, self.folder / "loss_curve.png", title=title)

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self._writer:
            self._writer.close()


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False  # the tensorboard package is optional
    return SummaryWriter(str(folder))
