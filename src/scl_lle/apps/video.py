"""Video enhancement: ``scl-lle enhance clip.mp4 --output out/`` (needs PyAV: ``pip install 'scl-lle[video]'``).

Frames are decoded with PyAV (anything FFmpeg reads), enhanced in batches on the enhancer's device with curve
maps smoothed across frames and exposure held per shot (:mod:`scl_lle.apps.smoothing`), and encoded again at the
same resolution, with the same timestamps (so the same frame rate and duration), the same codec family and
pixel format where an encoder for them exists, and colour tags (:mod:`scl_lle.apps.video_encoding`); audio
streams are copied packet for packet (no re-encoding). The file is written atomically like images.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .._renamed import UNSET, renamed
from ..defaults import DEFAULT_SMOOTHING, DEFAULT_VIDEO_BATCH
from ..engine.enhancer import Enhancer
from ..engine.exposure import Exposure, parse_exposure
from ..io.files import IMAGE_EXTENSIONS, atomic_write
from ..io.image import DEFAULT_MAX_PIXELS
from .smoothing import CurveSmoother
from .video_encoding import MUXERS, FrameSettings, FrameWriter, add_video_stream, high_depth

__all__ = [
    "MEDIA_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoError",
    "VideoReadError",
    "VideoResult",
    "VideoWriteError",
    "enhance_video",
    "estimated_frames",
    "is_video_path",
    "read_video_frames",
]

#: File endings treated as video (``scl-lle enhance`` sends them here instead of to the image reader): those
#: whose container can be written.
VIDEO_EXTENSIONS = frozenset(MUXERS)
#: Every file ending the apps take: images and videos.
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a video ending (:data:`VIDEO_EXTENSIONS`, any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


class VideoError(Exception):
    """A video could not be enhanced; the message says why."""


class VideoReadError(VideoError):
    """The input could not be opened or decoded as a video (or breaks a limit)."""


class VideoWriteError(VideoError):
    """The output video could not be encoded or written."""


@dataclass
class VideoResult:
    """What :func:`enhance_video` did."""

    path: Path
    frames: int = 0
    width: int = 0
    height: int = 0
    codec: str = ""
    audio_streams: int = 0
    seconds: float = 0.0
    brightness: list[float] = field(default_factory=list, repr=False)  # mean of each input frame, in [0, 1]

    @property
    def fps(self) -> float:
        """Frames enhanced per second of processing."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError("video needs PyAV: pip install 'scl-lle[video]' (or pip install av)") from None
    return av


def read_video_frames(
    path: str | os.PathLike[str], *, max_frames: int | None = None
) -> tuple[np.ndarray, Fraction | None]:
    """Decode a (short) video into ``(T, H, W, 3)`` uint8 RGB frames and its average frame rate (for tests, tools)."""
    av = _import_av()
    frames: list[np.ndarray] = []
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise VideoReadError(f"{path}: no video frames")
    return np.stack(frames), rate


def _open_input(av: Any, source: Path) -> Any:
    if not source.is_file():
        raise VideoReadError("no such file" if not source.exists() else "not a regular file")
    if source.stat().st_size == 0:
        raise VideoReadError("empty file (0 bytes)")
    try:
        return av.open(os.fspath(source), "r")
    except av.FFmpegError as error:
        raise VideoReadError(f"cannot open as a video ({getattr(error, 'strerror', None) or error})") from None


def enhance_video(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    enhancer: Enhancer | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str = "auto",
    scale: int | str = 1,
    temporal_smoothing: float = DEFAULT_SMOOTHING,
    exposure: Exposure | None = None,
    video_batch: int = DEFAULT_VIDEO_BATCH,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_frames: Callable[[int, int | None], None] | None = None,
    smoothing: float = UNSET,
    batch_size: int = UNSET,
) -> VideoResult:
    """Enhance the first video stream of ``source`` into ``destination`` (written atomically), copying audio.

    Long because: the documented public signature; the work is in :func:`_check_stream` and :func:`_transcode`.

    Args:
        source, destination: video files; the destination's ending picks the container (``.mp4``, ``.mkv``...).
        enhancer: the :class:`~scl_lle.engine.enhancer.Enhancer` to use; else one is made from ``weights``
            (``None``: the default model), ``device`` and ``scale``.
        temporal_smoothing: temporal smoothing of the curve maps (see :class:`~scl_lle.apps.smoothing.CurveSmoother`);
            0 turns it off.
        exposure: ``"auto"``, ``"off"`` or a mean brightness in (0, 1) (:mod:`scl_lle.engine.exposure`), held per
            shot; ``None``: the enhancer's setting (``"auto"`` for one made here).
        video_batch: frames decoded and enhanced together on the device; passes hold at most
            :func:`~scl_lle.apps.video_encoding.frames_per_pass` of them (bounded by the enhancer's ``tile``).
        max_pixels: refuse frames larger than this (``None`` or 0: no limit).
        max_frames, max_seconds: refuse videos with more frames or a longer duration (``None``: no limit).
        overwrite: replace an existing ``destination`` (else :class:`FileExistsError`).
        progress: show a progress bar with frames per second on stderr.
        on_frames: called with ``(frames done, total or None)`` after every batch.
        smoothing, batch_size: the old names of ``temporal_smoothing`` and ``video_batch`` (deprecated).

    Returns:
        A :class:`VideoResult`.

    Raises:
        ImportError: PyAV is not installed.
        VideoReadError, VideoWriteError: the input cannot be decoded or breaks a limit; the output cannot be
            written. ``destination`` is then untouched.
    """
    av = _import_av()
    source, destination = Path(source), Path(destination)
    temporal_smoothing = renamed("enhance_video", "smoothing", "temporal_smoothing", smoothing, temporal_smoothing)
    video_batch = renamed("enhance_video", "batch_size", "video_batch", batch_size, video_batch)
    if video_batch < 1:
        raise ValueError(f"video_batch must be >= 1, got {video_batch}")
    if not 0.0 <= temporal_smoothing < 1.0:
        raise ValueError(f"temporal_smoothing must be within [0, 1), got {temporal_smoothing}")
    if exposure is not None:
        exposure = parse_exposure(exposure)
    muxer = MUXERS.get(destination.suffix.lower())
    if muxer is None:
        raise VideoWriteError(f"cannot write video files ending in {destination.suffix!r}")
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists")
    if enhancer is None:
        enhancer = Enhancer(weights, device=device, scale=scale)
    smoother = CurveSmoother(temporal_smoothing) if temporal_smoothing > 0 else None
    settings = FrameSettings(enhancer, smoother, exposure, video_batch, on_frames)
    started = time.perf_counter()
    result = VideoResult(path=destination)
    with _open_input(av, source) as container:
        stream = _check_stream(container, max_pixels, max_frames, max_seconds)
        try:
            with atomic_write(destination, overwrite=overwrite) as temporary:
                bar = tqdm(
                    total=stream.frames or None,
                    unit="frame",
                    desc=source.name,
                    disable=not progress,
                    file=sys.stderr,
                    dynamic_ncols=True,
                    leave=False,
                )
                _transcode(av, container, stream, temporary, muxer, settings, (max_frames, max_seconds), result, bar)
        except (VideoError, FileExistsError):
            raise
        except av.FFmpegError as error:
            raise VideoWriteError(f"FFmpeg failed: {error}") from None
    result.seconds = time.perf_counter() - started
    return result


