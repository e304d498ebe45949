"""Batch enhancement of files and folders: the engine behind ``scl-lle enhance``.

Guarantees: the output tree mirrors the input tree; an input file is never written over; every output is
written atomically; one bad file is reported with its reason and the rest of the batch still completes;
``skip_existing`` resumes an interrupted batch. Video files (by ending, :data:`~scl_lle.apps.video.VIDEO_EXTENSIONS`)
are enhanced frame by frame into a video of the same kind by :func:`scl_lle.apps.video.enhance_video`.

Scale-out: under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) each process takes the jobs whose index in the
sorted job list is its rank modulo the world size: disjoint shards that together cover every input, with the
same guarantees per process and no communication between them.

Messages are one line per file (names with line breaks or other control characters are quoted with escapes):
``error: NAME: reason`` for a failed file, ``warning: NAME: ...`` for one written with a loss (only the first
frame of an animation, EXIF too large for JPEG dropped).
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..engine.backends import shard_from_env
from ..engine.enhancer import DEFAULT_TILE, EnhanceError, Enhancer
from ..engine.exposure import Exposure
from ..io.files import remove_stale_temporaries
from ..io.formats import RawOptions, heif_installed, missing_extra
from ..io.image import (
    DEFAULT_MAX_PIXELS,
    HAS_AVIF,
    IMAGE_EXTENSIONS,
    WRITABLE_EXTENSIONS,
    ImageReadError,
    ImageWriteError,
    image_named_as_video,
    one_line,
    read_image,
    show_path,
    write_image,
)
from .video import DEFAULT_SMOOTHING, VIDEO_EXTENSIONS, VideoError, enhance_video

_log = logging.getLogger(__name__)

__all__ = ["OUTPUT_FORMATS", "BatchResult", "Job", "collect_jobs", "enhance", "is_file_output"]

#: ``format`` choices: ``same`` keeps each input's file type where it can be written, else PNG (so camera RAW
#: comes out as 16-bit PNG). ``heic`` needs the ``formats`` extra.
OUTPUT_FORMATS = {
    "same": None,
    "png": ".png",
    "jpg": ".jpg",
    "tiff": ".tiff",
    "webp": ".webp",
    **({"avif": ".avif"} if HAS_AVIF else {}),
    "heic": ".heic",
}
# File endings each explicit ``format`` agrees with (an output named as one file must match it).
_FORMAT_ENDINGS = {"jpg": {".jpg", ".jpeg"}, "tiff": {".tif", ".tiff"}, "heic": {".heic", ".heif", ".hif"}}
_DeviceOutOfMemory = getattr(torch, "OutOfMemoryError", MemoryError)


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes."""

    source: Path
    destination: Path


