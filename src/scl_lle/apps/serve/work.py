"""The server's side of the engine: one network, one enhancement at a time, and the file work it does.

Every picture is decoded here (:func:`enhance_image_file`, :func:`decode_preview`), only while the caller holds
:meth:`Engine.turn`: so pictures waiting for the engine hold no pixels, and the memory an enhancement freed is
handed back to the system afterwards (glibc's ``malloc_trim``).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...defaults import FAST_SCALE
from ...engine.enhancer import Enhancer
from ...engine.exposure import Exposure
from ...engine.threads import cpu_threads
from ...engine.tiling import Progress
from ...io.image import read_image, write_image
from ...io.sniff import image_named_as_video
from ...models.dcenet import DCENet
from ...models.hub import load_dcenet
from ..video import enhance_video, is_video_path
from .errors import RequestError
from .limits import ServeLimits
from .previews import preview_pixels

__all__ = [
    "MODES",
    "Engine",
    "Settings",
    "check_container",
    "decode_preview",
    "enhance_image_file",
    "enhance_video_file",
    "enhanced_name",
    "release_memory",
    "result_file",
    "safe_stem",
]

#: Speed modes of the page: the ``scale`` at which curves are estimated.
MODES = {"full": 1, "fast": FAST_SCALE}
# Results the browser can show: JPEG and WebP stay as they are, everything else becomes PNG (videos: MP4).
_IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".png": "image/png"}
_VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm"}


class Settings(NamedTuple):
    """What a request asks for: the speed ``mode`` (a key of :data:`MODES`), the ``exposure`` and
    ``local_weighting`` (as for :class:`~scl_lle.engine.enhancer.Enhancer`)."""

    mode: str
    exposure: Exposure
    local_weighting: bool


class Engine:
    """One network, an enhancer per speed mode and local weighting (made on first use), and a lock: one
    enhancement at a time. ``local_weighting``: the setting of requests that do not give one (``scl-lle serve
    --local-weighting``)."""

    def __init__(
        self,
        weights: str | os.PathLike[str] | DCENet | None,
        device: str,
        backend: str = "auto",
        local_weighting: bool = False,
    ) -> None:
        self.model = weights if isinstance(weights, DCENet) else load_dcenet(weights)
        self.device = device
        self.backend = backend
        self.local_weighting = local_weighting
        # Fixed now: a request thread started while a job holds PyTorch at one thread finds one (engine/threads)
        self.threads = cpu_threads()
        self.lock = threading.Lock()
        self._enhancers: dict[tuple[str, bool], Enhancer] = {}
        self._making = threading.Lock()  # enhancers are made by the job thread and by requests

    def enhancer(self, mode: str, local_weighting: bool | None = None) -> Enhancer:
        """The enhancer of speed mode ``mode`` (a key of :data:`MODES`) and ``local_weighting`` (``None``: the
        engine's)."""
        local = self.local_weighting if local_weighting is None else local_weighting
        with self._making:
            if (mode, local) in self._enhancers:
                return self._enhancers[mode, local]
            other = self._enhancers.get((mode, not local))
            if other is not None:  # the same network, sessions and worker threads: only the setting differs
                enhancer = copy.copy(other)
                enhancer.local_weighting = local
            else:
                enhancer = Enhancer(
                    self.model,
                    device=self.device,
                    scale=MODES[mode],
                    finish=mode == "full",
                    backend=self.backend,
                    threads=self.threads,
                    local_weighting=local,
                )
            self._enhancers[mode, local] = enhancer
            return enhancer

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the engine (decoded pixels exist only while it is the caller's); free memory on leaving."""
        with self.lock:
            try:
                yield
            finally:
                release_memory()


def result_file(folder: Path, source: Path, stem: str) -> tuple[Path, str]:
    """Where the result of the upload ``source`` goes (``folder/stem.ending``), and its content type: the
    upload's ending where the browser can show it, else PNG (a video: MP4)."""
    types, fallback = (_VIDEO_TYPES, ".mp4") if is_video_path(source) else (_IMAGE_TYPES, ".png")
    ending = source.suffix.lower() if source.suffix.lower() in types else fallback
    return folder / f"{stem}{ending}", types[ending]


def enhance_image_file(
    source: Path,
    target: Path,
    enhancer: Enhancer,
    exposure: Exposure,
    max_pixels: int,
    progress: Progress | None = None,
    stage: Callable[[str], None] = lambda name: None,
) -> None:
    """Decode, enhance and encode one picture (``stage`` is told each step); its pixels are freed on return."""
    stage("decoding")
    picture = read_image(source, max_pixels=max_pixels)
    stage("enhancing")
    enhanced = enhancer.enhance_picture(picture, exposure, progress)
    del picture
    stage("encoding")
    write_image(target, enhanced)


def enhance_video_file(
    source: Path,
    target: Path,
    enhancer: Enhancer,
    exposure: Exposure,
    limits: ServeLimits,
    on_frames: Callable[[int, int | None], None] | None = None,
) -> None:
    """Enhance a video upload within the frame size and duration ``limits``."""
    enhance_video(
        source,
        target,
        enhancer=enhancer,
        exposure=exposure,
        max_pixels=limits.max_video_pixels,
        max_seconds=limits.max_video_seconds,
        progress=False,
        on_frames=on_frames,
        overwrite=True,
    )


def decode_preview(source: Path, limits: ServeLimits) -> np.ndarray:
    """A photo's preview-sized pixels, 8-bit RGB ``(h, w, 3)`` (the decoded photo is freed on return)."""
    return preview_pixels(read_image(source, max_pixels=limits.max_pixels).pixels, limits.preview_side)


def check_container(upload: Path) -> None:
    """Refuse a video upload whose bytes are an image (it would come back as a one-frame video)."""
    problem = image_named_as_video(upload)
    if problem is not None:
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"not a video: {problem}")


def safe_stem(name: str) -> str:
    """The stem of an uploaded file name, reduced to characters safe in a download name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:80].strip("._")
    return stem or "image"


def enhanced_name(name: str, result: Path) -> str:
    """The download name of the enhanced ``name``, with the ending of the ``result`` file."""
    return f"{safe_stem(name)}-enhanced{result.suffix}"


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc; musl and others have no such library or function
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def release_memory() -> None:
    """Hand the heap memory freed by an enhancement back to the system (glibc only; elsewhere nothing)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
