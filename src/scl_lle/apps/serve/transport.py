"""The HTTP side of every answer: who may ask, how a body is received, and how an answer is sent.

- Requests (every endpoint) whose ``Host`` or ``Origin`` names another site are refused (DNS rebinding,
  cross-site posts) when the server is bound to a loopback address.
- An upload's length is checked before anything is read; chunked or ambiguous lengths are refused.
- A body is received while holding one of the server's ``max_receiving`` places (none free, or no work slot
  free at the moment: 503), before it takes a work slot, and within a deadline for the whole body
  (:meth:`~.limits.ServeLimits.receive_seconds`: 10 s plus the length at 128 KB/s by default): a stalled or
  trickling client is answered 408 and disconnected, so it can hold neither a work slot nor a receiving place
  for long.
- An answer given before the request body was read (a refusal) closes the connection, so that body can never be
  taken for a second request (request smuggling); the socket is half-closed and what the client still sends is
  dropped for a moment, bounded in bytes and time, so the answer is not lost to a reset. Every answer goes
  through :meth:`GuardedHandler._send` (or :meth:`~GuardedHandler._send_head` and
  :meth:`~GuardedHandler._end`), where that is done.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .errors import RequestError, busy

if TYPE_CHECKING:
    from .server import EnhanceServer

__all__ = ["JSON", "SLOT_WAIT", "TEXT", "GuardedHandler", "is_loopback"]

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
# After an early answer, what the client still sends is read and dropped (so that closing the socket does not
# reset the connection and lose the answer) up to this many bytes, for at most _LINGER_SECONDS in all and
# _LINGER_IDLE_SECONDS without data; then the connection is closed.
_DRAIN_BYTES = 256 * 2**20
_LINGER_SECONDS = 2.0
_LINGER_IDLE_SECONDS = 0.5
#: Seconds a request waits for a free work slot before its 503: longer than :meth:`GuardedHandler._receiving`
#: holds one to look whether any is free, so that look never turns another request away.
SLOT_WAIT = 0.05
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host in _LOOPBACK_NAMES:
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


class GuardedHandler(BaseHTTPRequestHandler):
    """A request handler that checks where requests come from, receives bodies within the limit and answers
    without leaving an unread body on a connection that stays open."""

    server: EnhanceServer
    timeout = 120  # seconds a client may stall between reads (a body has its own, whole deadline: _receive)
    protocol_version = "HTTP/1.1"
    _body_read = False  # whether this request's body has been read in full (set per request)

    def parse_request(self) -> bool:
        """Parse the request line and headers; no body of this request has been read yet."""
        self._body_read = False
        return super().parse_request()

    def _trusted_origin(self) -> bool:
        """Refuse requests addressed to another host name (DNS rebinding) or posted from another site."""
        host = self.headers.get("Host", "")
        bound = str(self.server.server_address[0])
        hostname = urlsplit(f"//{host}").hostname or ""
        if is_loopback(bound) and hostname not in _LOOPBACK_NAMES and not is_loopback(hostname):
            self._send_error(HTTPStatus.FORBIDDEN, "this server answers only to localhost addresses")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != host:
            self._send_error(HTTPStatus.FORBIDDEN, "cross-site requests are refused")
            return False
        return True

    # ------------------------------------------------------------------------------------------ receiving
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
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length")
        if length > limit:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the file is larger than the limit of {limit / 2**20:.0f} MB"
            )
        if length == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty upload")
        return length

    @contextlib.contextmanager
    def _receiving(self) -> Iterator[None]:
        """Hold one of the server's ``max_receiving`` places while a body comes in; :func:`~.errors.busy` if none
        is free, or if no work slot is free now (the upload would be refused once received). A look, not a
        reservation: with one slot free, up to ``max_receiving`` bodies may come in and all but one then get 503
        (a reservation taken before the body would let a stalled client hold the slot, the slow loris)."""
        slots, places = self.server.slots, self.server.receiving
        if not slots.acquire(blocking=False):
            raise busy()
        slots.release()  # only a look: the slot is taken once the body is in
        if not places.acquire(blocking=False):
            raise busy()
        try:
            yield
        finally:
            places.release()

    def _receive(self, target: Path, length: int) -> None:
        """Copy the request body, ``length`` bytes, into ``target``, all of it within the limits'
        :meth:`~.limits.ServeLimits.receive_seconds` (408 otherwise; the connection is then closed)."""
        seconds = self.server.limits.receive_seconds(length)
        deadline = time.monotonic() + seconds
        remaining = length
        try:
            with open(target, "wb") as handle:
                while remaining:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self.connection.settimeout(left)  # the whole body's deadline, not each read's
                    chunk = self.rfile.read1(min(remaining, 1 << 20))
                    if not chunk:
                        raise RequestError(HTTPStatus.BAD_REQUEST, "the upload ended early")
                    handle.write(chunk)
                    remaining -= len(chunk)
        except TimeoutError:
            message = f"the upload did not arrive within {seconds:.0f} s; the connection is closed"
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, message) from None
        finally:
            with contextlib.suppress(OSError):
                self.connection.settimeout(self.timeout)
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
                chunk = self.connection.recv(min(budget, 1 << 20))  # not rfile: after a timeout it reads nothing
                if not chunk:
                    break
                budget -= len(chunk)

    # ------------------------------------------------------------------------------------------- answering
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
        self.send_header("Content-Security-Policy", _CONTENT_SECURITY_POLICY)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        return pending

    def _send_error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, message.encode(), TEXT, headers)

    def _send_json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, json.dumps(value).encode(), JSON)

    def _send_busy(self) -> None:
        error = busy()
        self._send_error(error.status, str(error), error.headers)
