"""A local web app: ``scl-lle serve`` opens a page to drop photos (and short videos) and get them enhanced.

Only the standard library's :mod:`http.server` is used; the page is ``static/index.html`` in this package.

How the page works: it uploads the file once (``POST /api/uploads``, the upload's percentage shown as it goes)
and the server keeps it. Every upload and every re-render is a *job* with real progress: the page polls
``GET /api/jobs/<id>`` (``{"state": "queued|running|done|failed", "done": n, "total": N, "unit":
"steps|tiles|frames", "seconds_left": s, "error": ...}``: steps for a photo's preview, tiles for a full-size
photo, frames for a video) and fetches ``GET /api/jobs/<id>/result`` when it is done. ``GET /api/stats``
counts uploads received, jobs started and previews re-rendered.

- **Photos: a preview you can adjust at once, a full-size download rendered on demand.** The first job decodes
  the photo, keeps a preview-sized copy (long side at most ``ServeLimits.preview_side``, 1280 px) and estimates
  its curve maps once. Changing the exposure (auto, off, the brightness slider) then only solves the gain and
  applies the kept curves (and the finishing) to that preview: ``GET /api/uploads/<id>/preview`` answers within
  a fraction of a second, with no upload and no network pass. The download is rendered from the kept upload at
  full resolution with the exposure of that moment (``POST /api/uploads/<id>/render?size=full``, a job with a
  tile count). The preview is the whole photo for photos up to the preview size; for larger ones its curves are
  estimated on the reduced picture, so it can differ from the download in fine local detail (the brightness
  target is the same). Changing the speed mode estimates the preview's curves for that mode once (a job).
- **Videos** are enhanced whole (frames done / total, time left); a new exposure or speed re-renders the kept
  upload (``POST /api/uploads/<id>/render``) without uploading it again.
- **Kept uploads are bounded:** at most ``max_kept_uploads`` (8) and ``max_kept_bytes`` (256 MB, results
  included) besides the ones being worked on (the least recently used go first), each deleted after
  ``kept_idle_minutes`` (15) without use, when the page drops it (``DELETE /api/uploads/<id>``) or when the
  server closes. Prepared previews (pixels and curve maps, about 130 MB at 1280 px) are held in memory for
  the ``max_previews`` (2) most recently used photos; an evicted one is prepared again by a job.
- Upload and job ids are random (:func:`secrets.token_urlsafe`, 128 bits): nothing can be fetched without one.

``POST /api/enhance?exposure=auto|off|E&mode=full|fast&name=FILE`` remains for scripts: the body is the file,
the response the enhanced file, and nothing is kept once it is answered.

Safety:

- binds to the loopback address by default, and refuses requests (every endpoint) whose ``Host`` or ``Origin``
  names another site (DNS rebinding, cross-site posts);
- uploads are limited in bytes (checked before reading), images in pixels (checked from the header before
  decoding) and videos in frame size and duration;
- every upload and result lives in a fresh folder inside the server's own temporary folder; the uploaded file
  name is used only for its ending (checked against the known image and video endings; a "video" whose first
  bytes are an image is refused) and for the download name, never as a path; no other file is ever served;
- an answer given before the request body was read (a refusal) closes the connection, so that body can never be
  taken for a second request (request smuggling); the socket is half-closed and what the client still sends is
  dropped for a moment, bounded in bytes and time, so the answer is not lost to a reset;
- at most ``max_queue`` uploads and jobs are in the works at once (received, waiting for the engine,
  enhanced); more are answered 503 with ``Retry-After``. One job runs at a time; pictures are decoded only once
  the engine is theirs, so waiting uploads hold no pixels, and freed memory is handed back to the system after
  each one (glibc). A new render of the same upload cancels the one it replaces.

The standard library's server is kept rather than uvicorn or starlette: a local single-user tool needs no extra
dependencies, and every early answer goes through one method (``_Handler._send``), where the connection is closed.

"Exposure" is the enhancer's ``exposure`` (:mod:`scl_lle.engine.exposure`), the same setting as ``--exposure``:
``auto`` (a target chosen from the photo; well-exposed photos come back nearly unchanged), ``off`` (the
network's curves at full strength) or a target mean brightness E in (0, 1), reached by scaling the curve maps
(every curve stays a smooth monotone tone curve, not a cross-fade).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import ipaddress
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import torch
from PIL import Image

from ...engine.enhancer import FAST_SCALE, EnhanceError, Enhancer
from ...engine.exposure import Exposure, parse_exposure, thumbnail_factor
from ...engine.finishing import detail_eps, split_detail
from ...io.image import IMAGE_EXTENSIONS, ImageReadError, image_named_as_video, read_image, write_image
from ...io.pixels import from_unit, tensor_view, to_unit
from ...models.dcenet import DCENet, downsample, upsample_maps
from ...models.hub import load_dcenet
from ..video import VIDEO_EXTENSIONS, VideoError, enhance_video

_log = logging.getLogger(__name__)

__all__ = ["MODES", "EnhanceServer", "ServeLimits", "make_server", "serve"]

#: Speed modes of the page: the ``scale`` at which curves are estimated.
MODES = {"full": 1, "fast": FAST_SCALE}
# Results the browser can show: JPEG and WebP stay as they are, everything else becomes PNG.
_RESULT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".png": "image/png"}
_VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
# After an early answer, what the client still sends is read and dropped (so that closing the socket does not
# reset the connection and lose the answer) up to this many bytes, for at most _LINGER_SECONDS in all and
# _LINGER_IDLE_SECONDS without data; then the connection is closed.
_DRAIN_BYTES = 256 * 2**20
_LINGER_SECONDS = 2.0
_LINGER_IDLE_SECONDS = 0.5
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
# How often the job thread looks for kept uploads left idle too long (besides after every job).
_SWEEP_SECONDS = 30.0
_PREVIEW_QUALITY = 90  # JPEG quality of previews (shown in the page, never downloaded)
# /api/uploads/<id>[/<action>] and /api/jobs/<id>[/result]
_ROUTE = re.compile(r"/api/(uploads|jobs)/([A-Za-z0-9_-]{1,64})(?:/([a-z]+))?")


@dataclass(frozen=True)
class ServeLimits:
    """What one upload may be, and what the server keeps."""

    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_video_pixels: int = 3840 * 2160
    max_video_seconds: float = 20.0
    #: Uploads and jobs in the works at once (received, waiting for the engine, enhanced); more get 503.
    max_queue: int = 4
    #: Uploads kept for re-rendering, besides those being worked on (the least recently used are dropped).
    max_kept_uploads: int = 8
    #: Bytes of kept uploads and their results, besides those being worked on.
    max_kept_bytes: int = 256 * 1024 * 1024
    #: A kept upload unused for this long is deleted.
    kept_idle_minutes: float = 15.0
    #: Longest side of a photo's preview (the picture the exposure control re-renders at once).
    preview_side: int = 1280
    #: Photos whose prepared preview (pixels and curve maps) is held in memory.
    max_previews: int = 2


class _Engine:
    """One network, an enhancer per speed mode (made on first use), and a lock: one enhancement at a time."""

    def __init__(self, weights: str | os.PathLike[str] | DCENet | None, device: str) -> None:
        self.model = weights if isinstance(weights, DCENet) else load_dcenet(weights)
        self.device = device
        self.lock = threading.Lock()
        self._enhancers: dict[str, Enhancer] = {}

    def enhancer(self, mode: str) -> Enhancer:
        if mode not in self._enhancers:
            self._enhancers[mode] = Enhancer(self.model, device=self.device, scale=MODES[mode], finish=mode == "full")
        return self._enhancers[mode]


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Cancelled(Exception):
    """A job was replaced by a newer one of its upload, its upload was dropped, or the server is closing."""


# ------------------------------------------------------------------------------------------------ previews
@dataclass(eq=False)
class _Preview:
    """A photo's preview prepared for one speed mode: all an exposure change needs (no network pass)."""

    image: torch.Tensor  # (1, 3, h, w) in [0, 1], the enhancer's device and dtype
    base: torch.Tensor  # the finishing's base layer of ``image`` (``image`` itself without finishing)
    maps: torch.Tensor  # (1, 3n, h, w): the curve maps at the preview's size
    gain_image: torch.Tensor  # what Enhancer.exposure_gain is given (with gain_maps): the same gain as for
    gain_maps: torch.Tensor  # (image, the maps as estimated), without shrinking full-size maps every time
    gains: dict[Exposure, float] = field(default_factory=dict)  # solved so far, by exposure


