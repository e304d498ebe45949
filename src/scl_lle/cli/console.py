"""What a running command prints on stderr, and how a Ctrl-C ends it.

The library reports through :mod:`logging` (loggers under ``scl_lle``) and :mod:`warnings`; :func:`console` prints
both as one line each, between progress bars, at the verbosity of ``-q``/``-v``. A Ctrl-C ends the command with
exit status 130 and one line (:func:`interrupted`), whenever it comes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

__all__ = ["INTERRUPTED", "ConsoleHandler", "Interrupt", "console", "exit_at_once", "interrupted"]

#: Logging level of the ``scl_lle`` loggers at each verbosity (see :func:`scl_lle.cli.options.verbosity`).
_LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}

#: The line an interrupted command ends with.
INTERRUPTED = "scl-lle: interrupted; outputs written so far are complete"


class ConsoleHandler(logging.Handler):
    """Each record as one line on stderr (``scl-lle: note``, ``warning: ...``, ``error: ...``, ``debug: ...``),
    written through tqdm so that a progress bar on the terminal stays whole."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        from ..io.errors import one_line

        try:
            message = one_line(record.getMessage())
            prefix = "scl-lle" if record.levelno == logging.INFO else record.levelname.lower()
            tqdm.write(f"{prefix}: {message}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def console(verbosity: int) -> Iterator[None]:
    """While a command runs: the ``scl_lle`` loggers print at ``verbosity`` (-2 errors only ... 1 details), and
    Python warnings (the library's and its dependencies') become one ``warning:`` line each instead of a source
    dump. Afterwards the loggers are left as they were."""
    logger = logging.getLogger("scl_lle")
    saved = logger.level, logger.propagate
    handler = ConsoleHandler()
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[verbosity])
    logger.propagate = False

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        logger.warning("%s", message)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class Interrupt:
    """SIGINT handler that remembers it fired: a Ctrl-C that lands inside a C extension's import can surface as
    another exception (seen in torch's), which must still end as an interruption, not a traceback."""

    fired = False

    def __call__(self, signum: int, frame: object) -> None:
        self.fired = True
        raise KeyboardInterrupt


def exit_at_once(signum: int, frame: object) -> None:
    """SIGINT while the command is set up (the parser built, PyTorch imported): nothing to clean up yet, and an
    exception raised inside an extension's import can end the process by the signal despite being caught."""
    os.write(2, f"{INTERRUPTED}\n".encode())
    os._exit(130)


def interrupted(hint: str = "") -> int:
    """Print the interruption line (with ``hint``: how to carry on) and return its exit status, 130."""
    print(INTERRUPTED + hint, file=sys.stderr)
    return 130
