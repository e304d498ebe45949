"""``scl-lle serve`` under hostile or heavy use: request smuggling, floods, memory, lying headers, SIGTERM."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import http_request
from scl_lle.apps.serve import EnhanceServer
from scl_lle.apps.serve import work as work_module
from scl_lle.engine.enhancer import Enhancer

SMALL_LIMITS = {"max_upload_mb": 200_000 / 2**20, "max_pixels": 100_000, "max_video_seconds": 2.0}
UNKNOWN = "A" * 22  # an upload or job id that does not exist


@pytest.fixture()
def start(server_factory: Callable[..., EnhanceServer]) -> Callable[..., EnhanceServer]:
    """Make servers (random weights, small limits, any free port); ``serving=False`` binds without accepting."""
    return lambda serving=True, **limits: server_factory({**SMALL_LIMITS, **limits}, serving=serving)


def _png(width: int = 64, height: int = 48) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 60, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(path: str, body: bytes, headers: str = "") -> bytes:
    """A raw ``POST`` request to ``127.0.0.1``."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


def _request(
    app: EnhanceServer, path: str, body: bytes, sock: socket.socket | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = app.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=60)
    if sock is not None:
        connection.sock = sock
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _smuggled() -> bytes:
    """A complete, valid upload: what an attacker hides in the body of a request the server refuses."""
    return _post("/api/enhance?name=inner.png&mode=fast", _png())


def _with_body(head: str, body: bytes) -> bytes:
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _exchange(app: EnhanceServer, raw: bytes, wait: float = 10.0) -> tuple[list[int], bool]:
    """Send ``raw`` on one connection; the statuses of the responses read back and whether the server closed it."""
    data, closed = b"", False
    with socket.create_connection(app.server_address[:2], timeout=wait) as connection:
        connection.sendall(raw)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(1 << 16)
            except TimeoutError:
                break
            except ConnectionResetError:  # a reset is a failure too: the answer may be lost with it
                break
            if not chunk:
                closed = True
                break
            data += chunk
    return _statuses(data), closed


def _statuses(data: bytes) -> list[int]:
    """The status codes of the HTTP/1.1 responses in ``data`` (each framed by its Content-Length)."""
    statuses = []
    while data:
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, f"not a complete response: {data[:200]!r}"
        statuses.append(int(head.split()[1]))
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        data = rest[int(length.group(1)) if length else 0 :]
    return statuses


# ------------------------------------------------------------------------------------- request smuggling
@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (_post("/api/enhance?name=a.png", _smuggled(), "Origin: http://attacker.example\r\n"), 403),
        (_post("/api/other", _smuggled()), 404),
        (_post("/api/enhance?name=tool.exe", _smuggled()), 415),
        (_post("/api/enhance?name=a.png&mode=turbo", _smuggled()), 400),
        (_with_body("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", _smuggled()), 200),
        (_post("/api/uploads?name=tool.exe", _smuggled()), 415),
        (_post("/api/uploads?name=a.png", _smuggled(), "Origin: http://attacker.example\r\n"), 403),
        (_post(f"/api/uploads/{UNKNOWN}/render?size=full", _smuggled()), 404),
        (_with_body(f"GET /api/jobs/{UNKNOWN} HTTP/1.1\r\nHost: 127.0.0.1\r\n", _smuggled()), 404),
        (_with_body(f"DELETE /api/uploads/{UNKNOWN} HTTP/1.1\r\nHost: 127.0.0.1\r\n", _smuggled()), 404),
    ],
    ids=[
        "cross-site",
        "not-found",
        "unsupported-type",
        "bad-parameter",
        "get-with-body",
        "kept-upload-unsupported-type",
        "kept-upload-cross-site",
        "render-unknown-upload",
        "job-poll-with-body",
        "delete-with-body",
    ],
)
def test_an_unread_body_is_never_taken_for_a_request(
    start: Callable[..., EnhanceServer], first: bytes, expected: int
) -> None:
    """An answer given before the body was read closes the connection: the body is not a second request."""
    app = start()
    statuses, closed = _exchange(app, first)
    assert statuses == [expected]
    assert closed


