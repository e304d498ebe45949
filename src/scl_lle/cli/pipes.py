"""``scl-lle enhance -`` and ``-o -``: stdin and stdout as files in a temporary folder.

stdin is copied into a file whose ending is sniffed from its bytes; the one output is written to a file, then
copied to stdout. The batch app sees ordinary paths either way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["MAX_STDIN_BYTES", "copy_to_stdout", "spool_stdin", "stdout_file", "with_pipes"]

#: Most bytes ``scl-lle enhance -`` reads from stdin.
MAX_STDIN_BYTES = 2**30
# File ending for what stdin holds, by :func:`scl_lle.io.sniff.sniff_container`; unknown: none (Pillow guesses).
_SNIFFED_ENDINGS = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "GIF": ".gif",
    "TIFF": ".tiff",
    "BMP": ".bmp",
    "WEBP": ".webp",
    "AVIF": ".avif",
    "HEIF": ".heic",
    "mp4": ".mp4",
    "matroska": ".mkv",
    "avi": ".avi",
}

#: ``enhance_files(args, inputs, output) -> exit status``, as :func:`scl_lle.cli.enhance.enhance_files`.
EnhanceFiles = Callable[[argparse.Namespace, list[str], str], int]


def with_pipes(args: argparse.Namespace, enhance_files: EnhanceFiles) -> int:
    """Run ``enhance_files`` with ``-`` (stdin) and ``-o -`` (stdout) mapped to files in a temporary folder,
    removed afterwards; raises ValueError for a usage error (``-`` not alone, ``-o -`` with several inputs)."""
    with tempfile.TemporaryDirectory(prefix="scl-lle-") as name:
        folder = Path(name)
        inputs, output = list(args.inputs), args.output
        spool = None
        if "-" in inputs:
            if len(inputs) != 1:
                raise ValueError("'-' (stdin) must be the only input")
            spool = spool_stdin(folder)
            inputs = [os.fspath(spool)]
        if output == "-":
            if len(inputs) != 1 or not Path(inputs[0]).is_file():
                raise ValueError("-o - (stdout) takes exactly one input file")
            output = os.fspath(stdout_file(Path(inputs[0]), args.format, folder))
        with _named_stdin(spool):
            status = enhance_files(args, inputs, output)
        if args.output == "-" and Path(output).is_file():
            return copy_to_stdout(Path(output)) or status
        return status


class _StdinName(logging.Filter):
    """Names the spooled stdin ``stdin`` in messages, not by its temporary file."""

    def __init__(self, spool: Path) -> None:
        super().__init__()
        self.spool = os.fspath(spool)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self.spool in text:
            record.msg, record.args = text.replace(self.spool, "stdin"), ()
        return True


@contextlib.contextmanager
def _named_stdin(spool: Path | None) -> Iterator[None]:
    """While the batch runs, messages of the ``scl_lle`` loggers' handlers name the spooled stdin ``stdin``."""
    if spool is None:
        yield
        return
    handlers, rename = list(logging.getLogger("scl_lle").handlers), _StdinName(spool)
    for handler in handlers:
        handler.addFilter(rename)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(rename)


def copy_to_stdout(path: Path) -> int:
    """Copy the file ``path`` to stdout: 0, or 1 where stdout cannot take it. A full disk or other write error
    is one error line; a reader that stopped early (``| head``) gets no message, as from ``cat``, and stdout is
    pointed at the null device so that Python's own flush at exit does not print a traceback either."""
    from ..io.errors import one_line

    try:
        with open(path, "rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            with contextlib.suppress(OSError, ValueError):  # no real stdout (captured): nothing flushes to the pipe
                os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return 1
    except OSError as error:
        print(
            f"scl-lle enhance: error: cannot write to stdout ({one_line(error.strerror or str(error))})",
            file=sys.stderr,
        )
        return 1
    return 0


def spool_stdin(folder: Path) -> Path:
    """Copy stdin into ``folder/stdin.<ending>`` (ending from the bytes); at most :data:`MAX_STDIN_BYTES`."""
    from ..io.sniff import sniff_container

    spool = folder / "stdin"
    size = 0
    with open(spool, "wb") as handle:
        while chunk := sys.stdin.buffer.read(2**20):
            size += len(chunk)
            if size > MAX_STDIN_BYTES:
                raise ValueError(f"stdin holds more than {MAX_STDIN_BYTES // 2**20} MiB")
            handle.write(chunk)
    if size == 0:
        raise ValueError("stdin is empty; give an image on it, or a file instead of '-'")
    return spool.rename(spool.with_suffix(_SNIFFED_ENDINGS.get(sniff_container(spool) or "", "")))


def stdout_file(source: Path, format: str, folder: Path) -> Path:
    """Where the one output goes before it is copied to stdout: ``--format``'s ending, else the input's."""
    from ..apps.video import VIDEO_EXTENSIONS
    from ..defaults import OUTPUT_FORMATS
    from ..io.encode import WRITABLE_EXTENSIONS

    suffix = source.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        suffix = OUTPUT_FORMATS[format] or (suffix if suffix in WRITABLE_EXTENSIONS else ".png")
    return folder / f"stdout{suffix}"
