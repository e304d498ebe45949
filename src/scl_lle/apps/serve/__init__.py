"""A local web app: ``scl-lle serve`` opens a page to drop photos (and short videos) and get them enhanced.

Only the standard library's :mod:`http.server` is used (a local single-user tool needs no extra dependencies);
the page is ``static/index.html`` in this package. The modules, one concern each:

- :mod:`.limits`: :class:`ServeLimits`, what an upload may be and what the server keeps;
- :mod:`.transport`: who may ask (``Host`` / ``Origin``), receiving bodies, answers that close the connection;
- :mod:`.handler`: the endpoints; :mod:`.server`: :func:`serve`, :func:`make_server`, :class:`EnhanceServer`;
- :mod:`.uploads`: kept uploads and their bounds; :mod:`.jobs`: jobs, their progress and the thread that runs
  them; :mod:`.work`: the engine, one enhancement at a time; :mod:`.previews`: a photo's quick preview.

How the page works: it uploads the file once (``POST /api/uploads``, the upload's percentage shown as it goes)
and the server keeps it. Every upload and every re-render is a *job* with real progress: the page polls
``GET /api/jobs/<id>`` (``{"state": "queued|running|done|failed", "done": n, "total": N, "unit":
"steps|tiles|frames", "seconds_left": s, "error": ...}``) and fetches ``GET /api/jobs/<id>/result`` when it is
done. ``GET /api/stats`` counts uploads received, jobs started and previews re-rendered.

- **Photos: a preview you can adjust at once, a full-size download rendered on demand.** The first job decodes the
  photo, keeps a preview-sized copy (long side at most ``ServeLimits.preview_side``, 1280 px) and estimates its
  curve maps once. Changing the exposure (auto, off, the brightness slider) or the regions (lifted alike, or local
  weighting) then only solves the gain and applies the kept curves (and the finishing) to that preview:
  ``GET /api/uploads/<id>/preview`` answers within a fraction of a second, with no upload and no network pass. The
  download is rendered from the kept upload at full resolution with the settings of that moment
  (``POST /api/uploads/<id>/render?size=full``, a job with a tile count). For photos larger than the preview, its
  curves are estimated on the reduced picture, so it can differ from the download in fine local detail (the
  brightness target is the same). Changing the speed mode estimates the preview's curves for that mode once (a job).
- **Videos** are enhanced whole (frames done / total, time left); a new exposure or speed re-renders the kept
  upload (``POST /api/uploads/<id>/render``) without uploading it again.

``POST /api/enhance?exposure=auto|off|E&mode=full|fast&local_weighting=0|1&name=FILE`` remains for scripts: the
body is the file, the response the enhanced file, and nothing is kept once it is answered. Every request that
leaves a setting out gets the server's default (``GET /api/defaults``; ``local_weighting`` from ``scl-lle serve
--local-weighting``).

Safety: binds to the loopback address by default and refuses requests that name another site; uploads are
limited in bytes (checked before reading), images in pixels (checked from the header before decoding) and
videos in frame size and duration; every upload and result lives in a fresh folder inside the server's own
temporary folder, the uploaded file name used only for its ending (a "video" whose first bytes are an image is
refused) and for the download name, never as a path; no other file is ever served; a refusal given before the
body was read closes the connection. A body must arrive, in all, within ``ServeLimits.receive_seconds`` (10 s
plus its length at 128 KB/s), else 408 and the connection is closed; at most ``max_receiving`` bodies are being
received at once, and only a body received in full takes one of the ``max_queue`` places in the works (uploads
and jobs); more are answered 503 with ``Retry-After``. One job runs at a time, and pictures are decoded only once
the engine is theirs. A client that hangs up early costs one debug line (``-v``), no traceback.

"Exposure" is the enhancer's ``exposure`` (:mod:`scl_lle.engine.exposure`), the same setting as ``--exposure``:
``auto`` (a target chosen from the photo), ``off`` (the network's curves at full strength) or a target mean
brightness E in (0, 1), reached by scaling the curve maps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["MODES", "EnhanceServer", "ServeLimits", "make_server", "serve"]

#: Public name -> its module, imported on first use: ``scl-lle serve --help`` reads :mod:`.limits` without PyTorch.
_EXPORTS = {
    "MODES": "work",
    "EnhanceServer": "server",
    "ServeLimits": "limits",
    "make_server": "server",
    "serve": "server",
}

if TYPE_CHECKING:
    from .limits import ServeLimits
    from .server import EnhanceServer, make_server, serve
    from .work import MODES


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
