"""A local web app: ``scl-lle serve`` opens a page to drop photos (and short videos) and get them enhanced.

Only the standard library's :mod:`http.server` is used. The page (inline HTML, CSS and JavaScript) uploads the
file's bytes to ``POST /api/enhance?exposure=auto|off|E&mode=full|fast&name=FILE`` and shows before and after with a
slider, and a download link. Safety:

- binds to the loopback address by default, and refuses requests whose ``Host`` or ``Origin`` names another
  site (DNS rebinding, cross-site posts);
- uploads are limited in bytes (checked before reading), images in pixels (checked from the header before
  decoding) and videos in frame size and duration;
- every upload and result lives in a fresh folder inside the server's own temporary folder and is deleted when
  the response has been sent; the uploaded file name is used only for its ending (checked against the known
  image and video endings; a "video" whose first bytes are an image is refused) and for the download name, never
  as a path; no other file is ever served;
- an answer given before the request body was read (a refusal) closes the connection, so that body can never be
  taken for a second request (request smuggling); the socket is half-closed and what the client still sends is
  dropped for a moment, bounded in bytes and time, so the answer is not lost to a reset;
- at most ``max_queue`` uploads are in the works at once (received, waiting for the engine, enhanced, answered);
  more are answered 503 with ``Retry-After``. Pictures are decoded only once the engine is theirs, so waiting
  uploads hold no pixels, and freed memory is handed back to the system after each enhancement (glibc).

The standard library's server is kept rather than uvicorn or starlette: a local single-user tool needs no extra
dependencies, and every early answer goes through one method (``_Handler._send``), where the connection is closed.

"Exposure" is the enhancer's ``exposure`` (:mod:`scl_lle.exposure`), the same setting as ``--exposure``:
``auto`` (a target chosen from the photo; well-exposed photos come back nearly unchanged), ``off`` (the
network's curves at full strength) or a target mean brightness E in (0, 1), reached by scaling the curve maps
(every curve stays a smooth monotone tone curve, not a cross-fade).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .exposure import Exposure, parse_exposure
from .imageio import IMAGE_EXTENSIONS, ImageReadError, image_named_as_video, read_image, write_image
from .inference import FAST_SCALE, Enhancer
from .model import DCENet
from .video import VIDEO_EXTENSIONS, VideoError, enhance_video
from .weights import load_dcenet

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


@dataclass(frozen=True)
class ServeLimits:
    """What one upload may be."""

    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_video_pixels: int = 3840 * 2160
    max_video_seconds: float = 20.0
    #: Uploads in the works at once (received, waiting for the engine, enhanced, answered); more get 503.
    max_queue: int = 4


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

    @property
    def url(self) -> str:
        """``http://host:port/`` of the page."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        """Close the socket and delete the temporary folder."""
        super().server_close()
        self._scratch.cleanup()


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:80].strip("._")
    return stem or "image"


