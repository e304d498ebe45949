"""The two ways a request or a job of the web app ends early: a refusal with its HTTP status, a cancellation."""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["Cancelled", "RequestError", "busy"]


class RequestError(Exception):
    """A request refused (or a job failed) with ``status``, a one-line message for the page and extra ``headers``."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Cancelled(Exception):
    """A job was replaced by a newer one of its upload, its upload was dropped, or the server is closing."""


def busy() -> RequestError:
    """503 with ``Retry-After``: every place to receive or to work on an upload is taken."""
    message = "the server is busy with other uploads; try again in a few seconds"
    return RequestError(HTTPStatus.SERVICE_UNAVAILABLE, message, {"Retry-After": "5"})
