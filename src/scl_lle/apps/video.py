"""Video enhancement: ``scl-lle enhance clip.mp4 --output out/`` (needs PyAV: ``pip install 'scl-lle[video]'``).

Frames are decoded with PyAV (anything FFmpeg reads), enhanced in batches on the enhancer's device and encoded
again at the same resolution, with the same timestamps (so the same frame rate and duration), the same codec
family and pixel format where an encoder for them exists, and colour tags; audio streams are copied packet for
packet (no re-encoding). The file is written atomically like images.

Temporal stability: each frame's curve maps are estimated as for a photo, then blended with the running
(smoothed) maps of the previous frames by :class:`CurveSmoother`. Where a region of the picture has not
changed, the blend keeps most of the running maps, so the brightness of a static background no longer pumps
when a light blinks or a bright object moves nearby; where the picture changed (motion, a scene cut, a lamp
switched on) the new maps take over at once, so real brightness changes are followed in the same frame.

Exposure (:mod:`scl_lle.engine.exposure`) is held per shot: each frame's gain on the curve maps is solved as for a
photo, then averaged over the frames of the shot by the same smoother, and restarted at a scene cut (most of the
picture changed at once). A bright object passing through a shot therefore does not pull the gain, and with it
the brightness of everything else, up and down.
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
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.colour import luminance
from ..engine.enhancer import Enhancer
from ..engine.exposure import OFF, Exposure, parse_exposure, scale_maps
from ..io.files import atomic_write
from ..io.image import DEFAULT_MAX_PIXELS
from ..io.pixels import from_unit, tensor_view, to_unit
from ..models.dcenet import downsample

__all__ = [
    "DEFAULT_SMOOTHING",
    "VIDEO_EXTENSIONS",
    "CurveSmoother",
    "VideoError",
    "VideoReadError",
    "VideoResult",
    "VideoWriteError",
    "enhance_frames",
    "enhance_video",
    "frame_luma",
    "read_video_frames",
]

#: File endings treated as video (``scl-lle enhance`` sends them here instead of to the image reader).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv"}
    | {".ogv", ".3gp"}
)

#: Default weight of the running curve maps in :class:`CurveSmoother` (0 turns smoothing off).
DEFAULT_SMOOTHING = 0.9

# Output container (FFmpeg muxer name) by file ending: the temporary file's name cannot tell FFmpeg.
_MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".mpg": "mpeg",
    ".mpeg": "mpeg",
    ".ts": "mpegts",
    ".mts": "mpegts",
    ".m2ts": "mpegts",
    ".wmv": "asf",
    ".flv": "flv",
    ".ogv": "ogg",
    ".3gp": "3gp",
}
# Encoders of the same codec family as the input's codec, best first.
_FAMILY = {
    "h264": ("libx264", "libopenh264"),
    "hevc": ("libx265", "libx264"),
    "vp9": ("libvpx-vp9",),
    "vp8": ("libvpx",),
    "av1": ("libsvtav1", "libaom-av1", "libx264"),
    "mpeg4": ("mpeg4",),
    "msmpeg4v3": ("msmpeg4",),
    "mpeg2video": ("mpeg2video",),
    "mpeg1video": ("mpeg1video",),
    "mjpeg": ("mjpeg",),
    "ffv1": ("ffv1",),
    "prores": ("prores_ks",),
    "theora": ("libtheora",),
    "wmv2": ("wmv2",),
    "flv1": ("flv",),
}
# Fallback encoders per container when the input's family cannot be written.
_CONTAINER_DEFAULT = {
    "webm": ("libvpx-vp9", "libvpx"),
    "avi": ("mpeg4", "mjpeg"),
    "ogg": ("libtheora",),
    "mpeg": ("mpeg2video",),
    "asf": ("wmv2", "mpeg4"),
    "flv": ("flv", "libx264"),
}
# Constant-quality settings (visually transparent) for encoders that take them as options.
_QUALITY_OPTIONS = {
    # rc-lookahead 20 (medium's default is 40): x264 holds that many frames, 100 MB at 1080p for the extra 20.
    "libx264": {"crf": "18", "preset": "medium", "rc-lookahead": "20"},
    "libx265": {"crf": "20", "preset": "medium"},
    "libvpx-vp9": {"crf": "24", "b": "0"},
    "libaom-av1": {"crf": "28", "b": "0"},
    "libsvtav1": {"crf": "30"},
}


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


def frame_luma(frames: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``(B, 3, H, W)`` in [0, 1] → ``(B, 1, H, W)``."""
    return luminance(frames)


