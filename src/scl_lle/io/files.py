"""Files: the endings of image files and listing them (one place, one set of endings), and atomic writes.

Atomic writes: a file appears complete under its final name, or not at all.

Writers write to a hidden temporary file beside the target, flush it to disk, then move it into place with a
single rename. An interrupted run can leave only temporary files behind (never a half-written output);
:func:`remove_stale_temporaries` clears those of processes that are no longer running.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "HEIF_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "TEMP_SUFFIX",
    "atomic_write",
    "image_files",
    "is_image_file",
    "remove_stale_temporaries",
]

#: HEIC/HEIF endings (read and written with pillow-heif, the ``formats`` extra).
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
#: Camera RAW endings (read with rawpy/LibRaw, the ``formats`` extra; never written).
RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".rwl"}
    | {".kdc", ".dcr", ".pef", ".srw", ".3fr", ".erf", ".mef", ".mos", ".mrw", ".iiq", ".x3f"}
)
#: File endings picked up when a folder is given as input. HEIC and RAW files are picked up without the
#: ``formats`` extra too (and AVIF without a Pillow that reads it): each then fails alone, saying what to install.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".tga", ".avif"}
    | HEIF_EXTENSIONS
    | RAW_EXTENSIONS
)

#: Suffix of every temporary file this package writes; the name also carries the writer's process id.
TEMP_SUFFIX = ".scl-tmp"


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it becomes ``path`` in one step.

    Args:
        path: the final file name. Its folder is created if needed.
        overwrite: when ``False`` an existing ``path`` is never replaced, even if another process creates it
            while we write: :class:`FileExistsError` is raised and the temporary file removed.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(final)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"the writer produced no file for {final}")
        _fsync(temporary)
        if overwrite:
            os.replace(temporary, final)
        else:
            _move_no_clobber(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def _move_no_clobber(temporary: Path, final: Path) -> None:
    try:
        os.link(temporary, final)  # atomic, and fails if ``final`` exists
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links
        if final.exists():
            raise FileExistsError(f"{final} exists") from None
        os.replace(temporary, final)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], *, recursive: bool = True) -> int:
    """Delete temporary files left in ``folder`` by writers that are no longer running; return how many."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    pattern = f"**/.*{TEMP_SUFFIX}" if recursive else f".*{TEMP_SUFFIX}"
    removed = 0
    for candidate in root.glob(pattern):
        pid_part = candidate.name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[-1].split("-", 1)[0]
        if pid_part.isdigit() and _process_alive(int(pid_part)):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------- listing


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a visible file with an ending this package reads as an image (``IMAGE_EXTENSIONS``)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")


def image_files(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (their image files by extension, sorted; not recursive) and files, in the order given.

    Raises:
        FileNotFoundError: a source does not exist.
        ValueError: a folder holds no image files.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if is_image_file(p))
            if not found:
                raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image file or folder not found: {path}")
    return files