@dataclass
class BatchResult:
    """What a batch did: written and skipped outputs, failures with their reasons."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def summary(self) -> str:
        """One line for people: counts and time."""
        total = len(self.written) + len(self.skipped) + len(self.failed)
        shard = f"[rank {self.rank}/{self.world_size}] " if self.world_size > 1 else ""
        return (
            f"{shard}{len(self.written)} enhanced, {len(self.skipped)} skipped, {len(self.failed)} failed "
            f"(of {total}) in {self.seconds:.1f} s"
        )


def _has_magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


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
    """The media files in ``folder``; folders that cannot be listed are added to ``problems``."""

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
            if not name.startswith(".") and _is_media(path.suffix) and not path.is_symlink():
                found.append(path)
    return found


def _empty_folder_reason(folder: Path, recursive: bool, exclude: Path | None) -> str:
    """Why an input folder gave no files: none at all, or (without ``recursive``) only in its sub-folders."""
    if not recursive:
        deeper = len(_walk(folder, True, exclude, []))
        if deeper:
            return f"no images or videos in this folder, but {deeper} in its sub-folders: add --recursive"
    return "no images or videos in this folder"


def _is_media(suffix: str) -> bool:
    return suffix.lower() in IMAGE_EXTENSIONS or suffix.lower() in VIDEO_EXTENSIONS


def _destination(relative: Path, output: Path, format: str) -> Path:
    # A glob match may hold '..' ("a/*/../b.png"): fold it, so the output is the plain path inside ``output``
    # (no stray folders); a path that still climbs out is refused by collect_jobs.
    relative = Path(os.path.normpath(relative))
    if relative.suffix.lower() in VIDEO_EXTENSIONS:  # videos stay videos, in their own container
        return output / relative
    suffix = OUTPUT_FORMATS[format]
    if suffix is None:
        suffix = relative.suffix if relative.suffix.lower() in WRITABLE_EXTENSIONS else ".png"
    return output / relative.with_suffix(suffix)


def collect_jobs(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    recursive: bool = False,
    format: str = "same",
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """Expand files, folders and glob patterns into jobs; also return inputs that cannot be used, with reasons.

    A folder contributes its image files (by file ending; hidden files and symlinks are skipped), with its
    sub-folders when ``recursive``; each output keeps the file's path relative to that folder. A file given
    directly goes to the top of ``output``. Glob patterns (``*``, ``?``, ``[...]``, ``**`` with ``recursive``)
    keep paths relative to the folder before the first wildcard.
    """
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {format!r}")
    output = Path(output)
    output_resolved = output.resolve()
    problems: list[tuple[Path, str]] = []
    pairs: list[tuple[Path, Path]] = []  # (source, path relative to the output folder)
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            before = len(problems)
            files = _walk(path, recursive, output_resolved, problems)
            if not files and len(problems) == before:
                problems.append((path, _empty_folder_reason(path, recursive, output_resolved)))
            pairs += [(f, f.relative_to(path)) for f in files]
        elif path.is_file():
            pairs.append((path, Path(path.name)))
        elif path.exists():  # a FIFO, socket or device: never opened
            problems.append((path, "not a regular file or folder"))
        elif _has_magic(text):
            root = _glob_root(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=recursive) if Path(m).is_file())
            if not matches:
                problems.append((path, "no file matches this pattern"))
            pairs += [(m, m.relative_to(root)) for m in matches]
        else:
            problems.append((path, "no such file or folder"))

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


def is_file_output(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> bool:
    """Whether ``output`` names the one output file rather than a folder.

    True for exactly one input that is a regular file and an ``output`` with an image ending (a video ending for
    a video input) that is neither an existing folder nor written with a trailing slash.
    """
    if len(inputs) != 1:
        return False
    text, source = os.fspath(output), Path(os.fspath(inputs[0]))
    if text.endswith(("/", os.sep)) or Path(text).is_dir() or not source.is_file():
        return False
    is_video = source.suffix.lower() in VIDEO_EXTENSIONS
    return Path(text).suffix.lower() in (VIDEO_EXTENSIONS if is_video else IMAGE_EXTENSIONS)


def _file_output_problem(source: Path, output: Path, format: str) -> str | None:
    """Why ``output`` cannot be the output file of ``source``: it is the input, or ``format`` disagrees."""
    if output.resolve() == source.resolve() or (output.exists() and output.samefile(source)):
        return f"-o {show_path(output)} is the input file; an input is never written over"
    is_video = source.suffix.lower() in VIDEO_EXTENSIONS
    if format != "same" and not is_video and output.suffix.lower() not in _FORMAT_ENDINGS.get(format, {f".{format}"}):
        return f"--format {format} disagrees with -o {show_path(output)}; drop --format or change the ending"
    return None


def _output_problem(output: Path, *, file: bool = False) -> str | None:
    """Why ``output`` cannot be the output folder (or, with ``file``, the output file): it (the folder for a
    file), or a folder above it, is an existing file."""
    for path in output.parents if file else (output, *output.parents):
        if path.exists():
            if path.is_dir():
                return None
            where = "" if path == output else f": {show_path(path)}"
            return f"-o {show_path(output)}{where} is an existing file; give a folder"
    return None


def _single_host(world_size: int) -> bool:
    """Whether all ranks run on this machine (process ids are then comparable across ranks)."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    return world_size == 1 or (local is not None and local.isdigit() and int(local) == world_size)


