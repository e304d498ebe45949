"""How an enhanced video is written: container, encoder, and the frames enhanced and encoded in passes.

:func:`add_video_stream` picks the container by file ending and an encoder of the input's codec family;
:class:`FrameWriter` batches decoded frames, enhances them (:func:`scl_lle.apps.smoothing.enhance_frames`) in
passes bounded by the enhancer's tile size (:func:`frames_per_pass`), encodes them and muxes the packets with
the copied audio.

The output keeps the input's resolution, timestamps, pixel format (where the encoder has it) and colour tags;
the encoder is the input codec's family where this FFmpeg build has one, else the container's usual one, at a
constant, visually transparent quality (or 1.5x the input's bit rate for encoders without a quality setting).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..engine.enhancer import Enhancer
from ..engine.exposure import Exposure
from ..io.pixels import from_unit, tensor_view, to_unit
from .smoothing import CurveSmoother, enhance_frames

__all__ = [
    "MUXERS",
    "PASS_PIXELS_PER_TILE_PIXEL",
    "FrameSettings",
    "FrameWriter",
    "add_video_stream",
    "frames_per_pass",
    "high_depth",
]

#: Output container (FFmpeg muxer name) by file ending: the temporary file's name cannot tell FFmpeg. Its keys
#: are the video endings (:data:`scl_lle.apps.video.VIDEO_EXTENSIONS`).
MUXERS = {
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
#: Pixels (frames x frame size) enhanced in one pass, per pixel of a tile: with the network at full resolution a
#: pass holds its frames' 24-channel curve maps, so this bounds the video's memory by the tile size.
PASS_PIXELS_PER_TILE_PIXEL = 8
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


def high_depth(pix_fmt: str | None, av: Any) -> bool:
    """Whether the pixel format ``pix_fmt`` has more than 8 bits per component (then frames go as 16-bit)."""
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


def add_video_stream(av: Any, output: Any, stream: Any, muxer: str) -> Any:
    """Add to ``output`` the video stream that re-encodes the input ``stream``; returns it (its ``codec_context``
    is the encoder). Raises :class:`LookupError` (with a message) if no encoder can be used."""
    in_context = stream.codec_context
    names = _encoder_names(in_context.name, muxer, av)
    if not names:
        raise LookupError("no video encoder available in this FFmpeg build")
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    out_stream = None
    for name in names:
        try:
            out_stream = output.add_stream(name, rate=rate)
            break
        except (av.FFmpegError, ValueError):
            continue
    if out_stream is None:
        raise LookupError(f"the {muxer} container takes none of the encoders {', '.join(names)}")
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
    return out_stream


def frames_per_pass(tile: int | None, frame_pixels: int, video_batch: int) -> int:
    """How many of ``video_batch`` frames of ``frame_pixels`` pixels go through the enhancer together: at most
    ``PASS_PIXELS_PER_TILE_PIXEL * tile**2`` pixels, at least one frame (``tile=None``: all)."""
    if tile is None:
        return video_batch
    budget = PASS_PIXELS_PER_TILE_PIXEL * tile * tile
    return max(1, min(video_batch, budget // max(frame_pixels, 1)))


def _to_tensor(batch: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """``B`` frames ``(H, W, 3)`` uint8 / uint16 → ``(B, 3, H, W)`` float32 in [0, 1] on ``device``."""
    stacked = tensor_view(np.stack(batch))
    if device.type == "cuda":
        stacked = (stacked.to(torch.int32) if stacked.dtype == torch.uint16 else stacked).pin_memory()
    return to_unit(stacked, torch.float32, device).permute(0, 3, 1, 2)


def _from_tensor(frames: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] → ``(B, H, W, 3)`` ``dtype`` (uint8 or uint16) on the CPU."""
    batch, _, height, width = frames.shape
    array = np.empty((batch, height, width, 3), dtype=dtype)
    target = tensor_view(array)
    target.copy_(from_unit(frames.permute(0, 2, 3, 1), target.dtype).cpu())
    return array


