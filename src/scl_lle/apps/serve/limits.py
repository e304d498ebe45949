"""What the web app accepts and keeps: :class:`ServeLimits` (``scl-lle serve --max-upload-mb ...``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["ServeLimits"]

# Fields that must be finite numbers > 0, and whole numbers >= 1; the others are whole numbers >= 0 (max_pixels
# may also be None; None or 0 means no limit).
_POSITIVE = {"max_upload_mb", "max_video_seconds", "kept_idle_minutes", "receive_grace_seconds"}
_POSITIVE |= {"receive_min_kb_per_second"}
_AT_LEAST_ONE = {"max_video_pixels", "max_queue", "max_receiving", "preview_side"}


@dataclass(frozen=True)
class ServeLimits:
    """What one upload may be, and what the server keeps (the fields are ``scl-lle serve``'s flags).

    Every field is checked when the limits are made (:class:`ValueError`): a NaN, an infinity, zero or a negative
    number would remove a limit (``duration > nan`` is never true) or refuse everything.
    """

    #: Largest upload accepted, in MB (``--max-upload-mb``).
    max_upload_mb: float = 50.0
    #: Largest image accepted, in pixels (``--max-pixels``); ``None`` or 0: no limit.
    max_pixels: int | None = 40_000_000
    max_video_pixels: int = 3840 * 2160
    max_video_seconds: float = 20.0
    #: Uploads and jobs in the works at once (received in full, waiting for the engine, enhanced); more get 503.
    max_queue: int = 4
    #: Uploads being received at once (``--max-receiving``); more get 503. A body is received before it takes
    #: one of the ``max_queue`` places, so at most ``max_receiving`` bodies are on their way to the scratch folder
    #: (each within ``max_upload_mb`` and :meth:`receive_seconds`) besides the ``max_queue`` in the works.
    max_receiving: int = 4
    #: An upload must arrive, in all, within ``receive_grace_seconds`` plus its length at
    #: ``receive_min_kb_per_second`` KB/s (:meth:`receive_seconds`; 100 KB: 10.8 s, 50 MB: 410 s); a slower
    #: client (a stalled or trickling upload) is answered 408 and disconnected, and its place is free again.
    receive_grace_seconds: float = 10.0
    receive_min_kb_per_second: float = 128.0
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

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in _POSITIVE:
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                valid = number and math.isfinite(value) and value > 0
                wanted = "a finite number > 0"
            else:
                least = 1 if field.name in _AT_LEAST_ONE else 0
                valid = (value is None and field.name == "max_pixels") or (
                    isinstance(value, int) and not isinstance(value, bool) and value >= least
                )
                wanted = f"a whole number >= {least}"
            if not valid:
                raise ValueError(f"ServeLimits.{field.name} must be {wanted}, got {value!r}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"ServeLimits.max_upload_mb is less than a byte: {self.max_upload_mb!r}")

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * 2**20)

    def receive_seconds(self, length: int) -> float:
        """The time an upload of ``length`` bytes may take to arrive, in all (not per read)."""
        return self.receive_grace_seconds + length / (self.receive_min_kb_per_second * 1024)
