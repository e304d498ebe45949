"""The two ways a request or a job of the web app ends early: a refusal with its HTTP status, a cancellation."""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["Cancelled", "RequestError"]


class RequestError(Exception):
    """A request refused (or a job failed) with ``status`` and a one-line message for the page."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """A job was replaced by a newer one of its upload, its upload was dropped, or the server is closing."""
