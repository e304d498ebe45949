"""Which files a batch enhances and where each output goes: the planning half of ``scl-lle enhance``.

Inputs are files, folders and glob patterns; each becomes :class:`Job` s (a source and its destination) or a
problem with its reason. The output tree mirrors the input tree; an output never overwrites an input, never
falls outside the output folder and is never claimed twice. Videos keep their container; images take the
``format``'s ending (``same``: the input's where it can be written, else PNG).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..defaults import OUTPUT_FORMATS
from ..io.encode import WRITABLE_EXTENSIONS
from ..io.errors import show_path
from ..io.files import HEIF_EXTENSIONS, IMAGE_EXTENSIONS
from .video import MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, is_video_path

__all__ = [
    "Inputs",
    "Job",
    "as_input_list",
    "collect_jobs",
    "file_ending_problem",
    "file_output_problem",
    "is_file_output",
    "output_problem",
]

#: What a batch takes as input: one file, folder or glob pattern, or a sequence of them.
Inputs = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

# File endings each explicit ``format`` agrees with (an output named as one file must match it).
_FORMAT_ENDINGS = {"jpg": {".jpg", ".jpeg"}, "tiff": {".tif", ".tiff"}, "heic": HEIF_EXTENSIONS}
# Endings that name a picture or video file, beyond those read: an ``output`` with one of them is meant as a file.
_FILE_ENDINGS = MEDIA_EXTENSIONS | {".gif", ".jxl", ".jp2", ".j2k", ".ico", ".exr", ".hdr", ".psd", ".svg", ".pdf"}


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes."""

    source: Path
    destination: Path


def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def as_input_list(inputs: Inputs) -> list[str | os.PathLike[str]]:
    """``inputs`` as a list: one path (a ``str`` or path object) is one input, not a sequence of characters."""
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if isinstance(inputs, (bytes, bytearray)):
        raise TypeError("inputs must be str or os.PathLike paths (or a list of them), not bytes")
    return list(inputs)


def _in_output(match: Path, root: Path, output: Path) -> bool:
    """Whether a glob ``match`` lies in the (resolved) ``output`` folder below the pattern's ``root``: skipped,
    as :func:`_walk` skips it in a folder input (an earlier run's outputs are not inputs)."""
    parts = match.relative_to(root).parts
    return any((root / Path(*parts[:i])).resolve() == output for i in range(1, len(parts)))


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _walk(folder: Path, recursive: bool, exclude: Path | None, problems: list[tuple[Path, str]]) -> list[Path]:
    """The media files in ``folder`` (by ending, :data:`~scl_lle.apps.video.MEDIA_EXTENSIONS`; hidden files and
    symlinks skipped, anything else kept for the reader to refuse); folders that cannot be listed are added to
    ``problems``."""

    def unreadable(error: OSError) -> None:
        where = Path(error.filename) if error.filename else folder
        problems.append((where, f"cannot read this folder ({(error.strerror or str(error)).lower()})"))

    found = []
    for root, dirs, files in os.walk(folder, onerror=unreadable, followlinks=False):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        if not recursive:
            dirs[:] = []
        for name in sorted(files):
            path = here / name
            if not name.startswith(".") and path.suffix.lower() in MEDIA_EXTENSIONS and not path.is_symlink():
                found.append(path)
    return found


def _empty_folder_reason(folder: Path, recursive: bool, exclude: Path | None) -> str:
    """Why an input folder gave no files: none at all, or (without ``recursive``) only in its sub-folders."""
    if not recursive:
        deeper = len(_walk(folder, True, exclude, []))
        if deeper:
            return f"no images or videos in this folder, but {deeper} in its sub-folders: add --recursive"
    return "no images or videos in this folder"


def _destination(relative: Path, output: Path, format: str) -> Path:
    # A glob match may hold '..' ("a/*/../b.png"): fold it, so the output is the plain path inside ``output``
    # (no stray folders); a path that still climbs out is refused by collect_jobs.
    relative = Path(os.path.normpath(relative))
    if is_video_path(relative):  # videos stay videos, in their own container
        return output / relative
    suffix = OUTPUT_FORMATS[format]
    if suffix is None:
        suffix = relative.suffix if relative.suffix.lower() in WRITABLE_EXTENSIONS else ".png"
    return output / relative.with_suffix(suffix)


def _expand(
    inputs: Inputs, recursive: bool, exclude: Path, problems: list[tuple[Path, str]]
) -> list[tuple[Path, Path]]:
    """Each input file with its path relative to the output folder; inputs that give none go to ``problems``.
    ``exclude``: the output folder (resolved), left out of folder and pattern inputs."""
    pairs: list[tuple[Path, Path]] = []
    for item in as_input_list(inputs):
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            before = len(problems)
            files = _walk(path, recursive, exclude, problems)
            if not files and len(problems) == before:
                problems.append((path, _empty_folder_reason(path, recursive, exclude)))
            pairs += [(f, f.relative_to(path)) for f in files]
        elif path.is_file():
            pairs.append((path, Path(path.name)))
        elif path.exists():  # a FIFO, socket or device: never opened
            problems.append((path, "not a regular file or folder"))
        elif _has_magic(text):
            root = _glob_root(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=recursive) if Path(m).is_file())
            kept = [m for m in matches if not _in_output(m, root, exclude)]
            if not kept:
                problems.append(
                    (path, "every match is in the output folder" if matches else "no file matches this pattern")
                )
            pairs += [(m, m.relative_to(root)) for m in kept]
        else:
            problems.append((path, "no such file or folder"))
    return pairs