def _preview_pixels(pixels: np.ndarray, side: int) -> np.ndarray:
    """A decoded picture's pixels as 8-bit RGB ``(h, w, 3)``, shrunk so that the long side is at most ``side``."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = from_unit(to_unit(tensor_view(np.ascontiguousarray(pixels))), torch.uint8).numpy()
    image = Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    image = image.convert("RGB")
    height, width = image.height, image.width
    if max(height, width) > side:
        factor = side / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image)


def _prepare_preview(enhancer: Enhancer, pixels: np.ndarray) -> _Preview:
    """Estimate the curve maps of the preview ``pixels`` (8-bit RGB) once, as ``enhancer`` would."""
    image = to_unit(tensor_view(pixels).permute(2, 0, 1).unsqueeze(0), enhancer.dtype, enhancer.device)
    small = enhancer.curve_maps(image)
    if not bool(torch.isfinite(small.sum(dtype=torch.float32))):
        raise EnhanceError("the network gave non-finite curve maps for this picture (broken or overflowing weights?)")
    with torch.inference_mode():
        size = (image.shape[-2], image.shape[-1])
        maps = small if small.shape[-2:] == image.shape[-2:] else upsample_maps(small, size)
        if enhancer.scale == 1:  # Enhancer._gain's thumbnail of full-size maps, taken once
            shrink = thumbnail_factor(*small.shape[-2:])
            gain_image, gain_maps = image[..., ::shrink, ::shrink], downsample(small, shrink)
        else:
            gain_image, gain_maps = image, small
        if enhancer.finish:
            float_image = image.float()
            base = split_detail(float_image, eps=detail_eps(float_image))[0].to(image.dtype)
        else:
            base = image
    return _Preview(image, base, maps, gain_image, gain_maps)


def _render_preview(enhancer: Enhancer, preview: _Preview, exposure: Exposure) -> torch.Tensor:
    """The preview enhanced at ``exposure``: the gain solved, the kept maps scaled by it and applied (with the
    finishing's detail added back), as :meth:`Enhancer.apply_curve_maps` does; ``(1, 3, h, w)`` in [0, 1]."""
    if exposure not in preview.gains:
        gain = enhancer.exposure_gain(preview.gain_image, preview.gain_maps, exposure)
        # -1: "off" (the maps as they are); 0: already at or above the target (the image as it is)
        preview.gains[exposure] = float(gain[0]) if isinstance(gain, torch.Tensor) else -1.0
    factor = preview.gains[exposure]
    if factor == 0.0:
        return preview.image  # unchanged, as the engine leaves it
    height, width = preview.image.shape[-2:]
    # On the CPU in bands of about 64k pixels, which stay in the cache through the eight curves (3x faster)
    rows = max(1, (1 << 16) // width) if preview.image.device.type == "cpu" else height
    with torch.inference_mode():
        out = preview.base.clone()
        curve, step = torch.empty_like(out[..., :rows, :]), torch.empty_like(out[..., :rows, :])
        for top in range(0, height, rows):
            band = out[..., top : top + rows, :]
            r, t = curve[..., : band.shape[-2], :], step[..., : band.shape[-2], :]
            for i in range(preview.maps.shape[1] // 3):  # x + r (x^2 - x), r the clipped scaled map
                maps = preview.maps[:, 3 * i : 3 * i + 3, top : top + rows]
                scaled = maps if factor < 0 else torch.mul(maps, factor, out=r).clamp_(-1.0, 1.0)
                band.add_(torch.mul(band, band, out=t).sub_(band).mul_(scaled))
        if enhancer.finish:
            out.add_(preview.image).sub_(preview.base)  # the detail layer back at unit gain
        return out.clamp_(0.0, 1.0)


def _jpeg(pixels: torch.Tensor | np.ndarray) -> bytes:
    """``(1, 3, h, w)`` in [0, 1] or ``(h, w, 3)`` uint8 as JPEG bytes (a preview)."""
    if isinstance(pixels, torch.Tensor):
        pixels = from_unit(pixels[0].permute(1, 2, 0), torch.uint8).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=_PREVIEW_QUALITY)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------- uploads and jobs
class _Upload:
    """A file kept in its own folder of the scratch folder, for renders at other settings."""

    def __init__(self, folder: Path, name: str, suffix: str, size: int, now: float) -> None:
        self.id = secrets.token_urlsafe(16)
        self.folder = folder
        self.path = folder / f"upload{suffix}"
        self.name = name
        self.suffix = suffix
        self.kind = "video" if suffix in VIDEO_EXTENSIONS else "photo"
        self.size = size
        self.last_used = now
        self.received = False
        self.jobs: dict[str, _Job] = {}  # the latest job of each kind ("preview", "full", "video")
        self.pixels: np.ndarray | None = None  # a photo's preview-sized pixels (8-bit RGB), once decoded
        self.before: bytes | None = None  # the same as JPEG: "before" for a photo the browser cannot show

    def busy(self) -> bool:
        return not self.received or any(job.state in ("queued", "running") for job in self.jobs.values())

    def nbytes(self) -> int:
        return self.size + sum(job.result_size for job in self.jobs.values())

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name}


class _Job:
    """One piece of work on a kept upload, with its progress; run by the server's job thread."""

    def __init__(self, upload: _Upload, kind: str, mode: str, exposure: Exposure, slot: threading.Semaphore) -> None:
        self.id = secrets.token_urlsafe(16)
        self.upload = upload
        self.kind = kind
        self.mode = mode
        self.exposure = exposure
        self.unit = "frames" if kind == "video" else "steps" if kind == "preview" else "tiles"
        self.state = "queued"
        self.stage = "waiting"
        self.done = 0
        self.total = 0  # 0: not known (yet)
        self.error: str | None = None
        self.status: int | None = None  # the HTTP status that goes with ``error``
        self.created = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self.result: Path | None = None
        self.result_bytes: bytes | None = None
        self.result_size = 0
        self.content_type = ""
        self.result_name = ""
        self.cancelled = threading.Event()
        self._slot: threading.Semaphore | None = slot
        self._rate_start: tuple[float, int] | None = None

    def same_work(self, kind: str, mode: str, exposure: Exposure) -> bool:
        return (self.kind, self.mode, self.exposure) == (kind, mode, exposure) and self.state != "failed"

    def release_slot(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

    def progress(self, done: int, total: int | None) -> None:
        """Record ``done`` of ``total`` units; raises :class:`_Cancelled` once the job is cancelled."""
        if self.cancelled.is_set():
            raise _Cancelled("cancelled")
        if self._rate_start is None:  # counted from the first report (video: from the start of the job)
            self._rate_start = (time.monotonic(), done) if done == 0 or self.started is None else (self.started, 0)
        self.done = done
        self.total = max(total or self.total, done)

    def seconds_left(self, now: float) -> float | None:
        if self._rate_start is None or not self.total or self.state != "running" or self.unit == "steps":
            return None
        since, first = self._rate_start
        if self.done <= first or now <= since:
            return None
        return (self.total - self.done) * (now - since) / (self.done - first)

    def describe(self, now: float, ahead: int = 0) -> dict[str, Any]:
        left = self.seconds_left(now)
        end = self.finished if self.finished is not None else now
        return {
            "id": self.id,
            "upload": self.upload.id,
            "kind": self.kind,
            "mode": self.mode,
            "exposure": self.exposure,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total or None,
            "unit": self.unit,
            "seconds": None if self.started is None else round(end - self.started, 3),
            "seconds_left": None if left is None else round(left, 1),
            "ahead": ahead,
            "error": self.error,
            "status": self.status,
            "result": f"/api/jobs/{self.id}/result" if self.state == "done" else None,
            "name": self.result_name or None,
        }


class _Jobs:
    """The kept uploads, their jobs and prepared previews, and the thread that runs the jobs one at a time."""

    def __init__(self, server: EnhanceServer) -> None:
        self.server = server
        self.limits = server.limits
        self.clock: Callable[[], float] = time.monotonic
        self.lock = threading.RLock()
        self.preview_lock = threading.Lock()  # one preview re-render at a time (they share the CPU anyway)
        self.uploads: dict[str, _Upload] = {}
        self.jobs: dict[str, _Job] = {}
        self.previews: OrderedDict[tuple[str, str], _Preview] = OrderedDict()
        self.counts = {"uploads": 0, "jobs": 0, "previews": 0}  # received, started, re-rendered (for /api/stats)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="scl-lle-jobs", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------------------------- bookkeeping
    def reserve(self, name: str, suffix: str, length: int) -> _Upload:
        """A new upload's folder; idle kept uploads are dropped (least recently used first) to make room."""
        with self.lock:
            self.expire()
            limits = self.limits
            idle = sorted((u for u in self.uploads.values() if not u.busy()), key=lambda u: u.last_used)
            kept = sum(u.nbytes() for u in idle)
            while idle and (len(idle) >= limits.max_kept_uploads or kept + length > limits.max_kept_bytes):
                dropped = idle.pop(0)
                kept -= dropped.nbytes()
                self._remove(dropped)
            folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.server.scratch))
            upload = _Upload(folder, name, suffix, length, self.clock())
            self.uploads[upload.id] = upload
            return upload

    def received(self, upload: _Upload) -> None:
        with self.lock:
            upload.received = True
            upload.last_used = self.clock()
            self.counts["uploads"] += 1

    def upload(self, upload_id: str) -> _Upload:
        """The kept upload (marked as used now), or 404."""
        with self.lock:
            self.expire()
            upload = self.uploads.get(upload_id)
            if upload is None or not upload.received:
                raise _RequestError(HTTPStatus.NOT_FOUND, "unknown or expired upload; upload the file again")
            upload.last_used = self.clock()
            return upload

    def job(self, job_id: str) -> _Job:
        """The job (its upload marked as used now), or 404."""
        with self.lock:
            self.expire()
            job = self.jobs.get(job_id)
            if job is None:
                raise _RequestError(HTTPStatus.NOT_FOUND, "unknown or expired job")
            job.upload.last_used = self.clock()
            return job

    def describe(self, job: _Job) -> dict[str, Any]:
        with self.lock:
            ahead = 0
            if job.state == "queued":
                ahead = sum(
                    1
                    for other in self.jobs.values()
                    if other.state in ("queued", "running") and other.created < job.created
                )
            return job.describe(time.monotonic(), ahead)

    def submit(self, upload: _Upload, kind: str, mode: str, exposure: Exposure, slot: threading.Semaphore) -> _Job:
        """Queue ``kind`` of work on ``upload`` (holding ``slot``, released when it ends), replacing the previous
        job of that kind; the same work already queued, running or done is returned instead (``slot`` freed)."""
        with self.lock:
            previous = upload.jobs.get(kind)
            if previous is not None and previous.same_work(kind, mode, exposure) and not previous.cancelled.is_set():
                slot.release()
                return previous
            job = _Job(upload, kind, mode, exposure, slot)
            if previous is not None:
                self._drop_job(previous)
            upload.jobs[kind] = job
            self.jobs[job.id] = job
            self.counts["jobs"] += 1
            self._queue.put(job)
            return job

    def preview(self, upload: _Upload, mode: str) -> _Preview | None:
        with self.lock:
            key = (upload.id, mode)
            preview = self.previews.get(key)
            if preview is not None:
                self.previews.move_to_end(key)
            return preview

    def _keep_preview(self, upload: _Upload, mode: str, preview: _Preview) -> None:
        with self.lock:
            if upload.id not in self.uploads:
                return
            self.previews[(upload.id, mode)] = preview
            self.previews.move_to_end((upload.id, mode))
            while len(self.previews) > max(1, self.limits.max_previews):
                self.previews.popitem(last=False)

    def remove(self, upload: _Upload) -> None:
        with self.lock:
            self._remove(upload)

    def _remove(self, upload: _Upload) -> None:
        for job in list(upload.jobs.values()):
            self._drop_job(job)
        upload.jobs.clear()
        for key in [key for key in self.previews if key[0] == upload.id]:
            del self.previews[key]
        upload.pixels = upload.before = None
        self.uploads.pop(upload.id, None)
        shutil.rmtree(upload.folder, ignore_errors=True)

    def _drop_job(self, job: _Job) -> None:
        """Cancel ``job`` (if it has not finished) and forget it; a queued one gives its slot back now."""
        job.cancelled.set()
        if job.state == "queued":
            job.release_slot()
        if job.state not in ("queued", "running"):
            self._discard_result(job)
        self.jobs.pop(job.id, None)

    @staticmethod
    def _discard_result(job: _Job) -> None:
        if job.result is not None:
            job.result.unlink(missing_ok=True)
        job.result, job.result_bytes, job.result_size = None, None, 0

    def expire(self) -> None:
        """Delete the kept uploads left unused for ``kept_idle_minutes`` (not those being worked on)."""
        with self.lock:
            deadline = self.clock() - 60.0 * self.limits.kept_idle_minutes
            for upload in list(self.uploads.values()):
                if upload.last_used < deadline and not upload.busy():
                    self._remove(upload)

    def trim(self) -> None:
        """Drop idle kept uploads (least recently used first) while more are kept than the limits allow."""
        with self.lock:
            idle = sorted((u for u in self.uploads.values() if not u.busy()), key=lambda u: u.last_used)
            kept = sum(u.nbytes() for u in idle)
            while len(idle) > 1 and (len(idle) > self.limits.max_kept_uploads or kept > self.limits.max_kept_bytes):
                dropped = idle.pop(0)
                kept -= dropped.nbytes()
                self._remove(dropped)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "uploads_received": self.counts["uploads"],
                "jobs_started": self.counts["jobs"],
                "previews_rendered": self.counts["previews"],
                "kept_uploads": len(self.uploads),
                "kept_bytes": sum(u.nbytes() for u in self.uploads.values()),
                "previews_in_memory": len(self.previews),
                "jobs_waiting": sum(1 for job in self.jobs.values() if job.state in ("queued", "running")),
            }

    def close(self) -> None:
        """Cancel every job, stop the job thread and delete every kept upload."""
        with self.lock:
            for job in self.jobs.values():
                job.cancelled.set()
        self._queue.put(None)
        self._thread.join(10)
        with self.lock:
            for upload in list(self.uploads.values()):
                self._remove(upload)

    # -------------------------------------------------------------------------------------------- running
    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=_SWEEP_SECONDS)
            except queue.Empty:
                self.expire()
                continue
            if job is None:
                return
            try:
                self._run(job)
            finally:
                job.release_slot()
                self.trim()
                self.expire()

    def _run(self, job: _Job) -> None:
        with self.lock:
            if job.cancelled.is_set():
                job.state, job.error, job.status = "failed", "cancelled", HTTPStatus.CONFLICT
                return
            job.state, job.stage, job.started = "running", "starting", time.monotonic()
        engine = self.server.engine
        try:
            with engine.lock:  # decoded pixels exist only while the engine is this job's: one picture at a time
                try:
                    {"preview": self._run_preview, "full": self._run_full, "video": self._run_video}[job.kind](job)
                finally:
                    _release_memory()
            failure = None
        except _Cancelled:
            failure = (HTTPStatus.CONFLICT, "cancelled: replaced by a newer request")
        except _RequestError as error:
            failure = (error.status, str(error))
        except (ImageReadError, VideoError) as error:
            failure = (HTTPStatus.UNPROCESSABLE_ENTITY, f"cannot use this file: {error}")
        except ImportError as error:
            failure = (HTTPStatus.NOT_IMPLEMENTED, str(error))
        except Exception as error:  # the job must end, whatever went wrong
            failure = (HTTPStatus.INTERNAL_SERVER_ERROR, f"enhancement failed: {type(error).__name__}: {error}")
        with self.lock:
            job.finished = time.monotonic()
            if failure is None and not job.cancelled.is_set():
                job.state, job.stage = "done", "done"
                job.upload.last_used = self.clock()
            else:
                status, message = failure or (HTTPStatus.CONFLICT, "cancelled: replaced by a newer request")
                job.state, job.stage, job.status, job.error = "failed", "failed", int(status), message
                self._discard_result(job)

    def _run_preview(self, job: _Job) -> None:
        """Decode the photo once (its preview-sized pixels are kept), estimate the preview's curves once per mode,
        render it at the job's exposure."""
        upload = job.upload
        enhancer = self.server.engine.enhancer(job.mode)
        preview = self.preview(upload, job.mode)
        if preview is None:
            if upload.pixels is None:
                job.stage = "decoding"
                job.progress(0, 3)
                picture = read_image(upload.path, max_pixels=self.limits.max_pixels)
                upload.pixels = _preview_pixels(picture.pixels, self.limits.preview_side)
                del picture
                upload.before = _jpeg(upload.pixels)
            job.stage = "estimating curves"
            job.progress(1, 3)
            preview = _prepare_preview(enhancer, upload.pixels)
            self._keep_preview(upload, job.mode, preview)
        job.stage = "rendering"
        job.progress(2, 3)
        job.result_bytes = _jpeg(_render_preview(enhancer, preview, job.exposure))
        job.content_type = "image/jpeg"
        job.result_name = f"{_safe_stem(upload.name)}-preview.jpg"
        job.progress(3, 3)

    def _run_full(self, job: _Job) -> None:
        """Enhance the kept photo at full resolution, tile by tile."""
        upload = job.upload
        suffix = upload.suffix if upload.suffix in _RESULT_TYPES else ".png"
        target = upload.folder / f"full-{job.id[:8]}{suffix}"
        job.stage = "decoding"
        picture = read_image(upload.path, max_pixels=self.limits.max_pixels)
        job.stage = "enhancing"
        enhanced = self.server.engine.enhancer(job.mode).enhance_picture(picture, job.exposure, job.progress)
        del picture
        job.stage = "encoding"
        write_image(target, enhanced, quality=95)
        self._finish_file(job, target, _RESULT_TYPES[suffix])

    def _run_video(self, job: _Job) -> None:
        """Enhance the kept video, frame by frame."""
        upload = job.upload
        suffix = upload.suffix if upload.suffix in _VIDEO_TYPES else ".mp4"
        target = upload.folder / f"video-{job.id[:8]}{suffix}"
        estimate = _estimated_frames(upload.path)
        job.stage = "enhancing"
        job.progress(0, estimate)
        enhance_video(
            upload.path,
            target,
            enhancer=self.server.engine.enhancer(job.mode),
            exposure=job.exposure,
            max_pixels=self.limits.max_video_pixels,
            max_seconds=self.limits.max_video_seconds,
            progress=False,
            on_frames=lambda done, total: job.progress(done, total or estimate),
            overwrite=True,
        )
        self._finish_file(job, target, _VIDEO_TYPES[suffix])

    def _finish_file(self, job: _Job, target: Path, content_type: str) -> None:
        if job.cancelled.is_set():
            target.unlink(missing_ok=True)
            raise _Cancelled("cancelled")
        job.result, job.result_size, job.content_type = target, target.stat().st_size, content_type
        job.result_name = f"{_safe_stem(job.upload.name)}-enhanced{target.suffix}"
        job.done = job.total = max(job.done, job.total)

    def render_preview(self, upload: _Upload, mode: str, exposure: Exposure) -> tuple[bytes, float] | None:
        """The kept preview of ``upload`` for ``mode`` re-rendered at ``exposure`` (JPEG, seconds taken), or
        ``None`` if it is not prepared (a preview job prepares it)."""
        preview = self.preview(upload, mode)
        if preview is None:
            return None
        enhancer = self.server.engine.enhancer(mode)
        with self.preview_lock:
            started = time.perf_counter()
            body = _jpeg(_render_preview(enhancer, preview, exposure))
            seconds = time.perf_counter() - started
        with self.lock:
            self.counts["previews"] += 1
        return body, seconds