@dataclass(frozen=True)
class FrameSettings:
    """How the frames of one video are enhanced: ``on_frames(done, total or None)`` is called after each batch."""

    enhancer: Enhancer
    smoother: CurveSmoother | None
    exposure: Exposure | None
    video_batch: int
    on_frames: Callable[[int, int | None], None] | None = None


class FrameWriter:
    """Batches decoded frames, enhances and encodes them, and muxes the packets with the audio copied alongside
    (audio packets are held until the video stream's first packet, which writes the header).

    ``high``: frames go through the enhancer as 16-bit RGB (a high-depth input); ``bar``: counts the frames.
    ``frames`` (enhanced so far) and ``brightness`` (the mean of each input frame, in [0, 1]) are kept.
    """

    def __init__(self, av: Any, output: Any, out_stream: Any, high: bool, settings: FrameSettings, bar: tqdm) -> None:
        self.av, self.output, self.out_stream = av, output, out_stream
        self.encoder = out_stream.codec_context
        self.settings, self.bar = settings, bar
        self.rgb_format, self.dtype = ("rgb48le", np.uint16) if high else ("rgb24", np.uint8)
        self.frames = 0
        self.brightness: list[float] = []
        self._started = False
        self._audio: list[Any] = []
        self._batch: list[np.ndarray] = []
        self._stamps: list[tuple[int | None, Fraction | None, Any, Any]] = []  # pts, time base, colour space, range

    @property
    def taken(self) -> int:
        """Frames taken so far (enhanced or waiting in the batch)."""
        return self.frames + len(self._batch)

    def audio(self, packet: Any) -> None:
        if self._started:
            self.output.mux(packet)
        else:
            self._audio.append(packet)

    def add(self, frame: Any) -> None:
        """Take one decoded frame; a full batch is enhanced and encoded."""
        if not self._started and not self._batch and frame.rotation:
            self.out_stream.set_display_rotation(frame.rotation)
        # Frames are converted at the stream's size (a mid-stream size change is scaled back to it).
        size = {"width": self.encoder.width, "height": self.encoder.height}
        self._batch.append(frame.to_ndarray(format=self.rgb_format, **size))
        self._stamps.append((frame.pts, frame.time_base, frame.colorspace, frame.color_range))
        if len(self._batch) >= self.settings.video_batch:
            self.flush()

    def flush(self) -> None:
        """Enhance and encode the batch, a pass of :func:`frames_per_pass` frames at a time."""
        if not self._batch:
            return
        settings, encoder = self.settings, self.encoder
        step = frames_per_pass(settings.enhancer.tile, encoder.width * encoder.height, len(self._batch))
        for start in range(0, len(self._batch), step):  # each pass encoded before the next is enhanced
            frames = _to_tensor(self._batch[start : start + step], settings.enhancer.device)
            self.brightness += frames.flatten(1).mean(dim=1).tolist()
            enhanced = enhance_frames(settings.enhancer, frames, settings.smoother, settings.exposure)
            del frames
            for pixels, stamp in zip(
                _from_tensor(enhanced, self.dtype), self._stamps[start : start + step], strict=True
            ):
                self._encode(pixels, *stamp)
        self.frames += len(self._batch)
        self.bar.update(len(self._batch))
        if settings.on_frames is not None:
            settings.on_frames(self.frames, self.bar.total)
        self._batch.clear()
        self._stamps.clear()

    def close(self) -> None:
        """Encode the last batch, flush the encoder and mux the audio still held."""
        self.flush()
        self._mux(self.encoder.encode(None))
        for packet in self._audio:
            self.output.mux(packet)

    def _encode(self, pixels: np.ndarray, pts: int | None, time_base: Fraction | None, space: Any, range: Any) -> None:
        frame = self.av.VideoFrame.from_ndarray(pixels, format=self.rgb_format)
        frame = frame.reformat(format=self.encoder.pix_fmt, dst_colorspace=space, dst_color_range=range)
        frame.pts, frame.time_base = pts, time_base
        self._mux(self.encoder.encode(frame))

    def _mux(self, packets: list[Any]) -> None:
        if packets and not self._started:
            self._started = True
            self.output.mux(packets)
            for packet in self._audio:
                self.output.mux(packet)
            self._audio.clear()
        elif packets:
            self.output.mux(packets)
