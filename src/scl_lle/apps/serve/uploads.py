"""Kept uploads: each file in its own folder of the scratch folder, bounded in number, bytes and idle time.

At most ``ServeLimits.max_kept_uploads`` uploads and ``max_kept_bytes`` (results included) are kept besides the
ones being worked on; the least recently used go first. An upload unused for ``kept_idle_minutes`` is deleted,
as is one the page drops (``DELETE /api/uploads/<id>``). The prepared previews of the ``max_previews`` most
recently used photos are held in memory. Upload and job ids are random (128 bits): nothing can be fetched
without one.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..video import is_video_path
from .errors import RequestError
from .limits import ServeLimits
from .previews import Preview

if TYPE_CHECKING:
    from .jobs import Job

__all__ = ["Upload", "UploadStore"]


class Upload:
    """A file kept in its own folder of the scratch folder, for renders at other settings."""

    def __init__(self, folder: Path, name: str, suffix: str, size: int, now: float) -> None:
        self.id = secrets.token_urlsafe(16)
        self.folder = folder
        self.path = folder / f"upload{suffix}"
        self.name = name
        self.suffix = suffix
        self.kind = "video" if is_video_path(self.path) else "photo"
        self.size = size
        self.last_used = now
        self.received = False
        self.jobs: dict[str, Job] = {}  # the latest job of each kind ("preview", "full", "video")
        self.pixels: np.ndarray | None = None  # a photo's preview-sized pixels (8-bit RGB), once decoded
        self.before: bytes | None = None  # the same as JPEG: "before" for a photo the browser cannot show

    def busy(self) -> bool:
        """Whether it is still being received or has a job queued or running (then it is never dropped)."""
        return not self.received or any(job.state in ("queued", "running") for job in self.jobs.values())

    def nbytes(self) -> int:
        """Bytes on disk: the upload and its results."""
        return self.size + sum(job.result_size for job in self.jobs.values())

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "name": self.name}


class UploadStore:
    """The kept uploads, their jobs (by id) and prepared previews, under one lock; ``clock``: for the idle rule."""

    def __init__(self, scratch: Path, limits: ServeLimits) -> None:
        self.scratch = scratch
        self.limits = limits
        self.clock: Callable[[], float] = time.monotonic
        self.lock = threading.RLock()
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self.previews: OrderedDict[tuple[str, str], Preview] = OrderedDict()
        self.counts = {"uploads": 0, "jobs": 0, "previews": 0}  # received, started, re-rendered (for /api/stats)

    def reserve(self, name: str, suffix: str, length: int) -> Upload:
        """A new upload's folder; idle kept uploads are dropped (least recently used first) to make room."""
        with self.lock:
            self.expire()
            limits = self.limits  # room for this upload
            self._drop_idle(
                lambda count, kept: count >= limits.max_kept_uploads or kept + length > limits.max_kept_bytes, 0
            )
            folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.scratch))
            upload = Upload(folder, name, suffix, length, self.clock())
            self.uploads[upload.id] = upload
            return upload

    def received(self, upload: Upload) -> None:
        with self.lock:
            upload.received = True
            upload.last_used = self.clock()
            self.counts["uploads"] += 1

    def upload(self, upload_id: str) -> Upload:
        """The kept upload (marked as used now), or 404."""
        with self.lock:
            self.expire()
            upload = self.uploads.get(upload_id)
            if upload is None or not upload.received:
                raise RequestError(HTTPStatus.NOT_FOUND, "unknown or expired upload; upload the file again")
            upload.last_used = self.clock()
            return upload

    def job(self, job_id: str) -> Job:
        """The job (its upload marked as used now), or 404."""
        with self.lock:
            self.expire()
            job = self.jobs.get(job_id)
            if job is None:
                raise RequestError(HTTPStatus.NOT_FOUND, "unknown or expired job")
            job.upload.last_used = self.clock()
            return job

    def describe(self, job: Job) -> dict[str, Any]:
        """The job's state for the page, with the number of jobs ahead of a queued one."""
        with self.lock:
            ahead = 0
            if job.state == "queued":
                ahead = sum(
                    1
                    for other in self.jobs.values()
                    if other.state in ("queued", "running") and other.created < job.created
                )
            return job.describe(time.monotonic(), ahead)

    def preview(self, upload: Upload, mode: str) -> Preview | None:
        """The prepared preview of ``upload`` for ``mode`` (marked as used now), if it is held."""
        with self.lock:
            key = (upload.id, mode)
            preview = self.previews.get(key)
            if preview is not None:
                self.previews.move_to_end(key)
            return preview

    def keep_preview(self, upload: Upload, mode: str, preview: Preview) -> None:
        """Hold ``preview``, dropping the least recently used beyond ``max_previews``."""
        with self.lock:
            if upload.id not in self.uploads:
                return
            self.previews[(upload.id, mode)] = preview
            self.previews.move_to_end((upload.id, mode))
            while len(self.previews) > max(1, self.limits.max_previews):
                self.previews.popitem(last=False)

    def remove(self, upload: Upload) -> None:
        """Cancel the upload's jobs and delete it with its results."""
        with self.lock:
            for job in list(upload.jobs.values()):
                self.drop_job(job)
            upload.jobs.clear()
            for key in [key for key in self.previews if key[0] == upload.id]:
                del self.previews[key]
            upload.pixels = upload.before = None
            self.uploads.pop(upload.id, None)
            shutil.rmtree(upload.folder, ignore_errors=True)

    def remove_all(self) -> None:
        with self.lock:
            for upload in list(self.uploads.values()):
                self.remove(upload)

    def drop_job(self, job: Job) -> None:
        """Cancel ``job`` (if it has not finished) and forget it; a queued one gives its slot back now."""
        with self.lock:
            job.cancelled.set()
            if job.state == "queued":
                job.release_slot()
            if job.state not in ("queued", "running"):
                job.discard_result()
            self.jobs.pop(job.id, None)

    def expire(self) -> None:
        """Delete the kept uploads left unused for ``kept_idle_minutes`` (not those being worked on)."""
        with self.lock:
            deadline = self.clock() - 60.0 * self.limits.kept_idle_minutes
            for upload in list(self.uploads.values()):
                if upload.last_used < deadline and not upload.busy():
                    self.remove(upload)

    def trim(self) -> None:
        """Drop idle kept uploads (least recently used first) while more are kept than the limits allow."""
        with self.lock:
            limits = self.limits
            self._drop_idle(lambda count, kept: count > limits.max_kept_uploads or kept > limits.max_kept_bytes, 1)

    def _drop_idle(self, too_many: Callable[[int, int], bool], keep: int) -> None:
        """Drop idle uploads, least recently used first, down to ``keep``, while ``too_many(count, bytes)``."""
        idle = sorted((u for u in self.uploads.values() if not u.busy()), key=lambda u: u.last_used)
        kept = sum(u.nbytes() for u in idle)
        while len(idle) > keep and too_many(len(idle), kept):
            kept -= idle[0].nbytes()
            self.remove(idle.pop(0))

    def stats(self) -> dict[str, Any]:
        """What ``GET /api/stats`` answers."""
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