def _estimated_frames(path: Path) -> int | None:
    """The number of frames of the video at ``path`` from its header (count, or duration x rate), if it says."""
    with contextlib.suppress(Exception):
        import av

        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            else:
                return None
            return max(1, round(seconds * float(rate))) if rate else None
    return None


class EnhanceServer(ThreadingHTTPServer):
    """The web app's HTTP server; ``url`` is where the page is. Close with ``shutdown()`` + ``server_close()``."""

    daemon_threads = True
    request_queue_size = 128  # connections the kernel holds while none is accepted (Python's default: 5)

    def __init__(
        self,
        address: tuple[str, int],
        engine: _Engine,
        limits: ServeLimits,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.slots = threading.BoundedSemaphore(max(1, limits.max_queue))
        self._scratch = tempfile.TemporaryDirectory(prefix="scl-lle-serve-")
        self.scratch = Path(self._scratch.name)
        super().__init__(address, _Handler)
        self.jobs = _Jobs(self)

    @property
    def url(self) -> str:
        """``http://host:port/`` of the page."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        """Close the socket, stop the jobs and delete the temporary folder (kept uploads included)."""
        super().server_close()
        self.jobs.close()
        self._scratch.cleanup()


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:80].strip("._")
    return stem or "image"


_PAGE: bytes | None = None


def page() -> bytes:
    """The web page (``static/index.html`` of this package)."""
    global _PAGE
    if _PAGE is None:
        try:
            _PAGE = resources.files(__package__).joinpath("static", "index.html").read_bytes()
        except OSError as error:
            message = f"this installation of scl-lle lacks its web page, scl_lle/static/index.html ({error})"
            raise _RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, message) from None
    return _PAGE


class _Handler(BaseHTTPRequestHandler):
    server: EnhanceServer
    server_version = "scl-lle"
    timeout = 120  # seconds a client may stall while sending (a slow or stuck upload does not hold a thread)
    protocol_version = "HTTP/1.1"
    _body_read = False  # whether this request's body has been read in full (set per request)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)  # each request: scl-lle serve -v

    # ------------------------------------------------------------------------------------------- routing
    def do_GET(self) -> None:
        """The page, the limits and statistics, a job's state and result, a kept photo's preview."""
        if not self._trusted_origin():
            return
        parts = urlsplit(self.path)
        route = _ROUTE.fullmatch(parts.path)
        try:
            if parts.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page(), "text/html; charset=utf-8")
            elif parts.path == "/api/limits":
                self._send_json(HTTPStatus.OK, self.server.limits.__dict__)
            elif parts.path == "/api/stats":
                self._send_json(HTTPStatus.OK, self.server.jobs.stats())
            elif route and route.group(1) == "jobs" and route.group(3) is None:
                jobs = self.server.jobs
                self._send_json(HTTPStatus.OK, jobs.describe(jobs.job(route.group(2))))
            elif route and route.group(1) == "jobs" and route.group(3) == "result":
                self._send_result(self.server.jobs.job(route.group(2)))
            elif route and route.group(1) == "uploads" and route.group(3) == "preview":
                self._send_preview(route.group(2), parts.query)
            elif route and route.group(1) == "uploads" and route.group(3) == "before":
                upload = self.server.jobs.upload(route.group(2))
                if upload.before is None:
                    raise _RequestError(HTTPStatus.CONFLICT, "the photo has not been decoded yet")
                self._send(HTTPStatus.OK, upload.before, "image/jpeg")
            else:
                raise _RequestError(HTTPStatus.NOT_FOUND, "not found")
        except _RequestError as error:
            self._send_error(error.status, str(error))

    def do_POST(self) -> None:
        """``/api/uploads`` (keep a file, start its first job), ``/api/uploads/<id>/render`` (a new job on a kept
        upload) and ``/api/enhance`` (the file in, the enhanced file out, nothing kept)."""
        if not self._trusted_origin():
            return
        parts = urlsplit(self.path)
        route = _ROUTE.fullmatch(parts.path)
        if parts.path == "/api/enhance":
            self._enhance_once(parts.query)
        elif parts.path == "/api/uploads":
            self._upload(parts.query)
        elif route and route.group(1) == "uploads" and route.group(3) == "render":
            try:
                self._render(route.group(2), parts.query)
            except _RequestError as error:
                self._send_error(error.status, str(error))
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "not found")

    def do_DELETE(self) -> None:
        """``/api/uploads/<id>``: delete a kept upload (and cancel its jobs) now."""
        if not self._trusted_origin():
            return
        route = _ROUTE.fullmatch(urlsplit(self.path).path)
        try:
            if not (route and route.group(1) == "uploads" and route.group(3) is None):
                raise _RequestError(HTTPStatus.NOT_FOUND, "not found")
            jobs = self.server.jobs
            jobs.remove(jobs.upload(route.group(2)))
            self._send_json(HTTPStatus.OK, {"deleted": route.group(2)})
        except _RequestError as error:
            self._send_error(error.status, str(error))

    # ------------------------------------------------------------------------------------ kept uploads, jobs
    def _upload(self, query: str) -> None:
        """Receive a file into a kept upload and queue its first job: 202 with the upload and the job."""
        checked = self._checked_upload(query)
        if checked is None:
            return
        name, mode, exposure, suffix, length = checked
        slots, jobs = self.server.slots, self.server.jobs
        if not slots.acquire(blocking=False):
            self._send_busy()
            return
        upload = None
        try:
            upload = jobs.reserve(name, suffix, length)
            self._receive(upload.path, length)
            if upload.kind == "video":
                _check_container(upload.path)
            jobs.received(upload)
            job = jobs.submit(upload, "video" if upload.kind == "video" else "preview", mode, exposure, slots)
        except Exception as error:  # nothing is kept of a refused or broken upload
            slots.release()
            if upload is not None:
                jobs.remove(upload)
            if not isinstance(error, _RequestError):
                error = _RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"upload failed: {type(error).__name__}")
            with contextlib.suppress(OSError):  # the client may be gone
                self._send_error(error.status, str(error))
            return
        self._send_json(HTTPStatus.ACCEPTED, {"upload": upload.describe(), "job": jobs.describe(job)})

    def _render(self, upload_id: str, query: str) -> None:
        """Queue a render of a kept upload (``size=preview|full`` for photos): 202 with the job."""
        _, mode, exposure, values = self._parameters(query)
        size = values.get("size", ["full"])[0]
        if size not in ("preview", "full"):
            raise _RequestError(HTTPStatus.BAD_REQUEST, "size must be preview or full")
        jobs = self.server.jobs
        upload = jobs.upload(upload_id)
        kind = "video" if upload.kind == "video" else size
        if not self.server.slots.acquire(blocking=False):
            self._send_busy()
            return
        job = jobs.submit(upload, kind, mode, exposure, self.server.slots)
        self._send_json(HTTPStatus.ACCEPTED, {"job": jobs.describe(job)})

    def _send_preview(self, upload_id: str, query: str) -> None:
        """A kept photo's preview re-rendered at the asked exposure (no network pass), or 409 if the preview for
        that mode is not prepared (``POST /api/uploads/<id>/render?size=preview`` prepares it)."""
        _, mode, exposure, _ = self._parameters(query)
        jobs = self.server.jobs
        upload = jobs.upload(upload_id)
        if upload.kind != "photo":
            raise _RequestError(HTTPStatus.CONFLICT, "previews are made for photos; render the video instead")
        try:
            rendered = jobs.render_preview(upload, mode, exposure)
        except Exception as error:  # the server must answer, whatever went wrong
            raise _RequestError(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"enhancement failed: {type(error).__name__}: {error}"
            ) from None
        if rendered is None:
            raise _RequestError(HTTPStatus.CONFLICT, "no preview prepared for this mode; render one first")
        body, seconds = rendered
        self._send(HTTPStatus.OK, body, "image/jpeg", {"X-Seconds": f"{seconds:.3f}"})

    def _send_result(self, job: _Job) -> None:
        """A finished job's result: the preview picture, or the enhanced file as a download."""
        if job.state != "done":
            raise _RequestError(HTTPStatus.CONFLICT, f"the job is {job.state}, not done")
        seconds = f"{(job.finished or 0.0) - (job.started or 0.0):.3f}"
        if job.result_bytes is not None:
            self._send(HTTPStatus.OK, job.result_bytes, job.content_type, {"X-Seconds": seconds})
            return
        headers = {
            "Content-Disposition": f'attachment; filename="{job.result_name}"',
            "X-Result-Name": job.result_name,
            "X-Seconds": seconds,
        }
        try:
            with open(job.result or "", "rb") as handle:  # open: readable even if the upload is dropped meanwhile
                pending = self._send_head(HTTPStatus.OK, os.fstat(handle.fileno()).st_size, job.content_type, headers)
                shutil.copyfileobj(handle, self.wfile, 1 << 20)
        except FileNotFoundError:
            raise _RequestError(HTTPStatus.NOT_FOUND, "the result is gone; render it again") from None
        self._end(pending)

    def _send_busy(self) -> None:
        message = b"the server is busy with other uploads; try again in a few seconds"
        self._send(HTTPStatus.SERVICE_UNAVAILABLE, message, _TEXT, {"Retry-After": "5"})

    # ------------------------------------------------------------------------------- one-shot /api/enhance
    def _checked_upload(self, query: str) -> tuple[str, str, Exposure, str, int] | None:
        """An upload's ``(name, mode, exposure, suffix, length)``, from everything that can be refused without
        reading the body; ``None`` once a refusal has been sent."""
        try:
            name, mode, exposure, _ = self._parameters(query)
            return name, mode, exposure, self._suffix(name), self._upload_length()
        except _RequestError as error:
            self._send_error(error.status, str(error))
            return None

    def _enhance_once(self, query: str) -> None:
        """The request body is the file; the response body is the enhanced file; nothing is kept."""
        checked = self._checked_upload(query)
        if checked is None:
            return
        name, mode, exposure, suffix, length = checked
        if not self.server.slots.acquire(blocking=False):
            self._send_busy()
            return
        try:
            work = Path(tempfile.mkdtemp(dir=self.server.scratch))
            try:
                answer = self._enhance_upload(work, name, suffix, length, mode, exposure)
            finally:
                shutil.rmtree(work, ignore_errors=True)  # before answering: nothing outlives the request
            self._send(*answer)
        finally:
            self.server.slots.release()

    def _enhance_upload(
        self, work: Path, name: str, suffix: str, length: int, mode: str, exposure: Exposure
    ) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        """Receive, check and enhance the upload inside ``work``; the answer as (status, body, type, headers)."""
        try:
            upload = work / f"upload{suffix}"
            self._receive(upload, length)
            started = time.perf_counter()
            if suffix in VIDEO_EXTENSIONS:
                _check_container(upload)
                result, content_type = self._enhance_video(upload, work, mode, exposure)
            else:
                result, content_type = self._enhance_image(upload, work, mode, exposure)
            seconds = time.perf_counter() - started
            download = f"{_safe_stem(name)}-enhanced{result.suffix}"
            headers = {
                "Content-Disposition": f'attachment; filename="{download}"',
                "X-Result-Name": download,
                "X-Seconds": f"{seconds:.3f}",
            }
            return HTTPStatus.OK, result.read_bytes(), content_type, headers
        except _RequestError as error:
            return error.status, str(error).encode(), _TEXT, {}
        except (ImageReadError, VideoError) as error:
            return HTTPStatus.UNPROCESSABLE_ENTITY, f"cannot use this file: {error}".encode(), _TEXT, {}
        except ImportError as error:
            return HTTPStatus.NOT_IMPLEMENTED, str(error).encode(), _TEXT, {}
        except Exception as error:  # the server must answer, whatever went wrong
            message = f"enhancement failed: {type(error).__name__}: {error}"
            return HTTPStatus.INTERNAL_SERVER_ERROR, message.encode(), _TEXT, {}

    # ------------------------------------------------------------------------------------------- helpers
    def _trusted_origin(self) -> bool:
        """Refuse requests addressed to another host name (DNS rebinding) or posted from another site."""
        host = self.headers.get("Host", "")
        bound = str(self.server.server_address[0])
        hostname = urlsplit(f"//{host}").hostname or ""
        if _is_loopback(bound) and hostname not in _LOOPBACK_NAMES and not _is_loopback(hostname):
            self._send_error(HTTPStatus.FORBIDDEN, "this server answers only to localhost addresses")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != host:
            self._send_error(HTTPStatus.FORBIDDEN, "cross-site requests are refused")
            return False
        return True

    def _parameters(self, query: str) -> tuple[str, str, Exposure, dict[str, list[str]]]:
        """``name``, ``mode`` and ``exposure`` from the query (checked), and all its fields."""
        try:
            values = parse_qs(query, max_num_fields=8)
        except ValueError:  # more fields than that
            raise _RequestError(HTTPStatus.BAD_REQUEST, "too many query parameters") from None
        name = values.get("name", ["upload.png"])[0][:255]
        mode = values.get("mode", ["full"])[0]
        if mode not in MODES:
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"mode must be one of {', '.join(MODES)}")
        try:
            exposure = parse_exposure(values.get("exposure", ["auto"])[0])
        except ValueError as error:
            raise _RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        return name, mode, exposure, values

    @staticmethod
    def _suffix(name: str) -> str:
        """The upload's ending, refused unless it is a known image or video ending."""
        suffix = Path(name).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS and suffix not in VIDEO_EXTENSIONS:
            known = ", ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
            raise _RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported file type; use one of {known}")
        return suffix

    def parse_request(self) -> bool:
        """Parse the request line and headers; no body of this request has been read yet."""
        self._body_read = False
        return super().parse_request()

    def _declared_length(self) -> int | None:
        """The body's length from ``Content-Length`` (``None``: absent); ``-1`` if unusable or chunked."""
        values = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") or len(set(values)) > 1:
            return -1
        if not values:
            return None
        return int(values[0]) if re.fullmatch(r"[0-9]{1,20}", values[0].strip()) else -1

    def _body_pending(self) -> bool:
        """Whether the request has a body not (entirely) read: answering now must close the connection."""
        return not self._body_read and self._declared_length() not in (None, 0)

    def _upload_length(self) -> int:
        """The upload's announced length, refused unless present and within the limit (nothing is read)."""
        limit = self.server.limits.max_upload_bytes
        length = self._declared_length()
        if length is None or length < 0:
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length")
        if length > limit:
            raise _RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the file is larger than the limit of {limit / 2**20:.0f} MB"
            )
        if length == 0:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "empty upload")
        return length

    def _receive(self, target: Path, length: int) -> None:
        """Copy the request body, ``length`` bytes, into ``target``."""
        remaining = length
        with open(target, "wb") as handle:
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    raise _RequestError(HTTPStatus.BAD_REQUEST, "the upload ended early")
                handle.write(chunk)
                remaining -= len(chunk)
        self._body_read = True

    def _linger(self) -> None:
        """Half-close the connection and drop what the client still sends, within bounds, before it is closed.

        The answer is complete (the client sees the end of it at once); closing a socket with unread data would
        make the kernel reset the connection, and a reset can destroy an answer the client has not read yet.
        """
        declared = self._declared_length()
        budget = declared if declared is not None and declared > 0 else _DRAIN_BYTES
        budget = min(budget, _DRAIN_BYTES)
        deadline = time.monotonic() + _LINGER_SECONDS
        with contextlib.suppress(OSError, ValueError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while budget > 0 and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(min(left, _LINGER_IDLE_SECONDS))
                chunk = self.rfile.read1(min(budget, 1 << 20))
                if not chunk:
                    break
                budget -= len(chunk)

    def _enhance_image(self, upload: Path, work: Path, mode: str, exposure: Exposure) -> tuple[Path, str]:
        suffix = upload.suffix.lower() if upload.suffix.lower() in _RESULT_TYPES else ".png"
        target = work / f"result{suffix}"
        engine = self.server.engine
        with engine.lock:  # decoded pixels exist only while the engine is this upload's: one picture at a time
            try:
                _enhance_image_file(upload, target, engine.enhancer(mode), exposure, self.server.limits.max_pixels)
            finally:
                _release_memory()
        return target, _RESULT_TYPES[suffix]

    def _enhance_video(self, upload: Path, work: Path, mode: str, exposure: Exposure) -> tuple[Path, str]:
        limits = self.server.limits
        suffix = upload.suffix.lower() if upload.suffix.lower() in _VIDEO_TYPES else ".mp4"
        target = work / f"result{suffix}"
        engine = self.server.engine
        with engine.lock:
            try:
                enhance_video(
                    upload,
                    target,
                    enhancer=engine.enhancer(mode),
                    exposure=exposure,
                    max_pixels=limits.max_video_pixels,
                    max_seconds=limits.max_video_seconds,
                    progress=False,
                )
            finally:
                _release_memory()
        return target, _VIDEO_TYPES[suffix]

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        """Answer; if the request's body was not read, the connection is then closed (it cannot be reused)."""
        pending = self._send_head(status, len(body), content_type, headers)
        if self.command != "HEAD":
            self.wfile.write(body)
        self._end(pending)

    def _end(self, pending: bool) -> None:
        """After an answer: close the connection if the request's body was not read."""
        if pending:
            self.close_connection = True
            self._linger()

    def _send_head(
        self, status: HTTPStatus, length: int, content_type: str, headers: dict[str, str] | None = None
    ) -> bool:
        """Send the status line and headers of an answer of ``length`` bytes; whether the body was not read
        (then the answer says ``Connection: close``, and :meth:`_end` must close it)."""
        pending = self._body_pending()
        self.send_response(status)
        if pending:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        )
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        return pending

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, message.encode(), _TEXT)

    def _send_json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, json.dumps(value).encode(), _JSON)