def test_keep_alive_still_works_once_a_body_was_read(start: Callable[..., EnhanceServer]) -> None:
    app = start()
    pipelined = _post("/api/enhance?name=a.png&mode=fast", _png()) + b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    statuses, _ = _exchange(app, pipelined, wait=3.0)
    assert statuses == [200, 200]
    stats = b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    statuses, _ = _exchange(app, _post("/api/uploads?name=a.png&mode=fast", _png()) + stats + stats, wait=3.0)
    assert statuses == [202, 200, 200]  # a kept upload, then polls on the same connection


def test_a_huge_announced_length_is_refused_at_once(start: Callable[..., EnhanceServer]) -> None:
    """``Content-Length: 10000000000000`` and no body: 413 at once, and the connection closed."""
    app = start()
    started = time.monotonic()
    head = "POST /api/enhance?name=a.png HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000000000\r\n\r\n"
    statuses, closed = _exchange(app, head.encode(), wait=5.0)
    assert statuses == [413] and closed
    assert time.monotonic() - started < 2.0


def test_too_many_query_fields_is_a_bad_request(start: Callable[..., EnhanceServer]) -> None:
    app = start()
    query = "&".join(f"field{i}=1" for i in range(20))
    statuses, _ = _exchange(app, _post(f"/api/enhance?name=a.png&{query}", _png()))
    assert statuses == [400]


# ------------------------------------------------------------------------------------------ containers
@pytest.mark.parametrize("name", ["clip.mp4", "clip.mov", "clip.webm", "clip.mkv", "clip.avi"])
def test_video_container_is_checked_by_content_not_name(start: Callable[..., EnhanceServer], name: str) -> None:
    app = start()
    status, _, message = _request(app, f"/api/enhance?name={name}", _png())
    assert status == 415, message
    assert b"not" in message and name.rsplit(".", 1)[1].encode() in message.lower()


def test_a_real_container_start_reaches_the_video_reader(start: Callable[..., EnhanceServer]) -> None:
    """Bytes with an ``ftyp`` box pass the container check; the (garbage) rest is the decoder's to refuse."""
    app = start()
    fake = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(200)
    status, _, message = _request(app, "/api/enhance?name=clip.mp4", fake)
    assert status in (422, 501), message


# ------------------------------------------------------------------------------ floods and bounded work
def test_twenty_concurrent_uploads_all_get_an_answer(start: Callable[..., EnhanceServer]) -> None:
    """20 clients connect while the server is not accepting (a busy moment), then all upload at once.

    The listen backlog holds them all (Python's default of 5 dropped the rest), and each gets an HTTP answer:
    200, or 503 with ``Retry-After`` once ``max_queue`` uploads are in the works; never a connection error.
    """
    app = start(serving=False, max_queue=4)
    sockets = [socket.create_connection(app.server_address[:2], timeout=2) for _ in range(20)]
    for connection in sockets:
        connection.settimeout(60)
    thread = threading.Thread(target=app.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        upload = _png()
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda s: _request(app, "/api/enhance?name=a.png&mode=fast", upload, s), sockets))
    finally:
        app.shutdown()
        thread.join(5)
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    assert all(headers.get("Retry-After") == "5" for status, headers, _ in answers if status == 503)
    print(f"20 concurrent uploads: {statuses.count(200)} x 200, {statuses.count(503)} x 503")


@pytest.fixture()
def slow_engine(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Each enhancement takes 1 s; the event is set once one has begun."""
    busy = threading.Event()
    original = Enhancer.enhance_picture

    def slow(self: Enhancer, *args: object, **kwargs: object) -> object:
        busy.set()
        time.sleep(1.0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Enhancer, "enhance_picture", slow)
    return busy


def test_a_full_queue_answers_503(start: Callable[..., EnhanceServer], slow_engine: threading.Event) -> None:
    app = start(max_queue=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_request, app, "/api/enhance?name=a.png", _png())
        assert slow_engine.wait(30)
        status, headers, message = _request(app, "/api/enhance?name=b.png", _png())
        assert status == 503, message
        assert headers["Retry-After"] == "5" and headers["Connection"] == "close"
        assert first.result()[0] == 200
    assert _request(app, "/api/enhance?name=c.png", _png())[0] == 200  # the slot was given back


class _DecodedPictures:
    """Counts the pictures the server has decoded and not yet dropped: ``alive`` now, ``most`` at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold: float = 0.0) -> None:
        self.alive = self.most = 0
        self.lock = threading.Lock()
        original = work_module.read_image

        def counting(*args: object, **kwargs: object) -> object:
            picture = original(*args, **kwargs)
            with self.lock:
                self.alive += 1
                self.most = max(self.most, self.alive)
            weakref.finalize(picture, self._gone)
            time.sleep(hold)  # held a while: another job decoding meanwhile would be counted
            return picture

        monkeypatch.setattr(work_module, "read_image", counting)

    def _gone(self) -> None:
        with self.lock:
            self.alive -= 1


