"""Jobs: every upload and re-render is a piece of work with real progress, run one at a time by a thread.

A job reports ``done`` of ``total`` units (``steps`` for a photo's preview, ``tiles`` for a full-size photo,
``frames`` for a video) and the seconds left; the page polls ``GET /api/jobs/<id>``. A new job of the same kind
on an upload cancels the one it replaces. Each job holds one of the server's ``max_queue`` slots from the
request that made it until it ends.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

from ...io.image import ImageReadError
from ..video import VideoError, estimated_frames
from .errors import Cancelled, RequestError
from .previews import jpeg, prepare_preview, render_preview
from .uploads import Upload, UploadStore
from .work import (
    Engine,
    Settings,
    decode_preview,
    enhance_image_file,
    enhance_video_file,
    enhanced_name,
    result_file,
    safe_stem,
)

__all__ = ["Job", "JobRunner"]

# How often the job thread looks for kept uploads left idle too long (besides after every job).
_SWEEP_SECONDS = 30.0
_REPLACED = "cancelled: replaced by a newer request"


class Job:
    """One piece of work on a kept upload, with its progress; run by the server's job thread."""

    def __init__(self, upload: Upload, kind: str, settings: Settings, slot: threading.Semaphore) -> None:
        self.id = secrets.token_urlsafe(16)
        self.upload = upload
        self.kind = kind
        self.settings = settings
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

    def same_work(self, kind: str, settings: Settings) -> bool:
        return (self.kind, self.settings) == (kind, settings) and self.state != "failed"

    def release_slot(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

    def discard_result(self) -> None:
        if self.result is not None:
            self.result.unlink(missing_ok=True)
        self.result, self.result_bytes, self.result_size = None, None, 0

    def progress(self, done: int, total: int | None) -> None:
        """Record ``done`` of ``total`` units; raises :class:`Cancelled` once the job is cancelled."""
        if self.cancelled.is_set():
            raise Cancelled("cancelled")
        if self._rate_start is None:  # counted from the first report (video: from the start of the job)
            self._rate_start = (time.monotonic(), done) if done == 0 or self.started is None else (self.started, 0)
        self.done = done
        self.total = max(total or self.total, done)

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def seconds_left(self, now: float) -> float | None:
        if self._rate_start is None or not self.total or self.state != "running" or self.unit == "steps":
            return None
        since, first = self._rate_start
        if self.done <= first or now <= since:
            return None
        return (self.total - self.done) * (now - since) / (self.done - first)

    def describe(self, now: float, ahead: int = 0) -> dict[str, Any]:
        """The job's state as ``GET /api/jobs/<id>`` answers it (``ahead``: jobs queued before it)."""
        left = self.seconds_left(now)
        end = self.finished if self.finished is not None else now
        return {
            "id": self.id,
            "upload": self.upload.id,
            "kind": self.kind,
            "mode": self.settings.mode,
            "exposure": self.settings.exposure,
            "local_weighting": self.settings.local_weighting,
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


def _failure(error: Exception) -> tuple[HTTPStatus, str]:
    """The HTTP status and message a job that raised ``error`` ends with."""
    if isinstance(error, Cancelled):
        return HTTPStatus.CONFLICT, _REPLACED
    if isinstance(error, RequestError):
        return error.status, str(error)
    if isinstance(error, (ImageReadError, VideoError)):
        return HTTPStatus.UNPROCESSABLE_ENTITY, f"cannot use this file: {error}"
    if isinstance(error, ImportError):
        return HTTPStatus.NOT_IMPLEMENTED, str(error)
    return HTTPStatus.INTERNAL_SERVER_ERROR, f"enhancement failed: {type(error).__name__}: {error}"


class JobRunner:
    """Queues jobs on the kept uploads of ``store`` and runs them one at a time on ``engine`` in a thread."""

    def __init__(self, store: UploadStore, engine: Engine) -> None:
        self.store = store
        self.engine = engine
        self.limits = store.limits
        self.preview_lock = threading.Lock()  # one preview re-render at a time (they share the CPU anyway)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="scl-lle-jobs", daemon=True)
        self._thread.start()

    def submit(self, upload: Upload, kind: str, settings: Settings, slot: threading.Semaphore) -> Job:
        """Queue ``kind`` of work on ``upload`` (holding ``slot``, released when it ends), replacing the previous
        job of that kind; the same work already queued, running or done is returned instead (``slot`` freed)."""
        store = self.store
        if kind == "video":  # videos lift every region alike: a change of local weighting is the same work
            settings = settings._replace(local_weighting=self.engine.local_weighting)
        with store.lock:
            previous = upload.jobs.get(kind)
            if previous is not None and previous.same_work(kind, settings) and not previous.cancelled.is_set():
                slot.release()
                return previous
            job = Job(upload, kind, settings, slot)
            if previous is not None:
                store.drop_job(previous)
            upload.jobs[kind] = job
            store.jobs[job.id] = job
            store.counts["jobs"] += 1
            self._queue.put(job)
            return job

    def render_preview(self, upload: Upload, settings: Settings) -> tuple[bytes, float] | None:
        """The kept preview of ``upload`` for the settings' mode re-rendered at its exposure and local weighting
        (JPEG, seconds taken), or ``None`` if it is not prepared (a preview job prepares it)."""
        preview = self.store.preview(upload, settings.mode)
        if preview is None:
            return None
        enhancer = self.engine.enhancer(settings.mode, settings.local_weighting)
        with self.preview_lock:
            started = time.perf_counter()
            body = jpeg(render_preview(enhancer, preview, settings.exposure))
            seconds = time.perf_counter() - started
        with self.store.lock:
            self.store.counts["previews"] += 1
        return body, seconds

    def close(self) -> None:
        """Cancel every job, stop the job thread and delete every kept upload."""
        with self.store.lock:
            for job in self.store.jobs.values():
                job.cancelled.set()
        self._queue.put(None)
        self._thread.join(10)
        self.store.remove_all()

    # -------------------------------------------------------------------------------------------- running
    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=_SWEEP_SECONDS)
            except queue.Empty:
                self.store.expire()
                continue
            if job is None:
                return
            try:
                self._run(job)
            finally:
                job.release_slot()
                self.store.trim()
                self.store.expire()

    def _run(self, job: Job) -> None:
        store = self.store
        with store.lock:
            if job.cancelled.is_set():
                job.state, job.error, job.status = "failed", "cancelled", HTTPStatus.CONFLICT
                return
            job.state, job.stage, job.started = "running", "starting", time.monotonic()
        try:
            with self.engine.turn():
                {"preview": self._run_preview, "full": self._run_full, "video": self._run_video}[job.kind](job)
            failure = None
        except Exception as error:  # the job must end, whatever went wrong
            failure = _failure(error)
        with store.lock:
            job.finished = time.monotonic()
            if failure is None and not job.cancelled.is_set():
                job.state, job.stage = "done", "done"
                job.upload.last_used = store.clock()
            else:
                status, message = failure or (HTTPStatus.CONFLICT, _REPLACED)
                job.state, job.stage, job.status, job.error = "failed", "failed", int(status), message
                job.discard_result()

    def _run_preview(self, job: Job) -> None:
        """Decode the photo once (its preview-sized pixels are kept), estimate the preview's curves once per mode,
        render it at the job's exposure."""
        upload, settings = job.upload, job.settings
        enhancer = self.engine.enhancer(settings.mode, settings.local_weighting)
        preview = self.store.preview(upload, settings.mode)
        if preview is None:
            if upload.pixels is None:
                job.stage = "decoding"
                job.progress(0, 3)
                upload.pixels = decode_preview(upload.path, self.limits)
                upload.before = jpeg(upload.pixels)
            job.stage = "estimating curves"
            job.progress(1, 3)
            preview = prepare_preview(enhancer, upload.pixels)
            self.store.keep_preview(upload, settings.mode, preview)
        job.stage = "rendering"
        job.progress(2, 3)
        job.result_bytes = jpeg(render_preview(enhancer, preview, settings.exposure))
        job.content_type = "image/jpeg"
        job.result_name = f"{safe_stem(upload.name)}-preview.jpg"
        job.progress(3, 3)

    def _run_full(self, job: Job) -> None:
        """Enhance the kept photo at full resolution, tile by tile."""
        upload = job.upload
        target, content_type = result_file(upload.folder, upload.path, f"full-{job.id[:8]}")
        settings = job.settings
        enhancer = self.engine.enhancer(settings.mode, settings.local_weighting)
        enhance_image_file(
            upload.path, target, enhancer, settings.exposure, self.limits.max_pixels, job.progress, job.set_stage
        )
        self._finish_file(job, target, content_type)

    def _run_video(self, job: Job) -> None:
        """Enhance the kept video, frame by frame."""
        upload = job.upload
        target, content_type = result_file(upload.folder, upload.path, f"video-{job.id[:8]}")
        estimate = estimated_frames(upload.path)
        job.stage = "enhancing"
        job.progress(0, estimate)
        enhancer = self.engine.enhancer(job.settings.mode)  # videos lift every region alike

        def frames(done: int, total: int | None) -> None:
            job.progress(done, total or estimate)

        enhance_video_file(upload.path, target, enhancer, job.settings.exposure, self.limits, frames)
        self._finish_file(job, target, content_type)

    def _finish_file(self, job: Job, target: Path, content_type: str) -> None:
        if job.cancelled.is_set():
            target.unlink(missing_ok=True)
            raise Cancelled("cancelled")
        job.result, job.result_size, job.content_type = target, target.stat().st_size, content_type
        job.result_name = enhanced_name(job.upload.name, target)
        job.done = job.total = max(job.done, job.total)