def _enhance_image_file(upload: Path, target: Path, enhancer: Enhancer, exposure: Exposure, max_pixels: int) -> None:
    """Decode, enhance and encode one picture; its pixels are freed on return."""
    enhanced = enhancer.enhance_picture(read_image(upload, max_pixels=max_pixels), exposure)
    write_image(target, enhanced, quality=95)


def _check_container(upload: Path) -> None:
    """Refuse a video upload whose bytes are an image (it would come back as a one-frame video)."""
    problem = image_named_as_video(upload)
    if problem is not None:
        raise _RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"not a video: {problem}")


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc; musl and others have no such library or function
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def _release_memory() -> None:
    """Hand the heap memory freed by an enhancement back to the system (glibc only; elsewhere nothing)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def make_server(
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    weights: str | os.PathLike[str] | DCENet | None = None,
    device: str = "auto",
    limits: ServeLimits | None = None,
) -> EnhanceServer:
    """Load the model and bind the web app's server (``port=0``: any free port); call ``serve_forever()``."""
    engine = _Engine(weights, device)
    engine.enhancer("full")  # fail now, not on the first upload, if the device cannot be used
    return EnhanceServer((host, port), engine, limits or ServeLimits())


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    weights: str | os.PathLike[str] | DCENet | None = None,
    device: str = "auto",
    limits: ServeLimits | None = None,
) -> None:
    """Run the web app until interrupted (Ctrl-C) or terminated (SIGTERM); either way the scratch folder goes."""
    server = make_server(host, port, weights=weights, device=device, limits=limits)
    if not _is_loopback(host):
        _log.warning("listening on %s, reachable from other machines; the app has no login", host)
    restore = _stop_on_sigterm(server)
    _log.info("open %s (Ctrl-C to stop)", server.url)
    try:
        server.serve_forever()
    finally:
        restore()
        server.server_close()


def _stop_on_sigterm(server: EnhanceServer) -> Callable[[], None]:
    """Make SIGTERM end ``serve_forever`` (so the caller cleans up); returns the undo. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, which runs in this (the main) thread: ask from another one
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, previous)
