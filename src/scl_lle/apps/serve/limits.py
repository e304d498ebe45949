"""What the web app accepts and keeps: :class:`ServeLimits` (``scl-lle serve --max-upload-mb ...``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServeLimits"]


@dataclass(frozen=True)
class ServeLimits:
    """What one upload may be, and what the server keeps (the fields are ``scl-lle serve``'s flags)."""

    #: Largest upload accepted, in MB (``--max-upload-mb``).
    max_upload_mb: float = 50.0
    #: Largest image accepted, in pixels (``--max-pixels``); ``None`` or 0: no limit.
    max_pixels: int | None = 40_000_000
    max_video_pixels: int = 3840 * 2160
    max_video_seconds: float = 20.0
    #: Uploads and jobs in the works at once (received, waiting for the engine, enhanced); more get 503.
    max_queue: int = 4
    #: Uploads kept for re-rendering, besides those being worked on (the least recently used are dropped).
    max_kept_uploads: int = 8
    #: Bytes of kept uploads and their results, besides those being worked on.
    max_kept_bytes: int = 256 * 1024 * 1024
    #: A kept upload unused for this long is deleted.
    kept_idle_minutes: float = 15.0
    #: Longest side of a photo's preview (the picture the exposure control re-renders at once).
    preview_side: int = 1280
    #: Photos whose prepared preview (pixels and curve maps) is held in memory.
    max_previews: int = 2

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 2**20)
