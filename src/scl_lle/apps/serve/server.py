"""Starting and stopping the web app: :class:`EnhanceServer`, :func:`make_server` and :func:`serve`."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType

from ...models.dcenet import DCENet
from .handler import Handler
from .jobs import JobRunner
from .limits import ServeLimits
from .transport import is_loopback
from .uploads import UploadStore
from .work import Engine

__all__ = ["EnhanceServer", "ListenError", "make_server", "serve"]

_log = logging.getLogger(__name__)
# A client that hung up or stalled: no error of the server's (BrokenPipeError, ConnectionResetError, ...).
_CLIENT_GONE = (ConnectionError, TimeoutError)


class EnhanceServer(ThreadingHTTPServer):
    """The web app's HTTP server; ``url`` is where the page is. Close with ``shutdown()`` + ``server_close()``.

    ``uploads``: the kept uploads (:class:`~.uploads.UploadStore`); ``jobs``: the thread that runs their jobs
    (:class:`~.jobs.JobRunner`); ``slots``: the ``max_queue`` uploads and jobs in the works at once;
    ``receiving``: the ``max_receiving`` request bodies being received at once (before they take a slot). An
    address it cannot listen on raises :class:`ListenError` (and leaves nothing behind).
    """

    daemon_threads = True
    request_queue_size = 128  # connections the kernel holds while none is accepted (Python's default: 5)

    def __init__(self, address: tuple[str, int], engine: Engine, limits: ServeLimits) -> None:
        self.engine = engine
        self.limits = limits
        self.slots = threading.BoundedSemaphore(limits.max_queue)
        self.receiving = threading.BoundedSemaphore(limits.max_receiving)
        try:
            super().__init__(address, Handler)  # if binding fails, this calls server_close(): nothing else exists yet
        except OSError as error:
            raise ListenError(address, error) from error
        try:  # the folder and the job thread only once the address is ours
            self._scratch = tempfile.TemporaryDirectory(prefix="scl-lle-serve-")
            self.scratch = Path(self._scratch.name)
            self.uploads = UploadStore(self.scratch, limits)
            self.jobs = JobRunner(self.uploads, engine)
        except BaseException:
            self.server_close()
            raise

    @property
    def url(self) -> str:
        """``http://host:port/`` of the page."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        """Close the socket, stop the jobs and delete the temporary folder (kept uploads included); also safe on
        a server whose construction failed halfway."""
        super().server_close()
        if hasattr(self, "jobs"):
            self.jobs.close()
        if hasattr(self, "_scratch"):
            self._scratch.cleanup()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """A request that ended in an exception: a client that hung up or stalled is one debug line; anything
        else one error line (its traceback with ``-v``). Never the standard library's traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, _CLIENT_GONE):
            _log.debug("%s: the client went away (%s)", client_address[0], type(error).__name__)
            return
        _log.error("%s: request failed: %s: %s", client_address[0], type(error).__name__, error)
        if error is not None and _log.isEnabledFor(logging.DEBUG):
            _log.debug("the request's traceback: %s", "".join(traceback.format_exception(error)).rstrip())


class ListenError(OSError):
    """The server could not listen on its address (in use, not this machine's, not permitted): a one-line message."""

    def __init__(self, address: tuple[str, int], error: OSError) -> None:
        host, port = address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        reason = str(error.strerror or error)
        super().__init__(f"cannot listen on {host}:{port} ({reason[:1].lower()}{reason[1:]})")
        self.errno = error.errno


def make_server(
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    weights: str | os.PathLike[str] | DCENet | None = None,
    device: str = "auto",
    backend: str = "auto",
    limits: ServeLimits | None = None,
    local_weighting: bool = False,
) -> EnhanceServer:
    """Load the model and bind the web app's server (``port=0``: any free port); call ``serve_forever()``.
    ``device`` and ``backend`` as for :class:`~scl_lle.engine.enhancer.Enhancer`; ``local_weighting``: the setting
    of requests that leave it out (the page's starting choice)."""
    engine = Engine(weights, device, backend, local_weighting)
    engine.enhancer("full")  # fail now, not on the first upload, if the device cannot be used
    return EnhanceServer((host, port), engine, limits or ServeLimits())


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    weights: str | os.PathLike[str] | DCENet | None = None,
    device: str = "auto",
    backend: str = "auto",
    limits: ServeLimits | None = None,
    local_weighting: bool = False,
) -> None:
    """Run the web app until interrupted (Ctrl-C) or terminated (SIGTERM); either way the scratch folder goes.
    Arguments as for :func:`make_server`."""
    server = make_server(
        host, port, weights=weights, device=device, backend=backend, limits=limits, local_weighting=local_weighting
    )
    if not is_loopback(host):
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