class CurveSmoother:
    """Change-aware exponential moving average of curve maps across consecutive frames.

    The picture is summarised as a grid of local mean luma values (cells of ``cell`` x ``cell`` pixels, which
    averages sensor noise away). For each cell, the relative change ``2 |g - G| / (g + G + 0.02)`` between the
    frame's value ``g`` and the running value ``G`` decides how much of the running maps to keep: ``smoothing``
    while the change is below ``threshold / 2``, falling linearly to 0 at ``threshold``. So static regions are
    averaged over about ``1 / (1 - smoothing)`` frames, while moving objects, scene cuts and brightness steps get
    their own maps in the same frame. Because ``G`` is compared with every new frame, a slow drift cannot lag
    behind by more than about ``threshold``.

    Args:
        smoothing: weight of the running maps in unchanged regions, in [0, 1); 0 turns smoothing off.
        threshold: relative change of a cell's mean luma at which its maps are replaced outright.
        cell: grid cell size in full-resolution pixels.
    """

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING, threshold: float = 0.2, cell: int = 8) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be within [0, 1), got {smoothing}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        if cell < 1:
            raise ValueError(f"cell must be >= 1, got {cell}")
        self.smoothing = float(smoothing)
        self.threshold = float(threshold)
        self.cell = int(cell)
        self._maps: torch.Tensor | None = None
        self._guide: torch.Tensor | None = None
        self._gain: torch.Tensor | None = None
        self._cuts: list[bool] = []

    def reset(self) -> None:
        """Forget the running state (the next frame starts afresh)."""
        self._maps = None
        self._guide = None
        self._gain = None
        self._cuts = []

    def __call__(self, frames: torch.Tensor, maps: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
        """Smooth the maps of consecutive frames ``(B, 3, H, W)``: ``maps`` ``(B, 3n, h, w)`` → ``(B, 3n, h, w)``.

        ``inplace``: write the smoothed maps into ``maps`` (full-resolution maps are large)."""
        if frames.shape[0] != maps.shape[0]:
            raise ValueError(f"{frames.shape[0]} frames but {maps.shape[0]} sets of curve maps")
        if self.smoothing == 0.0:
            return maps
        guides = downsample(frame_luma(frames.to(maps.dtype)), self.cell)
        out = maps if inplace else torch.empty_like(maps)
        self._cuts = []
        for i in range(maps.shape[0]):
            guide, new = guides[i : i + 1], maps[i : i + 1]
            if self._maps is None or self._guide is None or self._maps.shape != new.shape:
                self._maps, self._guide = new.clone(), guide.clone()
                self._cuts.append(True)
            else:
                change = 2 * (guide - self._guide).abs() / (guide + self._guide + 0.02)
                self._cuts.append(bool((change > self.threshold).float().mean() > 0.5))
                knee = self.threshold / 2
                keep = self.smoothing * ((self.threshold - change) / knee).clamp_(0.0, 1.0)
                self._guide = torch.lerp(guide, self._guide, keep)
                if keep.shape[-2:] != new.shape[-2:]:
                    keep = F.interpolate(keep, size=new.shape[-2:], mode="bilinear", align_corners=False)
                torch.lerp(new, self._maps, keep, out=self._maps)
            out[i] = self._maps[0]
        return out

    def smooth_gains(self, gains: torch.Tensor) -> torch.Tensor:
        """Average the exposure gains ``(B,)`` of the frames last passed to :meth:`__call__` over their shot.

        A running mean with weight ``smoothing``, restarted at a scene cut (a frame where more than half of the
        grid cells changed by more than ``threshold``). Returns ``(B,)``.
        """
        if self.smoothing == 0.0:
            return gains
        if len(self._cuts) != gains.shape[0]:
            raise ValueError(f"{gains.shape[0]} gains but {len(self._cuts)} frames were smoothed last")
        out = torch.empty_like(gains)
        for i, cut in enumerate(self._cuts):
            new = gains[i : i + 1]
            self._gain = new.clone() if cut or self._gain is None else torch.lerp(new, self._gain, self.smoothing)
            out[i] = self._gain[0]
        return out


#: Pixels (frames x frame size) enhanced in one pass, per pixel of a tile: with the network at full resolution a
#: pass holds its frames' 24-channel curve maps, so this bounds the video's memory by the tile size.
PASS_PIXELS_PER_TILE_PIXEL = 8


def frames_per_pass(tile_size: int | None, frame_pixels: int, batch_size: int) -> int:
    """How many of ``batch_size`` frames of ``frame_pixels`` pixels go through the enhancer together: at most
    ``PASS_PIXELS_PER_TILE_PIXEL * tile_size**2`` pixels, at least one frame (``tile_size=None``: all)."""
    if tile_size is None:
        return batch_size
    budget = PASS_PIXELS_PER_TILE_PIXEL * tile_size * tile_size
    return max(1, min(batch_size, budget // max(frame_pixels, 1)))


def enhance_frames(
    enhancer: Enhancer,
    frames: torch.Tensor,
    smoother: CurveSmoother | None = None,
    exposure: Exposure | None = None,
) -> torch.Tensor:
    """Enhance consecutive frames ``(B, 3, H, W)`` in [0, 1] on the enhancer's device → ``(B, 3, H, W)``.

    ``exposure``: as for the enhancer (``None``: its setting); the gains are smoothed per shot by ``smoother``.
    """
    maps = enhancer.curve_maps(frames)
    with torch.inference_mode():  # the maps are smoothed and scaled in place (full-resolution maps are large)
        if smoother is not None:
            maps = smoother(frames.to(maps.device), maps, inplace=True)
        gains = enhancer.exposure_gain(frames, maps, exposure)
        if smoother is not None and isinstance(gains, torch.Tensor):
            gains = smoother.smooth_gains(gains)
        maps = scale_maps(maps, gains, inplace=True)
    return enhancer.apply_curve_maps(frames, maps, exposure=OFF)


def _high_depth(pix_fmt: str | None, av: Any) -> bool:
    if not pix_fmt:
        return False
    try:
        return max(component.bits for component in av.VideoFormat(pix_fmt).components) > 8
    except (ValueError, TypeError):
        return False


def _encoder_names(codec: str, muxer: str, av: Any) -> list[str]:
    candidates = [*_FAMILY.get(codec, ()), codec, *_CONTAINER_DEFAULT.get(muxer, ()), "libx264", "mpeg4"]
    names: list[str] = []
    for name in candidates:
        if name in names or name not in av.codecs_available:
            continue
        try:
            if av.codec.Codec(name, "w").type == "video":
                names.append(name)
        except Exception:  # a decoder-only name
            continue
    return names


def _pixel_format(encoder: Any, wanted: str | None) -> str:
    formats = [f.name for f in (encoder.video_formats or ())]
    if not formats or (wanted and wanted in formats):
        return wanted or "yuv420p"
    return "yuv420p" if "yuv420p" in formats else formats[0]


def _to_tensor(batch: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``B`` frames ``(H, W, 3)`` uint8 / uint16 → ``(B, 3, H, W)`` float32 in [0, 1] on ``device``."""
    stacked = tensor_view(np.stack(batch))
    if device.type == "cuda":
        stacked = (stacked.to(torch.int32) if stacked.dtype == torch.uint16 else stacked).pin_memory()
    return to_unit(stacked, torch.float32, device).permute(0, 3, 1, 2)


def _from_tensor(frames: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] → ``(B, H, W, 3)`` ``dtype`` (uint8 or uint16) on the CPU."""
    kind = torch.uint16 if dtype == np.uint16 else torch.uint8
    pixels = from_unit(frames.permute(0, 2, 3, 1), kind).cpu()
    array = pixels.view(torch.int16).numpy().view(np.uint16) if kind == torch.uint16 else pixels.numpy()
    return np.ascontiguousarray(array)


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
    scale: int = 1,
    smoothing: float = DEFAULT_SMOOTHING,
    exposure: Exposure | None = None,
    batch_size: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_frames: Callable[[int, int | None], None] | None = None,
) -> VideoResult:
    """Enhance the first video stream of ``source`` into ``destination`` (written atomically), copying audio.

    Args:
        source, destination: video files; the destination's ending picks the container (``.mp4``, ``.mkv``...).
        enhancer: the :class:`~scl_lle.engine.enhancer.Enhancer` to use; else one is made from ``weights`` (``None``:
            the default model), ``device`` and ``scale``.
        smoothing: temporal smoothing of the curve maps (see :class:`CurveSmoother`); 0 turns it off.
        exposure: ``"auto"``, ``"off"`` or a mean brightness in (0, 1) (:mod:`scl_lle.engine.exposure`), held per shot;
            ``None``: the enhancer's setting (``"auto"`` for one made here).
        batch_size: frames decoded and enhanced together on the device; passes hold at most
            :func:`frames_per_pass` of them (bounded by the enhancer's ``tile_size``).
        max_pixels: refuse frames larger than this (``None`` or 0: no limit).
        max_frames, max_seconds: refuse videos with more frames or a longer duration (``None``: no limit).
        overwrite: replace an existing ``destination`` (else :class:`FileExistsError`).
        progress: show a progress bar with frames per second on stderr.
        on_frames: called with ``(frames done, total or None)`` after every batch.

    Returns:
        A :class:`VideoResult`.

    Raises:
        ImportError: PyAV is not installed.
        VideoReadError, VideoWriteError: the input cannot be decoded or breaks a limit; the output cannot be
            written. ``destination`` is then untouched.
    """
    av = _import_av()
    source, destination = Path(source), Path(destination)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be within [0, 1), got {smoothing}")
    if exposure is not None:
        exposure = parse_exposure(exposure)
    muxer = _MUXERS.get(destination.suffix.lower())
    if muxer is None:
        raise VideoWriteError(f"cannot write video files ending in {destination.suffix!r}")
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists")
    if enhancer is None:
        enhancer = Enhancer(weights, device=device, scale=scale)
    started = time.perf_counter()
    result = VideoResult(path=destination)
    with _open_input(av, source) as container:
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
        try:
            with atomic_write(destination, overwrite=overwrite) as temporary:
                _transcode(
                    av,
                    container,
                    stream,
                    temporary,
                    muxer,
                    enhancer,
                    CurveSmoother(smoothing) if smoothing > 0 else None,
                    exposure,
                    batch_size,
                    (max_frames, max_seconds),
                    result,
                    tqdm(
                        total=total,
                        unit="frame",
                        desc=source.name,
                        disable=not progress,
                        file=sys.stderr,
                        dynamic_ncols=True,
                        leave=False,
                    ),
                    on_frames,
                )
        except (VideoError, FileExistsError):
            raise
        except av.FFmpegError as error:
            raise VideoWriteError(f"FFmpeg failed: {error}") from None
    result.seconds = time.perf_counter() - started
    return result


def _duration_seconds(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
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
    enhancer: Enhancer,
    smoother: CurveSmoother | None,
    exposure: Exposure | None,
    batch_size: int,
    limits: tuple[int | None, float | None],
    result: VideoResult,
    bar: tqdm,
    on_frames: Callable[[int, int | None], None] | None,
) -> None:
    """Decode, enhance and encode ``stream`` into ``target``, copying the audio packets alongside."""
    max_frames, max_seconds = limits
    in_context = stream.codec_context
    high = _high_depth(in_context.pix_fmt, av)
    rgb_format, dtype = ("rgb48le", np.uint16) if high else ("rgb24", np.uint8)
    audio_in = list(container.streams.audio)
    try:
        output = av.open(os.fspath(target), "w", format=muxer)
    except av.FFmpegError as error:
        raise VideoWriteError(f"cannot create the output ({error})") from None
    with output, bar:
        names = _encoder_names(in_context.name, muxer, av)
        if not names:
            raise VideoWriteError("no video encoder available in this FFmpeg build")
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        out_stream = None
        for name in names:
            try:
                out_stream = output.add_stream(name, rate=rate)
                break
            except (av.FFmpegError, ValueError):
                continue
        if out_stream is None:
            raise VideoWriteError(f"the {muxer} container takes none of the encoders {', '.join(names)}")
        encoder = out_stream.codec_context
        encoder.width, encoder.height = in_context.width, in_context.height
        encoder.pix_fmt = _pixel_format(encoder.codec, in_context.pix_fmt)
        for tag in ("color_range", "colorspace", "color_primaries", "color_trc"):
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(encoder, tag, getattr(in_context, tag))
        if stream.sample_aspect_ratio:
            encoder.sample_aspect_ratio = stream.sample_aspect_ratio
        if stream.time_base is not None and stream.time_base.denominator <= 65535:
            encoder.time_base = stream.time_base  # keeps the input's timestamps exact (variable rate too)
        encoder.options = dict(_QUALITY_OPTIONS.get(encoder.name, {}))
        if encoder.name not in _QUALITY_OPTIONS:
            bits = in_context.bit_rate or int(encoder.width * encoder.height * float(rate) * 0.25)
            encoder.bit_rate = max(int(bits * 1.5), 1_000_000)
        audio_out = {s.index: output.add_stream_from_template(s) for s in audio_in}
        result.width, result.height, result.codec = encoder.width, encoder.height, encoder.name
        result.audio_streams = len(audio_out)

        pending_audio: list[Any] = []  # audio packets held until the video stream's header is written
        started = False
        batch: list[np.ndarray] = []
        stamps: list[tuple[int | None, Fraction | None, Any, Any]] = []  # pts, time base, colour space, range

        def mux(packets: list[Any]) -> None:
            nonlocal started
            if packets and not started:
                started = True
                output.mux(packets)
                for packet in pending_audio:
                    output.mux(packet)
                pending_audio.clear()
            elif packets:
                output.mux(packets)

        def flush() -> None:
            if not batch:
                return
            step = frames_per_pass(enhancer.tile_size, encoder.width * encoder.height, len(batch))
            for start in range(0, len(batch), step):  # each pass encoded before the next is enhanced
                frames = _to_tensor(batch[start : start + step], enhancer.device)
                result.brightness += frames.flatten(1).mean(dim=1).tolist()
                enhanced = _from_tensor(enhance_frames(enhancer, frames, smoother, exposure), dtype)
                del frames
                for pixels, (pts, time_base, colorspace, color_range) in zip(
                    enhanced, stamps[start : start + step], strict=True
                ):
                    frame = av.VideoFrame.from_ndarray(pixels, format=rgb_format)
                    frame = frame.reformat(
                        format=encoder.pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range
                    )
                    frame.pts, frame.time_base = pts, time_base
                    mux(encoder.encode(frame))
            result.frames += len(batch)
            bar.update(len(batch))
            if on_frames is not None:
                on_frames(result.frames, bar.total)
            batch.clear()
            stamps.clear()

        for packet in _demux(container, [stream, *audio_in]):
            if packet.stream.index in audio_out:
                if packet.dts is None:
                    continue
                packet.stream = audio_out[packet.stream.index]
                if started:
                    output.mux(packet)
                else:
                    pending_audio.append(packet)
                continue
            try:
                decoded = packet.decode()
            except av.FFmpegError as error:
                raise VideoReadError(f"corrupt video data ({error})") from None
            for frame in decoded:
                _check_limits(frame, result.frames + len(batch), max_frames, max_seconds)
                if not started and not batch and frame.rotation:
                    out_stream.set_display_rotation(frame.rotation)
                # Frames are converted at the stream's size (a mid-stream size change is scaled back to it).
                batch.append(frame.to_ndarray(format=rgb_format, width=encoder.width, height=encoder.height))
                stamps.append((frame.pts, frame.time_base, frame.colorspace, frame.color_range))
                if len(batch) >= batch_size:
                    flush()
        flush()
        if result.frames == 0:
            raise VideoReadError("no video frames could be decoded")
        mux(encoder.encode(None))
        for packet in pending_audio:
            output.mux(packet)


def _check_limits(frame: Any, done: int, max_frames: int | None, max_seconds: float | None) -> None:
    if max_frames is not None and done >= max_frames:
        raise VideoReadError(f"more than the limit of {max_frames} frames")
    if max_seconds is not None and frame.time is not None and frame.time > max_seconds:
        raise VideoReadError(f"longer than the limit of {max_seconds:g} s")