def collect_jobs(
    inputs: Inputs,
    output: str | os.PathLike[str],
    *,
    recursive: bool = False,
    format: str = "same",
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Expand files, folders and glob patterns into jobs; also return inputs that cannot be used, with reasons.

    A folder contributes its image and video files (by file ending; hidden files and symlinks are skipped),
    with its sub-folders when ``recursive``; each output keeps the file's path relative to that folder. A file
    given directly goes to the top of ``output``. Glob patterns (``*``, ``?``, ``[...]``, ``**`` with
    ``recursive``) keep paths relative to the folder before the first wildcard.
    """
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {format!r}")
    output = Path(output)
    output_resolved = output.resolve()
    problems: list[tuple[Path, str]] = []
    pairs = _expand(inputs, recursive, output_resolved, problems)
    sources = {source.resolve() for source, _ in pairs}
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    seen: set[Path] = set()
    for source, relative in pairs:
        resolved = source.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        destination = _destination(relative, output, format)
        target = destination.resolve()
        shown = show_path(destination)
        if not target.is_relative_to(output_resolved):
            problems.append((source, f"its output {shown} would fall outside {show_path(output)}"))
        elif target in sources:
            problems.append((source, f"its output {shown} would overwrite an input file; choose another --output"))
        elif target in claimed:
            problems.append((source, f"its output {shown} is already the output of {show_path(claimed[target])}"))
        else:
            claimed[target] = source
            jobs.append(Job(source, destination))
    return jobs, problems


def is_file_output(inputs: Inputs, output: str | os.PathLike[str]) -> bool:
    """Whether ``output`` names the one output file rather than a folder.

    True for exactly one input that is a regular file and an ``output`` with an image ending (a video ending for
    a video input) that is neither an existing folder nor written with a trailing slash.
    """
    inputs = as_input_list(inputs)
    if len(inputs) != 1:
        return False
    text, source = os.fspath(output), Path(os.fspath(inputs[0]))
    if text.endswith(("/", os.sep)) or Path(text).is_dir() or not source.is_file():
        return False
    return Path(text).suffix.lower() in (VIDEO_EXTENSIONS if is_video_path(source) else IMAGE_EXTENSIONS)


def file_ending_problem(inputs: Inputs, output: str | os.PathLike[str]) -> str | None:
    """Why ``output`` cannot be taken as the output folder of one input file: it is named like a picture or
    video file (``out.gif``, ``clip.png`` for a video) that cannot be written for that input. ``None`` otherwise
    (several inputs, a folder input, an existing folder, a trailing slash, or an ending that names no media)."""
    inputs = as_input_list(inputs)
    text = os.fspath(output)
    if len(inputs) != 1 or text.endswith(("/", os.sep)) or Path(text).is_dir() or is_file_output(inputs, output):
        return None
    source, ending = Path(os.fspath(inputs[0])), Path(text).suffix.lower()
    if not source.is_file() or ending not in _FILE_ENDINGS:
        return None
    video = is_video_path(source)
    endings = ", ".join(sorted(VIDEO_EXTENSIONS if video else WRITABLE_EXTENSIONS))
    what = "a video" if video else "an image"
    return (
        f"-o {show_path(Path(text))}: {what} cannot be written as {ending}; "
        f"end it in one of {endings}, or end a folder name with /"
    )


def file_output_problem(source: Path, output: Path, format: str) -> str | None:
    """Why ``output`` cannot be the output file of ``source``: it is the input, or ``format`` disagrees."""
    if output.resolve() == source.resolve() or (output.exists() and output.samefile(source)):
        return f"-o {show_path(output)} is the input file; an input is never written over"
    endings = _FORMAT_ENDINGS.get(format, {f".{format}"})
    if format != "same" and not is_video_path(source) and output.suffix.lower() not in endings:
        return f"--format {format} disagrees with -o {show_path(output)}; drop --format or change the ending"
    return None


def output_problem(output: Path, *, file: bool = False) -> str | None:
    """Why ``output`` cannot be the output folder (or, with ``file``, the output file): it (the folder for a
    file), or a folder above it, is an existing file."""
    for path in output.parents if file else (output, *output.parents):
        if path.exists():
            if path.is_dir():
                return None
            where = "" if path == output else f": {show_path(path)}"
            return f"-o {show_path(output)}{where} is an existing file; give a folder"
    return None
