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
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..defaults import DEFAULT_SMOOTHING, DEFAULT_TILE, DEFAULT_VIDEO_BATCH, OUTPUT_FORMATS
from ..engine.backends import shard_from_env
from ..engine.enhancer import EnhanceError, Enhancer
from ..engine.exposure import OFF, Exposure, parse_exposure
from ..io.errors import one_line, show_path
from ..io.files import remove_stale_temporaries
from ..io.formats import RawOptions, heif_installed, missing_extra
from ..io.image import DEFAULT_MAX_PIXELS, ImageReadError, ImageWriteError, read_image, write_image
from ..io.sniff import image_named_as_video
from .batch_jobs import (
    Inputs,
    Job,
    as_input_list,
    collect_jobs,
    file_ending_problem,
    file_output_problem,
    is_file_output,
    output_problem,
)
from .video import VideoError, enhance_video, is_video_path

_log = logging.getLogger(__name__)

__all__ = ["BatchResult", "enhance"]

_DeviceOutOfMemory = getattr(torch, "OutOfMemoryError", MemoryError)


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


def _single_host(world_size: int) -> bool:
    """Whether all ranks run on this machine (process ids are then comparable across ranks)."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    return world_size == 1 or (local is not None and local.isdigit() and int(local) == world_size)


def _shard(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``rank`` and ``world_size``, from ``RANK`` / ``WORLD_SIZE`` where not given; checked."""
    if rank is None or world_size is None:
        env_rank, env_world = shard_from_env()
        rank = env_rank if rank is None else rank
        world_size = env_world if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


def _check_options(
    quality: int, skip_existing: bool, overwrite: bool, exposure: Exposure, local_weighting: bool
) -> None:
    if skip_existing and overwrite:
        raise ValueError("skip_existing and overwrite exclude each other")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1..100, got {quality}")
    if local_weighting and parse_exposure(exposure) == OFF:
        raise ValueError("local_weighting acts at a level: use it with exposure 'auto' or a number, not 'off'")


def _check_format(format: str) -> None:
    if format not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {format!r}")
    if format == "heic" and not heif_installed():
        raise ValueError(missing_extra("HEIC"))


def _plan(
    inputs: list[str | os.PathLike[str]], output: Path, single: bool, recursive: bool, format: str
) -> tuple[list[Job], list[tuple[Path, str]]]:
    """The jobs and the unusable inputs; ``single``: ``output`` is the one output file (checked)."""
    problem = output_problem(output, file=single)
    if single and problem is None:
        problem = file_output_problem(Path(os.fspath(inputs[0])), output, format)
    if problem is not None:
        raise ValueError(problem)
    if single:
        return [Job(Path(os.fspath(inputs[0])), output)], []
    return collect_jobs(inputs, output, recursive=recursive, format=format)


class _Run:
    """One batch's per-file work and bookkeeping: each job enhanced, skipped or failed, and told as it happens."""

    def __init__(
        self, result: BatchResult, report: Callable[[str], None] | None, skip_existing: bool, overwrite: bool
    ) -> None:
        self.result, self.report = result, report
        self.skip_existing, self.overwrite = skip_existing, overwrite

    def tell(self, kind: str, path: Path, message: str) -> None:
        if self.report is not None:
            self.report(f"{kind}: {show_path(path)}: {one_line(message)}")
        else:
            _log.log(logging.getLevelName(kind.upper()), "%s: %s", show_path(path), one_line(message))

    def fail(self, path: Path, reason: str) -> None:
        self.result.failed.append((path, reason))
        self.tell("error", path, reason)

    def run(self, job: Job, work: Callable[[Job], str | None]) -> None:
        """Do ``job`` with ``work`` (which returns a reason when the file cannot be used) unless its output
        exists; a failure of any kind is recorded and the batch goes on."""
        began = time.perf_counter()
        if job.destination.exists():
            if self.skip_existing:
                self.result.skipped.append(job.destination)
                return
            if not self.overwrite:
                shown = show_path(job.destination)
                self.fail(job.source, f"{shown} exists (use --overwrite to replace it or --skip-existing)")
                return
        try:
            problem = work(job)
        except (ImageReadError, ImageWriteError, VideoError, EnhanceError, ImportError) as error:
            problem = str(error)
        except FileExistsError:
            if self.skip_existing:  # another process finished it meanwhile
                self.result.skipped.append(job.destination)
                return
            problem = f"{show_path(job.destination)} appeared while writing (another process?)"
        except (MemoryError, _DeviceOutOfMemory):
            problem = "out of memory (try a smaller tile size or a lower --max-pixels)"
        except Exception as error:  # one file must not stop the batch
            problem = f"unexpected error: {type(error).__name__}: {error}"
        if problem is not None:
            self.fail(job.source, problem)
            return
        self.result.written.append(job.destination)
        seconds = time.perf_counter() - began
        _log.debug("%s -> %s (%.2f s)", show_path(job.source), show_path(job.destination), seconds)