def test_waiting_uploads_hold_no_decoded_pictures(
    start: Callable[..., EnhanceServer], slow_engine: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 3 uploads in the works at once, at most one decoded picture exists at any time."""
    decoded = _DecodedPictures(monkeypatch)
    app = start(max_queue=3)
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda i: _request(app, f"/api/enhance?name={i}.png", _png())[0], range(3)))
    assert statuses == [200, 200, 200]
    assert decoded.most == 1
    assert decoded.alive == 0


def test_jobs_decode_one_picture_at_a_time_and_keep_none(
    start: Callable[..., EnhanceServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads kept for re-rendering hold no decoded picture: three at once, at most one decoded at any time,
    none once their jobs are done (a photo's preview-sized pixels are all that is kept)."""
    decoded = _DecodedPictures(monkeypatch, hold=0.3)
    app = start(max_queue=3)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda i: _request(app, f"/api/uploads?name={i}.png&mode=fast", _png()), range(3)))
    assert [status for status, _, _ in answers] == [202, 202, 202]
    deadline = time.monotonic() + 60
    while json.loads(_get(app, "/api/stats"))["jobs_waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert decoded.most == 1
    assert decoded.alive == 0


def _get(app: EnhanceServer, path: str) -> bytes:
    return http_request(app, "GET", path)[2]


def test_release_memory_is_safe_to_call() -> None:
    work_module.release_memory()  # malloc_trim on glibc; nothing elsewhere


# ------------------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_stops_cleanly_and_removes_the_scratch_folder(tmp_path: Path, weights_file: Path) -> None:
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch_root)}
    command = [sys.executable, "-m", "scl_lle", "serve", "--port", "0", "--device", "cpu", "-w", str(weights_file)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        ready = process.stderr.readline()  # printed once the model is loaded and the port bound
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", ready)
        assert match, ready + process.stderr.read()
        assert list(scratch_root.glob("scl-lle-serve-*"))
        connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=60)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert not list(scratch_root.glob("scl-lle-serve-*"))


def test_max_queue_flag_reaches_the_server_limits(monkeypatch) -> None:
    import scl_lle.apps.serve.server
    from scl_lle.cli import main

    seen = {}
    monkeypatch.setattr(
        scl_lle.apps.serve.server, "serve", lambda *args, limits, **kwargs: seen.setdefault("limits", limits)
    )
    assert main(["serve", "--max-queue", "2", "--port", "0"]) == 0
    assert seen["limits"].max_queue == 2
    with pytest.raises(SystemExit):
        main(["serve", "--max-queue", "0"])


def test_limit_flags_have_the_names_of_the_limits(monkeypatch) -> None:
    """--max-upload-mb sets ServeLimits.max_upload_mb; --max-pixels 0 means no limit, as for enhance."""
    import scl_lle.apps.serve.server
    from scl_lle.cli import main

    seen = {}
    monkeypatch.setattr(
        scl_lle.apps.serve.server, "serve", lambda *args, limits, **kwargs: seen.setdefault("limits", limits)
    )
    assert main(["serve", "--max-upload-mb", "3", "--max-pixels", "0", "--port", "0"]) == 0
    assert seen["limits"].max_upload_mb == 3
    assert seen["limits"].max_upload_bytes == 3 * 2**20
    assert seen["limits"].max_pixels is None