class _Handler(BaseHTTPRequestHandler):
    server: EnhanceServer
    server_version = "scl-lle"
    timeout = 120  # seconds a client may stall while sending (a slow or stuck upload does not hold a thread)
    protocol_version = "HTTP/1.1"
    _body_read = False  # whether this request's body has been read in full (set per request)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"scl-lle serve: {self.address_string()} {format % args}\n")

    # ------------------------------------------------------------------------------------------- routing
    def do_GET(self) -> None:
        """Serve the page (the only resource there is)."""
        if not self._trusted_origin():
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/limits":
            self._send(HTTPStatus.OK, json.dumps(self.server.limits.__dict__).encode(), "application/json")
        else:
            self._send_error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        """``/api/enhance``: the request body is the file; the response body is the enhanced file."""
        if not self._trusted_origin():
            return
        parts = urlsplit(self.path)
        if parts.path != "/api/enhance":
            self._send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        try:  # everything that can be refused without reading the body
            name, mode, exposure = self._parameters(parts.query)
            suffix = Path(name).suffix.lower()
            if suffix not in IMAGE_EXTENSIONS and suffix not in VIDEO_EXTENSIONS:
                known = ", ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
                raise _RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported file type; use one of {known}")
            length = self._upload_length()
        except _RequestError as error:
            self._send_error(error.status, str(error))
            return
        if not self.server.slots.acquire(blocking=False):
            message = b"the server is busy with other uploads; try again in a few seconds"
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, message, _TEXT, {"Retry-After": "5"})
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

    def _parameters(self, query: str) -> tuple[str, str, Exposure]:
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
        return name, mode, exposure

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
        pending = self._body_pending()
        self.send_response(status)
        if pending:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
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
        if self.command != "HEAD":
            self.wfile.write(body)
        if pending:
            self.close_connection = True
            self._linger()

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, message.encode(), _TEXT)


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
        print(
            f"scl-lle serve: warning: listening on {host}, reachable from other machines; the app has no login",
            file=sys.stderr,
        )
    restore = _stop_on_sigterm(server)
    print(f"scl-lle serve: open {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
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


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>scl-lle: low-light enhancer</title>
<style>
  :root { color-scheme: dark; --accent: #f5b942; --panel: #1d2230; --text: #e8eaf0; --muted: #9aa3b5; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: #11141c; color: var(--text); }
  header { padding: 14px 24px; border-bottom: 1px solid #262c3b; display: flex; gap: 12px; align-items: baseline; }
  header h1 { font-size: 19px; margin: 0; }
  header span { color: var(--muted); }
  main { max-width: 1100px; margin: 0 auto; padding: 18px 24px 32px; }
  #drop { border: 2px dashed #3a4257; border-radius: 12px; padding: 22px; text-align: center; background: var(--panel);
          transition: border-color .15s, background .15s; }
  #drop.over { border-color: var(--accent); background: #262c3d; }
  #drop label { color: var(--accent); cursor: pointer; text-decoration: underline; }
  #file { display: none; }
  .controls { display: flex; flex-wrap: wrap; gap: 22px; align-items: center; margin: 16px 0 6px; }
  .controls label { display: flex; gap: 8px; align-items: center; }
  select, .button { background: var(--panel); color: var(--text); border: 1px solid #3a4257; border-radius: 8px;
                    padding: 6px 12px; font: inherit; }
  .button { text-decoration: none; background: var(--accent); color: #1a1a1a; font-weight: 600; border: 0; }
  .button.disabled { opacity: .35; pointer-events: none; }
  #status { color: var(--muted); min-height: 1.5em; margin: 6px 0 12px; }
  #status.error { color: #ff7b7b; }
  .compare { position: relative; border-radius: 10px; overflow: hidden; background: #000; user-select: none;
             line-height: 0; width: fit-content; max-width: 100%; margin: 0 auto; }
  #before img, #before video { display: block; max-width: 100%; max-height: 72vh; width: auto; height: auto; }
  .after img, .after video { display: block; width: 100%; height: 100%; }
  .compare .after { position: absolute; inset: 0; clip-path: inset(0 0 0 50%); }
  .compare .line { position: absolute; top: 0; bottom: 0; left: 50%; width: 2px; background: var(--accent);
                   pointer-events: none; }
  .compare input[type=range] { position: absolute; inset: 0; width: 100%; height: 100%; margin: 0; opacity: 0;
                               cursor: ew-resize; }
  .tag { position: absolute; top: 10px; padding: 2px 8px; border-radius: 6px; background: #000a; font-size: 13px;
         line-height: 1.5; pointer-events: none; }
  .tag.before { left: 10px; } .tag.after-tag { right: 10px; }
</style>
</head>
<body data-state="idle">
<header><h1>scl-lle</h1><span>low-light enhancement, on this computer</span></header>
<main>
  <section id="drop">
    Drop a photo or a short video here, or <label for="file">choose a file</label>.
    <input type="file" id="file" accept="image/*,video/*">
  </section>
  <div class="controls">
    <label>Exposure <select id="exposure"><option value="auto">auto</option>
      <option value="target">brightness</option><option value="off">off (full curves)</option></select></label>
    <label>Brightness <input type="range" id="brightness" min="5" max="95" value="45">
      <output id="brightness-value">0.45</output></label>
    <label>Speed <select id="mode"><option value="full">full quality</option><option value="fast">fast</option>
      </select></label>
    <a id="download" class="button disabled" href="#" download>Download result</a>
  </div>
  <p id="status" role="status">Nothing enhanced yet.</p>
  <div id="compare" class="compare" hidden>
    <div id="before"></div>
    <div id="after" class="after"></div>
    <div class="line" id="line"></div>
    <span class="tag before">before</span><span class="tag after-tag">after</span>
    <input type="range" id="divider" min="0" max="100" value="50" step="0.1" aria-label="before / after">
  </div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const state = { file: null, beforeURL: null, afterURL: null, seq: 0, timer: null };
const videoEnding = /\\.(mp4|m4v|mov|mkv|webm|avi|mpe?g|ts|mts|m2ts|wmv|flv|ogv|3gp)$/i;

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}
function media(url, isVideo) {
  const element = document.createElement(isVideo ? "video" : "img");
  element.src = url;
  if (isVideo) { element.muted = true; element.loop = true; element.autoplay = true; element.playsInline = true; }
  else { element.alt = ""; }
  return element;
}
function syncVideos() {
  const videos = document.querySelectorAll(".compare video");
  if (videos.length === 2) { videos[1].currentTime = videos[0].currentTime; videos[0].play(); videos[1].play(); }
}
function showBefore(file) {
  if (state.beforeURL) URL.revokeObjectURL(state.beforeURL);
  state.beforeURL = URL.createObjectURL(file);
  $("before").replaceChildren(media(state.beforeURL, isVideo(file)));
  $("after").replaceChildren();
  $("compare").hidden = false;
}
function isVideo(file) { return file.type.startsWith("video/") || videoEnding.test(file.name); }

async function enhance() {
  if (!state.file) return;
  const seq = ++state.seq;
  const download = $("download");
  download.classList.add("disabled");
  document.body.dataset.state = "working";
  setStatus(isVideo(state.file) ? "Enhancing the video... (a few seconds per second of video)" : "Enhancing...");
  const params = new URLSearchParams({
    name: state.file.name, mode: $("mode").value, exposure: exposureSetting(),
  });
  const started = performance.now();
  let response;
  try {
    response = await fetch("/api/enhance?" + params, {
      method: "POST", body: state.file, headers: { "Content-Type": "application/octet-stream" },
    });
  } catch (error) {
    if (seq === state.seq) { document.body.dataset.state = "error"; setStatus("Network error: " + error, true); }
    return;
  }
  if (seq !== state.seq) return;  // a newer request replaced this one
  if (!response.ok) {
    document.body.dataset.state = "error";
    setStatus("Error: " + ((await response.text()) || response.statusText), true);
    return;
  }
  const blob = await response.blob();
  if (seq !== state.seq) return;
  if (state.afterURL) URL.revokeObjectURL(state.afterURL);
  state.afterURL = URL.createObjectURL(blob);
  $("after").replaceChildren(media(state.afterURL, blob.type.startsWith("video/")));
  syncVideos();
  download.href = state.afterURL;
  download.download = response.headers.get("X-Result-Name") || "enhanced.png";
  download.classList.remove("disabled");
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  setStatus(`Done in ${seconds} s. Drag across the picture to compare before and after.`);
  document.body.dataset.state = "done";
}
function choose(file) {
  if (!file) return;
  if (state.limits && file.size > state.limits.max_upload_bytes) {
    const mb = Math.round(state.limits.max_upload_bytes / 1048576);
    setStatus(`This file is larger than the server's limit of ${mb} MB.`, true);
    return;
  }
  state.file = file;
  showBefore(file);
  enhance();
}
function exposureSetting() {
  const choice = $("exposure").value;
  return choice === "target" ? String($("brightness").value / 100) : choice;
}
function later() { clearTimeout(state.timer); state.timer = setTimeout(enhance, 300); }

fetch("/api/limits").then((r) => r.json()).then((limits) => { state.limits = limits; }).catch(() => {});
$("file").addEventListener("change", (event) => choose(event.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((name) => drop.addEventListener(name, (event) => {
  event.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (event) => choose(event.dataTransfer.files[0]));
$("brightness").addEventListener("input", () => {
  $("brightness-value").textContent = ($("brightness").value / 100).toFixed(2);
  $("exposure").value = "target"; later();
});
$("exposure").addEventListener("change", enhance);
$("mode").addEventListener("change", enhance);
$("divider").addEventListener("input", () => {
  const x = $("divider").value;
  $("after").style.clipPath = `inset(0 0 0 ${x}%)`;
  $("line").style.left = x + "%";
});
</script>
</body>
</html>
"""