def enhance(
    inputs: Inputs,
    output: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    scale: int | str = 1,
    recursive: bool = False,
    format: str = "same",
    quality: int = 95,
    skip_existing: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    tile: int | None = DEFAULT_TILE,
    enhancer: Enhancer | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    backend: str = "auto",
    threads: int | None = None,
    compile: bool = False,
    finish: bool = True,
    exposure: Exposure = "auto",
    local_weighting: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    temporal_smoothing: float = DEFAULT_SMOOTHING,
    video_batch: int = DEFAULT_VIDEO_BATCH,
    raw_half_size: bool = False,
    raw_white_balance: str = "camera",
) -> BatchResult:
    """Enhance image files and folders into ``output``; the Python face of ``scl-lle enhance``.

    Long because: the documented public signature; the work is in :mod:`scl_lle.apps.batch_jobs` and ``_Run``.

    Args:
        inputs: a file, folder or glob pattern, or a sequence of them.
        output: the output folder (created if needed); it mirrors the input tree. For a single input file, an
            ``output`` with an image ending (a video ending for a video) is that output file instead
            (:func:`is_file_output`); its type follows the ending.
        weights, device, scale, tile: as for :class:`~scl_lle.engine.enhancer.Enhancer` (or pass ``enhancer``).
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
        backend, threads, compile, finish, exposure, local_weighting: as for
            :class:`~scl_lle.engine.enhancer.Enhancer` (``exposure``: ``"auto"``, ``"off"`` or a mean brightness in
            (0, 1); videos hold it per shot and lift every region alike, whatever ``local_weighting`` says).
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
            that is the input or whose ending disagrees with ``format``, or one input file and an ``output``
            named like a file it cannot be written as (``out.gif``; :func:`file_ending_problem`).
    """
    _check_options(quality, skip_existing, overwrite, exposure, local_weighting)
    rank, world_size = _shard(rank, world_size)
    _check_format(format)
    raw = RawOptions(half_size=raw_half_size, white_balance=raw_white_balance)
    inputs = as_input_list(inputs)
    single = is_file_output(inputs, output)
    if (problem := file_ending_problem(inputs, output)) is not None:  # before Path() drops a trailing slash
        raise ValueError(problem)
    output = Path(output)
    started = time.perf_counter()
    jobs, problems = _plan(inputs, output, single, recursive, format)
    run = _Run(BatchResult(rank=rank, world_size=world_size), report, skip_existing, overwrite)
    if world_size > 1:
        jobs = sorted(jobs, key=lambda job: job.destination.as_posix())[rank::world_size]
        problems = problems if rank == 0 else []
    for path, reason in problems:
        run.fail(path, reason)
    if jobs:
        if _single_host(world_size):  # other hosts' process ids cannot be checked from here
            remove_stale_temporaries(output.parent if single else output, recursive=not single)
        if enhancer is None:
            enhancer = Enhancer(
                weights,
                device=device,
                scale=scale,
                tile=tile,
                backend=backend,
                threads=threads,
                compile=compile,
                finish=finish,
                exposure=exposure,
                local_weighting=local_weighting,
            )
        _log.debug("%d file(s) to enhance with %r", len(jobs), enhancer)

    def work(job: Job) -> str | None:
        assert enhancer is not None  # made above whenever there are jobs
        if is_video_path(job.source):
            problem = image_named_as_video(job.source)
            if problem is None:
                enhance_video(
                    job.source,
                    job.destination,
                    enhancer=enhancer,
                    temporal_smoothing=temporal_smoothing,
                    video_batch=video_batch,
                    max_pixels=max_pixels,
                    overwrite=overwrite,
                    progress=progress,
                )
            return problem
        warn = functools.partial(run.tell, "warning", job.source)
        picture = read_image(job.source, max_pixels=max_pixels, on_warning=warn, raw=raw)
        enhanced = enhancer.enhance_picture(picture)
        write_image(job.destination, enhanced, quality=quality, overwrite=overwrite, on_warning=warn)
        return None

    desc = f"enhance [{rank}/{world_size}]" if world_size > 1 else "enhance"
    for job in tqdm(jobs, unit="img", desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True):
        run.run(job, work)
    run.result.seconds = time.perf_counter() - started
    return run.result
