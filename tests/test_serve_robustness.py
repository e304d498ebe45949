"""``scl-lle serve`` against a second attack run: an address it cannot listen on, slow-loris uploads, clients that
hang up early, and limits that are NaN, infinite or not positive."""

from __future__ import annotations

import io
import logging
import math
import select
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import http_request
from scl_lle.apps.serve import EnhanceServer, ServeLimits, make_server
from scl_lle.cli import main

# Uploads must arrive within 1 s in these tests (the rate term is negligible for the small bodies sent here).
FAST_DEADLINE = {"receive_grace_seconds": 1.0, "receive_min_kb_per_second": 1e6}
SMALL_LIMITS = {"max_upload_mb": 200_000 / 2**20, "max_pixels": 100_000, "max_video_seconds": 2.0, **FAST_DEADLINE}
STALLED = b"POST /api/enhance?name=a.png HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nabc"


@pytest.fixture()
def start(server_factory: Callable[..., EnhanceServer]) -> Callable[..., EnhanceServer]:
    """Make serving servers (random weights, small limits, uploads due within 1 s, any free port)."""
    return lambda **limits: server_factory({**SMALL_LIMITS, **limits})


@pytest.fixture()
def serve_stub(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """``scl-lle serve`` runs up to :func:`serve`, which only records its arguments."""
    import scl_lle.apps.serve.server

    seen: dict[str, object] = {}
    monkeypatch.setattr(scl_lle.apps.serve.server, "serve", lambda *args, **kwargs: seen.update(kwargs, args=args))
    return seen


def test_the_pixel_limit_message_is_the_servers_own(
    serve_stub: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A 20000 x 20000 upload was refused in Pillow's words ("exceeds limit of 178956970 pixels, could be
    # decompression bomb"), not with the --max-pixels message that smaller ones get.
    import zlib

    from scl_lle.io.errors import ImageTooLargeError
    from scl_lle.io.image import read_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    assert main(["serve", "--port", "0", "--max-pixels", "40000000"]) == 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    with pytest.raises(ImageTooLargeError, match=r"20000x20000 is 400\.0 megapixels, over the limit of 40\.0"):
        read_image(path, max_pixels=serve_stub["limits"].max_pixels)  # type: ignore[attr-defined]


def _png() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 60, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _answer(connection: socket.socket, wait: float = 5.0) -> tuple[bytes, bool, float]:
    """What the server sends on ``connection`` within ``wait`` s, whether it then closed it, and when (s)."""
    started, data = time.monotonic(), b""
    connection.settimeout(wait)
    try:
        while chunk := connection.recv(1 << 16):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        return data, False, time.monotonic() - started
    return data, True, time.monotonic() - started


# ------------------------------------------------------------------------------ an address it cannot use
def test_a_port_in_use_is_one_line_exit_2_and_leaves_no_folder(
    weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["serve", "--port", str(port), "--device", "cpu", "-w", str(weights_file)])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        f"scl-lle serve: error: cannot listen on 127.0.0.1:{port} (address already in use)"
    ]
    assert list(tmp_path.iterdir()) == []  # no scratch folder left behind


def test_the_server_class_fails_cleanly_on_a_port_in_use(
    weights_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ \(address already in use\)"):
            make_server("127.0.0.1", taken.getsockname()[1], weights=weights_file, device="cpu")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_ports_outside_0_to_65535_are_usage_errors(serve_stub: dict[str, object], port: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", port])
    assert exit_.value.code == 2
    assert not serve_stub


def test_ports_0_and_65535_are_accepted(serve_stub: dict[str, object]) -> None:
    for port in (0, 65535):
        assert main(["serve", "--port", str(port)]) == 0
        assert serve_stub["args"] == ("127.0.0.1", port)


# ---------------------------------------------------------------------------------------------- slow loris
def test_stalled_uploads_take_no_work_slot_and_are_cut_off_at_their_deadline(
    start: Callable[..., EnhanceServer],
) -> None:
    """Four connections that announce 100 kB and send 3 bytes: other uploads still get in (the stalled ones hold
    receiving places, not the ``max_queue`` slots), and each stalled one is answered 408 and closed at its
    deadline (1 s here) instead of holding on for the 120 s of a socket timeout."""
    app = start(max_queue=4, max_receiving=5)
    stalled = [socket.create_connection(app.server_address[:2]) for _ in range(4)]
    try:
        for connection in stalled:
            connection.sendall(STALLED)
        time.sleep(0.2)  # all four are being received
        status, _, body = http_request(app, "POST", "/api/enhance?name=b.png&mode=fast", _png())
        assert status == 200, body
        for connection in stalled:
            data, closed, seconds = _answer(connection)
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert b"Connection: close" in data and closed
            assert seconds < 4.0
    finally:
        for connection in stalled:
            connection.close()
    assert app.receiving.acquire(blocking=False)  # every receiving place was given back


def test_a_trickling_upload_cannot_hold_its_place(start: Callable[..., EnhanceServer]) -> None:
    """A byte every 0.2 s keeps every single read alive, but not the upload: 408 and closed within its deadline."""
    app = start(max_receiving=1)
    with socket.create_connection(app.server_address[:2]) as connection:
        connection.sendall(STALLED.replace(b"/api/enhance", b"/api/uploads"))
        started = time.monotonic()
        while time.monotonic() - started < 5.0 and not select.select([connection], [], [], 0.2)[0]:
            connection.sendall(b"x")  # until the server answers
        answered = time.monotonic() - started
        data, closed, _ = _answer(connection)
    assert data.startswith(b"HTTP/1.1 408 ") and closed, data
    assert answered < 2.0
    assert http_request(app, "POST", "/api/uploads?name=c.png&mode=fast", _png())[0] == 202  # the place is free


def test_a_client_still_sending_after_its_408_is_not_reset(start: Callable[..., EnhanceServer]) -> None:
    """After the deadline the server drops what still arrives for a moment (lingering), rather than closing on
    unread data, which resets the connection: the socket's reader, timed out, read nothing and it closed at once."""
    app = start()
    with socket.create_connection(app.server_address[:2]) as connection:
        connection.sendall(STALLED)
        assert select.select([connection], [], [], 5.0)[0]  # the 408 is there
        for _ in range(5):
            time.sleep(0.1)
            connection.sendall(b"x" * 100)  # a reset would make one of these fail
        data, closed, _ = _answer(connection)
    assert data.startswith(b"HTTP/1.1 408 ") and closed, data


def test_receiving_places_are_capped_and_refusals_close_the_connection(start: Callable[..., EnhanceServer]) -> None:
    """With ``max_receiving=1``, a second upload while one is being received gets 503 with Retry-After, closed."""
    app = start(max_receiving=1)
    with socket.create_connection(app.server_address[:2]) as first:
        first.sendall(STALLED)
        time.sleep(0.2)
        status, headers, _ = http_request(app, "POST", "/api/uploads?name=b.png&mode=fast", _png())
        assert status == 503
        assert headers["Retry-After"] == "5" and headers["Connection"] == "close"
        assert _answer(first)[0].startswith(b"HTTP/1.1 408 ")
    assert http_request(app, "POST", "/api/uploads?name=c.png&mode=fast", _png())[0] == 202


def test_the_receive_deadline_grows_with_the_length() -> None:
    limits = ServeLimits()
    assert limits.receive_seconds(0) == 10.0
    assert limits.receive_seconds(50 * 2**20) == pytest.approx(410.0)
    assert limits.receive_seconds(100_000) == pytest.approx(10.76, abs=0.01)


# ----------------------------------------------------------------------------------- clients that hang up
def test_a_client_that_hangs_up_early_prints_no_traceback(
    start: Callable[..., EnhanceServer], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A client that resets the connection mid-upload: the server's answer cannot be sent, and that is one debug
    line, not the standard library's "Exception occurred during processing of request" and a traceback."""
    app = start()
    done = threading.Event()
    finish = app.shutdown_request  # called once the request is over, after any handle_error

    def finished(request: socket.socket) -> None:
        finish(request)
        done.set()

    app.shutdown_request = finished  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="scl_lle.apps.serve")
    connection = socket.create_connection(app.server_address[:2])
    connection.sendall(STALLED)
    time.sleep(0.2)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    connection.close()
    assert done.wait(5)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    gone = [record for record in caplog.records if "went away" in record.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.DEBUG


def test_an_unexpected_error_is_one_error_line_with_the_traceback_only_at_debug(
    start: Callable[..., EnhanceServer], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = start()
    for level in (logging.INFO, logging.DEBUG):
        caplog.clear()
        caplog.set_level(level, logger="scl_lle.apps.serve")
        try:
            raise ValueError("boom")
        except ValueError:
            app.handle_error(None, ("127.0.0.1", 1234))
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert [record.getMessage() for record in errors] == ["127.0.0.1: request failed: ValueError: boom"]
        tracebacks = [record for record in caplog.records if "Traceback" in record.getMessage()]
        assert len(tracebacks) == (level == logging.DEBUG)
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- the limits
@pytest.mark.parametrize("flag", ["--max-video-seconds", "--max-upload-mb", "--receive-min-kb-per-second"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1"])
def test_limit_flags_refuse_nan_infinity_and_non_positive_numbers(
    serve_stub: dict[str, object], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", flag, value])
    assert exit_.value.code == 2
    assert not serve_stub


def test_limit_flags_take_fractions_and_the_receiving_cap(serve_stub: dict[str, object]) -> None:
    args = ["--max-video-seconds", "2.5", "--max-upload-mb", "0.5", "--max-receiving", "3"]
    assert main(["serve", *args, "--receive-min-kb-per-second", "16"]) == 0
    limits = serve_stub["limits"]
    assert isinstance(limits, ServeLimits)
    assert (limits.max_video_seconds, limits.max_upload_bytes, limits.max_receiving) == (2.5, 2**19, 3)
    assert limits.receive_seconds(16 * 1024 * 100) == pytest.approx(limits.receive_grace_seconds + 100)


@pytest.mark.parametrize(
    "field",
    [
        {"max_video_seconds": math.nan},
        {"max_video_seconds": 0.0},
        {"max_video_seconds": -1.0},
        {"max_upload_mb": math.inf},
        {"max_upload_mb": 1e-9},
        {"max_queue": 0},
        {"max_receiving": 0},
        {"max_pixels": -1},
        {"max_video_pixels": 0},
        {"kept_idle_minutes": math.nan},
        {"receive_grace_seconds": math.inf},
        {"receive_min_kb_per_second": 0.0},
        {"max_kept_bytes": -1},
        {"max_queue": 2.5},
    ],
    ids=lambda field: "-".join(f"{k}={v}" for k, v in field.items()),
)
def test_serve_limits_refuse_values_that_would_remove_a_limit(field: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(field))):
        ServeLimits(**field)  # type: ignore[arg-type]


def test_serve_limits_accept_no_pixel_limit() -> None:
    assert ServeLimits(max_pixels=None).max_pixels is None
    assert ServeLimits(max_pixels=0).max_pixels == 0
