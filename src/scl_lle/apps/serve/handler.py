"""The web app's endpoints: routing each request to the page, the kept uploads and their jobs.

``GET /`` the page; ``GET /api/limits``, ``GET /api/defaults``, ``GET /api/stats``; ``POST /api/uploads`` (keep a
file, start its first job); ``POST /api/uploads/<id>/render``; ``GET /api/uploads/<id>/preview`` and ``.../before``;
``DELETE /api/uploads/<id>``; ``GET /api/jobs/<id>`` and ``.../result``; ``POST /api/enhance`` (for scripts:
the file in, the enhanced file out, nothing kept).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ...engine.exposure import parse_exposure
from ...io.image import ImageReadError
from ..video import MEDIA_EXTENSIONS, VideoError, is_video_path
from .errors import RequestError, busy
from .jobs import Job
from .transport import SLOT_WAIT, TEXT, GuardedHandler
from .work import (
    MODES,
    Settings,
    check_container,
    enhance_image_file,
    enhance_video_file,
    enhanced_name,
    result_file,
)

__all__ = ["Handler", "page"]

_log = logging.getLogger(__name__)

# /api/uploads/<id>[/<action>] and /api/jobs/<id>[/result]
_ROUTE = re.compile(r"/api/(uploads|jobs)/([A-Za-z0-9_-]{1,64})(?:/([a-z]+))?")
_PAGE: bytes | None = None


def page() -> bytes:
    """The web page (``static/index.html`` of this package)."""
    global _PAGE
    if _PAGE is None:
        try:
            _PAGE = resources.files(__package__).joinpath("static", "index.html").read_bytes()
        except OSError as error:
            message = f"this installation of scl-lle lacks its web page, scl_lle/apps/serve/static/index.html ({error})"
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, message) from None
    return _PAGE


class Handler(GuardedHandler):
    """Answers the page's requests (see the module's list of endpoints)."""

    server_version = "scl-lle"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)  # each request: scl-lle serve -v

    # ------------------------------------------------------------------------------------------- routing
    def do_GET(self) -> None:
        """The page, the limits and statistics, a job's state and result, a kept photo's preview."""
        if not self._trusted_origin():
            return
        parts = urlsplit(self.path)
        route = _ROUTE.fullmatch(parts.path)
        store = self.server.uploads
        try:
            if parts.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page(), "text/html; charset=utf-8")
            elif parts.path == "/api/limits":
                self._send_json(HTTPStatus.OK, self.server.limits.__dict__)
            elif parts.path == "/api/defaults":
                self._send_json(HTTPStatus.OK, self._defaults())
            elif parts.path == "/api/stats":
                self._send_json(HTTPStatus.OK, store.stats())
            elif route and route.group(1) == "jobs" and route.group(3) is None:
                self._send_json(HTTPStatus.OK, store.describe(store.job(route.group(2))))
            elif route and route.group(1) == "jobs" and route.group(3) == "result":
                self._send_result(store.job(route.group(2)))
            elif route and route.group(1) == "uploads" and route.group(3) == "preview":
                self._send_preview(route.group(2), parts.query)
            elif route and route.group(1) == "uploads" and route.group(3) == "before":
                upload = store.upload(route.group(2))
                if upload.before is None:
                    raise RequestError(HTTPStatus.CONFLICT, "the photo has not been decoded yet")
                self._send(HTTPStatus.OK, upload.before, "image/jpeg")
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        except RequestError as error:
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
            except RequestError as error:
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
                raise RequestError(HTTPStatus.NOT_FOUND, "not found")
            store = self.server.uploads
            store.remove(store.upload(route.group(2)))
            self._send_json(HTTPStatus.OK, {"deleted": route.group(2)})
        except RequestError as error:
            self._send_error(error.status, str(error))

    # ------------------------------------------------------------------------------------ kept uploads, jobs
    def _upload(self, query: str) -> None:
        """Receive a file into a kept upload and queue its first job: 202 with the upload and the job."""
        checked = self._checked_upload(query)
        if checked is None:
            return
        name, settings, suffix, length = checked
        slots, store = self.server.slots, self.server.uploads
        upload, holding = None, False
        try:
            with self._receiving():  # the body comes in before it takes a work slot
                upload = store.reserve(name, suffix, length)
                self._receive(upload.path, length)
            if upload.kind == "video":
                check_container(upload.path)
            holding = slots.acquire(timeout=SLOT_WAIT)
            if not holding:
                raise busy()
            store.received(upload)
            kind = "video" if upload.kind == "video" else "preview"
            job = self.server.jobs.submit(upload, kind, settings, slots)
        except Exception as error:  # nothing is kept of a refused or broken upload
            if holding:
                slots.release()
            if upload is not None:
                store.remove(upload)
            if not isinstance(error, RequestError):
                error = RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"upload failed: {type(error).__name__}")
            with contextlib.suppress(OSError):  # the client may be gone
                self._send_error(error.status, str(error), error.headers)
            return
        self._send_json(HTTPStatus.ACCEPTED, {"upload": upload.describe(), "job": store.describe(job)})

    def _render(self, upload_id: str, query: str) -> None:
        """Queue a render of a kept upload (``size=preview|full`` for photos): 202 with the job."""
        _, settings, values = self._parameters(query)
        size = values.get("size", ["full"])[0]
        if size not in ("preview", "full"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "size must be preview or full")
        store = self.server.uploads
        upload = store.upload(upload_id)
        kind = "video" if upload.kind == "video" else size
        if not self.server.slots.acquire(timeout=SLOT_WAIT):
            self._send_busy()
            return
        job = self.server.jobs.submit(upload, kind, settings, self.server.slots)
        self._send_json(HTTPStatus.ACCEPTED, {"job": store.describe(job)})

    def _send_preview(self, upload_id: str, query: str) -> None:
        """A kept photo's preview re-rendered at the asked exposure and local weighting (no network pass), or 409
        if the preview for that mode is not prepared (``POST /api/uploads/<id>/render?size=preview`` prepares it)."""
        _, settings, _ = self._parameters(query)
        upload = self.server.uploads.upload(upload_id)
        if upload.kind != "photo":
            raise RequestError(HTTPStatus.CONFLICT, "previews are made for photos; render the video instead")
        try:
            rendered = self.server.jobs.render_preview(upload, settings)
        except Exception as error:  # the server must answer, whatever went wrong
            raise RequestError(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"enhancement failed: {type(error).__name__}: {error}"
            ) from None
        if rendered is None:
            raise RequestError(HTTPStatus.CONFLICT, "no preview prepared for this mode; render one first")
        body, seconds = rendered
        self._send(HTTPStatus.OK, body, "image/jpeg", {"X-Seconds": f"{seconds:.3f}"})

    def _send_result(self, job: Job) -> None:
        """A finished job's result: the preview picture, or the enhanced file as a download."""
        if job.state != "done":
            raise RequestError(HTTPStatus.CONFLICT, f"the job is {job.state}, not done")
        seconds = f"{(job.finished or 0.0) - (job.started or 0.0):.3f}"
        if job.result_bytes is not None:
            self._send(HTTPStatus.OK, job.result_bytes, job.content_type, {"X-Seconds": seconds})
            return
        headers = _download_headers(job.result_name, seconds)
        try:
            with open(job.result or "", "rb") as handle:  # open: readable even if the upload is dropped meanwhile
                pending = self._send_head(HTTPStatus.OK, os.fstat(handle.fileno()).st_size, job.content_type, headers)
                shutil.copyfileobj(handle, self.wfile, 1 << 20)
        except FileNotFoundError:
            raise RequestError(HTTPStatus.NOT_FOUND, "the result is gone; render it again") from None
        self._end(pending)

    # ------------------------------------------------------------------------------- one-shot /api/enhance
    def _enhance_once(self, query: str) -> None:
        """The request body is the file; the response body is the enhanced file; nothing is kept."""
        checked = self._checked_upload(query)
        if checked is None:
            return
        name, settings, suffix, length = checked
        with contextlib.ExitStack() as held:  # the work slot, once taken, until the answer is sent
            work = Path(tempfile.mkdtemp(dir=self.server.scratch))
            try:
                answer = self._enhance_upload(held, work, name, suffix, length, settings)
            finally:
                shutil.rmtree(work, ignore_errors=True)  # before answering: nothing outlives the request
            self._send(*answer)

    def _enhance_upload(
        self, held: contextlib.ExitStack, work: Path, name: str, suffix: str, length: int, settings: Settings
    ) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        """Receive, check and enhance the upload inside ``work`` (a work slot, taken once the body is in, is
        released by ``held``); the answer as (status, body, type, headers)."""
        try:
            upload = work / f"upload{suffix}"
            with self._receiving():
                self._receive(upload, length)
            if not self.server.slots.acquire(timeout=SLOT_WAIT):
                raise busy()
            held.callback(self.server.slots.release)
            started = time.perf_counter()
            target, content_type = result_file(work, upload, "result")
            enhancer = self.server.engine.enhancer(settings.mode, settings.local_weighting)
            limits, exposure = self.server.limits, settings.exposure
            if is_video_path(upload):
                check_container(upload)
                with self.server.engine.turn():
                    enhance_video_file(upload, target, enhancer, exposure, limits)
            else:
                with self.server.engine.turn():
                    enhance_image_file(upload, target, enhancer, exposure, limits.max_pixels)
            headers = _download_headers(enhanced_name(name, target), f"{time.perf_counter() - started:.3f}")
            return HTTPStatus.OK, target.read_bytes(), content_type, headers
        except RequestError as error:
            return error.status, str(error).encode(), TEXT, error.headers
        except (ImageReadError, VideoError) as error:
            return HTTPStatus.UNPROCESSABLE_ENTITY, f"cannot use this file: {error}".encode(), TEXT, {}
        except ImportError as error:
            return HTTPStatus.NOT_IMPLEMENTED, str(error).encode(), TEXT, {}
        except Exception as error:  # the server must answer, whatever went wrong
            message = f"enhancement failed: {type(error).__name__}: {error}"
            return HTTPStatus.INTERNAL_SERVER_ERROR, message.encode(), TEXT, {}

    # --------------------------------------------------------------------------------------- parameters
    def _checked_upload(self, query: str) -> tuple[str, Settings, str, int] | None:
        """An upload's ``(name, settings, suffix, length)``, from everything that can be refused without reading
        the body; ``None`` once a refusal has been sent."""
        try:
            name, settings, _ = self._parameters(query)
            return name, settings, _suffix(name), self._upload_length()
        except RequestError as error:
            self._send_error(error.status, str(error))
            return None

    def _defaults(self) -> dict[str, Any]:
        """The settings a request gets for the fields it leaves out (``GET /api/defaults``)."""
        return {"mode": "full", "exposure": "auto", "local_weighting": self.server.engine.local_weighting}

    def _parameters(self, query: str) -> tuple[str, Settings, dict[str, list[str]]]:
        """``name`` and the :class:`~scl_lle.apps.serve.work.Settings` (``mode``, ``exposure``,
        ``local_weighting``: 1 or 0, by default the server's) from the query (checked), and all its fields."""
        try:
            values = parse_qs(query, max_num_fields=8)
        except ValueError:  # more fields than that
            raise RequestError(HTTPStatus.BAD_REQUEST, "too many query parameters") from None
        name = values.get("name", ["upload.png"])[0][:255]
        defaults = self._defaults()
        mode = values.get("mode", [defaults["mode"]])[0]
        if mode not in MODES:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"mode must be one of {', '.join(MODES)}")
        try:
            exposure = parse_exposure(values.get("exposure", [defaults["exposure"]])[0])
        except ValueError as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        local = values.get("local_weighting", [str(int(defaults["local_weighting"]))])[0]
        if local not in ("0", "1"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "local_weighting must be 0 or 1")
        return name, Settings(mode, exposure, local == "1"), values


def _suffix(name: str) -> str:
    """The upload's ending, refused unless it is a known image or video ending."""
    suffix = Path(name).suffix.lower()
    if suffix not in MEDIA_EXTENSIONS:
        known = ", ".join(sorted(MEDIA_EXTENSIONS))
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported file type; use one of {known}")
    return suffix


def _download_headers(name: str, seconds: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"', "X-Result-Name": name, "X-Seconds": seconds}