def enhance(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    scale: int = 1,
    recursive: bool = False,
    format: str = "same",
    quality: int = 95,
    skip_existing: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    tile_size: int | None = DEFAULT_TILE,
    enhancer: Enhancer | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    backend: str = "auto",
    threads: int | None = None,
    compile: bool = False,
    finish: bool = True,
    exposure: Exposure = "auto",
    rank: int | None = None,
    world_size: int | None = None,
    temporal_smoothing: float = DEFAULT_SMOOTHING,
    video_batch: int = 8,
    raw_half_size: bool = False,
    raw_white_balance: str = "camera",
) -> BatchResult:
    """Enhance image files and folders into ``output``; the Python face of ``scl-lle enhance``.

    Args:
        inputs: files, folders and glob patterns.
        output: the output folder (created if needed); it mirrors the input tree. For a single input file, an
            ``output`` with an image ending (a video ending for a video) is that output file instead
            (:func:`is_file_output`); its type follows the ending.
        weights, device, scale, tile_size: as for :class:`~scl_lle.engine.enhancer.Enhancer` (or pass ``enhancer``).
        recursive: descend into sub-folders of folder inputs.
        format: ``same``, ``png``, ``jpg``, ``tiff``, ``webp``, (where Pillow has it) ``avif``, or ``heic``
            (the ``formats`` extra). ``same`` writes camera RAW inputs as 16-bit PNG.
        quality: JPEG / WebP / AVIF / HEIC quality, 1-100.
        skip_existing: keep outputs that already exist (resume a batch); ``overwrite``: replace them.
            With neither, an existing output is reported as a failure and left untouched.
        max_pixels: refuse images with more pixels (decompression bombs); ``None`` or 0: no limit.
        progress: show a progress bar on stderr.
        report: called with one line per failed file (``error: ...``) and per file written with a loss
            (``warning: ...``: only the first frame of a multi-frame image, EXIF dropped); default: the
            ``scl_lle.apps.batch`` logger (errors and warnings; each file written is a debug record).
        backend, threads, compile, finish, exposure: as for :class:`~scl_lle.engine.enhancer.Enhancer`
            (``exposure``: ``"auto"``, ``"off"`` or a mean brightness in (0, 1); videos hold it per shot).
        rank, world_size: process this shard only: the jobs whose index in the sorted job list (sorted by
            output path) is ``rank`` modulo ``world_size``. ``None``: from ``RANK`` / ``WORLD_SIZE``
            (``torchrun``), else the whole list. Inputs that cannot be used are reported by rank 0 only.
        temporal_smoothing, video_batch: for video inputs (see :func:`scl_lle.apps.video.enhance_video`): curve
            smoothing across frames (0: off) and frames per batch on the device.
        raw_half_size, raw_white_balance: how camera RAW inputs are decoded (:class:`scl_lle.io.formats.RawOptions`):
            at half the width and height (faster), with the ``"camera"``'s white balance or ``"auto"``.

    Returns:
        A :class:`BatchResult`; ``result.ok`` is false when any file failed.

    Raises:
        ValueError: bad arguments, ``output`` (or a folder above it) is an existing file, or an output file
            that is the input or whose ending disagrees with ``format``.
    """
    if skip_existing and overwrite:
        raise ValueError("skip_existing and overwrite exclude each other")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1..100, got {quality}")
    if rank is None or world_size is None:
        env_rank, env_world = shard_from_env()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {format!r}")
    if format == "heic" and not heif_installed():
        raise ValueError(missing_extra("HEIC"))
    raw = RawOptions(half_size=raw_half_size, white_balance=raw_white_balance)
    single = is_file_output(inputs, output)
    output = Path(output)
    problem = _output_problem(output, file=single)
    if single and problem is None:
        problem = _file_output_problem(Path(os.fspath(inputs[0])), output, format)
    if problem is not None:
        raise ValueError(problem)
    started = time.perf_counter()
    result = BatchResult(rank=rank, world_size=world_size)

    def tell(kind: str, path: Path, message: str) -> None:
        if report is not None:
            report(f"{kind}: {show_path(path)}: {one_line(message)}")
        else:
            _log.log(logging.getLevelName(kind.upper()), "%s: %s", show_path(path), one_line(message))

    def written(job: Job, began: float) -> None:
        result.written.append(job.destination)
        seconds = time.perf_counter() - began
        _log.debug("%s -> %s (%.2f s)", show_path(job.source), show_path(job.destination), seconds)

    def fail(path: Path, reason: str) -> None:
        result.failed.append((path, reason))
        tell("error", path, reason)

    if single:
        jobs, problems = [Job(Path(os.fspath(inputs[0])), output)], []
    else:
        jobs, problems = collect_jobs(inputs, output, recursive=recursive, format=format)
    if world_size > 1:
        jobs = sorted(jobs, key=lambda job: job.destination.as_posix())[rank::world_size]
        problems = problems if rank == 0 else []
    for path, reason in problems:
        fail(path, reason)
    if jobs:
        if _single_host(world_size):  # other hosts' process ids cannot be checked from here
            remove_stale_temporaries(output.parent if single else output, recursive=not single)
        if enhancer is None:
            enhancer = Enhancer(
                weights,
                device=device,
                scale=scale,
                tile_size=tile_size,
                backend=backend,
                threads=threads,
                compile=compile,
                finish=finish,
                exposure=exposure,
            )
        _log.debug("%d file(s) to enhance with %r", len(jobs), enhancer)
    desc = f"enhance [{rank}/{world_size}]" if world_size > 1 else "enhance"
    bar = tqdm(jobs, unit="img", desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for job in bar:
        began = time.perf_counter()
        if job.destination.exists():
            if skip_existing:
                result.skipped.append(job.destination)
                continue
            if not overwrite:
                shown = show_path(job.destination)
                fail(job.source, f"{shown} exists (use --overwrite to replace it or --skip-existing)")
                continue
        try:
            if job.source.suffix.lower() in VIDEO_EXTENSIONS:
                problem = image_named_as_video(job.source)
                if problem is not None:
                    fail(job.source, problem)
                    continue
                enhance_video(
                    job.source,
                    job.destination,
                    enhancer=enhancer,
                    smoothing=temporal_smoothing,
                    batch_size=video_batch,
                    max_pixels=max_pixels,
                    overwrite=overwrite,
                    progress=progress,
                )
                written(job, began)
                continue
            warn = functools.partial(tell, "warning", job.source)
            picture = read_image(job.source, max_pixels=max_pixels, on_warning=warn, raw=raw)
            enhanced = enhancer.enhance_picture(picture)
            write_image(job.destination, enhanced, quality=quality, overwrite=overwrite, on_warning=warn)
        except (ImageReadError, ImageWriteError, VideoError, EnhanceError, ImportError) as error:
            fail(job.source, str(error))
        except FileExistsError:
            if skip_existing:  # another process finished it meanwhile
                result.skipped.append(job.destination)
            else:
                fail(job.source, f"{show_path(job.destination)} appeared while writing (another process?)")
        except (MemoryError, _DeviceOutOfMemory):
            fail(job.source, "out of memory (try a smaller tile size or a lower --max-pixels)")
        except Exception as error:  # one file must not stop the batch
            fail(job.source, f"unexpected error: {type(error).__name__}: {error}")
        else:
            written(job, began)
    bar.close()
    result.seconds = time.perf_counter() - started
    return result