def _check_stream(container: Any, max_pixels: int | None, max_frames: int | None, max_seconds: float | None) -> Any:
    """The container's first video stream, refused if it has none or its header breaks a limit."""
    if not container.streams.video:
        raise VideoReadError("no video stream")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if max_pixels and width * height > max_pixels:
        raise VideoReadError(f"frames of {width}x{height} exceed the limit of {max_pixels:,} pixels")
    duration = _duration_seconds(container, stream)
    if max_seconds is not None and duration is not None and duration > max_seconds:
        raise VideoReadError(f"{duration:.1f} s long, more than the limit of {max_seconds:g} s")
    total = stream.frames or None
    if max_frames is not None and total is not None and total > max_frames:
        raise VideoReadError(f"{total} frames, more than the limit of {max_frames}")
    return stream


def _duration_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def estimated_frames(path: str | os.PathLike[str]) -> int | None:
    """The number of frames of the video at ``path`` from its header (count, or duration x rate), if it says."""
    with contextlib.suppress(Exception):
        av = _import_av()
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            seconds = _duration_seconds(container, stream)
            return max(1, round(seconds * float(rate))) if rate and seconds is not None else None
    return None


def _demux(container: Any, streams: list[Any]) -> Iterator[Any]:
    av = _import_av()
    try:
        yield from container.demux(*streams)
    except av.FFmpegError as error:
        raise VideoReadError(f"corrupt or truncated video ({error})") from None


def _transcode(
    av: Any,
    container: Any,
    stream: Any,
    target: Path,
    muxer: str,
    settings: FrameSettings,
    limits: tuple[int | None, float | None],
    result: VideoResult,
    bar: tqdm,
) -> None:
    """Decode, enhance and encode ``stream`` into ``target`` within ``limits`` (max frames, max seconds),
    copying the audio packets alongside."""
    audio_in = list(container.streams.audio)
    try:
        output = av.open(os.fspath(target), "w", format=muxer)
    except av.FFmpegError as error:
        raise VideoWriteError(f"cannot create the output ({error})") from None
    with output, bar:
        try:
            out_stream = add_video_stream(av, output, stream, muxer)
        except LookupError as error:
            raise VideoWriteError(str(error)) from None
        audio_out = {s.index: output.add_stream_from_template(s) for s in audio_in}
        encoder = out_stream.codec_context
        result.width, result.height, result.codec = encoder.width, encoder.height, encoder.name
        result.audio_streams = len(audio_out)
        writer = FrameWriter(av, output, out_stream, high_depth(stream.codec_context.pix_fmt, av), settings, bar)
        for packet in _demux(container, [stream, *audio_in]):
            if packet.stream.index in audio_out:
                if packet.dts is not None:
                    packet.stream = audio_out[packet.stream.index]
                    writer.audio(packet)
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                raise VideoReadError(f"corrupt video data ({error})") from None
            for frame in decoded:
                _check_limits(frame, writer.taken, *limits)
                writer.add(frame)
        writer.flush()
        result.frames, result.brightness = writer.frames, writer.brightness
        if result.frames == 0:
            raise VideoReadError("no video frames could be decoded")
        writer.close()


def _check_limits(frame: Any, done: int, max_frames: int | None, max_seconds: float | None) -> None:
    if max_frames is not None and done >= max_frames:
        raise VideoReadError(f"more than the limit of {max_frames} frames")
    if max_seconds is not None and frame.time is not None and frame.time > max_seconds:
        raise VideoReadError(f"longer than the limit of {max_seconds:g} s")
