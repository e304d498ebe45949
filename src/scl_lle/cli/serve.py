"""``scl-lle serve``: a local web page to enhance photos and short videos (:mod:`scl_lle.apps.serve`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ..apps.serve.limits import ServeLimits
from ..defaults import BACKENDS
from .options import non_negative_int, port, positive_int, positive_number

__all__ = ["add_parser", "run"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` to ``commands`` (an argparse sub-parsers object); returns its parser (``run``: :func:`run`)."""
    parser = commands.add_parser(
        "serve",
        help="a local web page to enhance photos and short videos",
        description="Serve a page where photos (and short videos) can be dropped, enhanced, compared before/after "
        "with a slider and downloaded. Listens on 127.0.0.1 (this computer only) unless --host says otherwise. "
        "Uploads are kept in a temporary folder (at most 8, 256 MB) for re-rendering at other settings, deleted "
        "after 15 idle minutes and on exit. An upload must arrive within 10 s plus 1 s per 128 KB (50 MB: about "
        "7 minutes); a slower one is answered 408 and its connection closed.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=port, default=7860, help="port, 0-65535 (default: 7860; 0: any free port)")
    parser.add_argument(
        "-w", "--weights", metavar="PATH", help="weights file or pretrained name; default: the embedded model"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="auto",
        help="where the curve-estimation network runs, as for scl-lle enhance --backend (default: auto)",
    )
    parser.add_argument(
        "--local-weighting",
        action="store_true",
        help="start the page's regions control at local weighting (as scl-lle enhance --local-weighting: at a level, "
        "dark regions lifted more and bright ones less; videos lift every region alike), also for requests that "
        "do not set local_weighting",
    )
    _add_limits(parser, ServeLimits())
    parser.set_defaults(run=run)
    return parser


# The limit flags: each is a ServeLimits field (the flag is the field's name with dashes), its type, metavar, help
# and how its default is printed. Every type refuses NaN, infinities and numbers <= 0 (--max-pixels: 0 is no limit).
_LIMIT_FLAGS = (
    ("max_upload_mb", positive_number, "MB", "largest upload accepted", "g"),
    ("max_pixels", non_negative_int, "N", "largest image accepted, in pixels; 0: no limit", ","),
    ("max_video_seconds", positive_number, "S", "longest video accepted", "g"),
    (
        "max_queue",
        positive_int,
        "N",
        "uploads in the works at once (one is enhanced at a time); more get 503 with Retry-After",
        "g",
    ),
    (
        "max_receiving",
        positive_int,
        "N",
        "uploads being received at once (before they take a place in the works); more get 503 with Retry-After",
        "g",
    ),
    (
        "receive_min_kb_per_second",
        positive_number,
        "KB/S",
        "slowest upload accepted: each must arrive within 10 s plus its length at this rate, else 408 "
        "(lower it for slow remote links)",
        "g",
    ),
)


def _add_limits(parser: argparse.ArgumentParser, defaults: ServeLimits) -> None:
    """``--max-upload-mb``, ``--max-pixels``, ``--max-video-seconds``, ``--max-queue``, ``--max-receiving`` and
    ``--receive-min-kb-per-second`` (:class:`ServeLimits`)."""
    for field, kind, metavar, text, shown in _LIMIT_FLAGS:
        default = getattr(defaults, field)
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=kind,
            default=default,
            metavar=metavar,
            help=f"{text} (default: {default:{shown}})",
        )


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (exit status 0); 2 when the server cannot start (weights, device, limits, an address it
    cannot listen on: one line, no traceback)."""
    from PIL import Image

    from ..apps.serve.server import serve
    from ..models.hub import WeightsError

    Image.MAX_IMAGE_PIXELS = None  # --max-pixels is the limit that applies, as for enhance (not Pillow's own)
    try:
        limits = ServeLimits(**{field: getattr(args, field) for field, *_ in _LIMIT_FLAGS})
        limits = replace(limits, max_pixels=limits.max_pixels or None)  # 0: no limit, as for enhance
        serve(
            args.host,
            args.port,
            weights=args.weights,
            device=args.device,
            backend=args.backend,
            limits=limits,
            local_weighting=args.local_weighting,
        )
    except KeyboardInterrupt:
        print("scl-lle serve: stopped", file=sys.stderr)
    except (WeightsError, ValueError, RuntimeError, OSError) as error:
        print(f"scl-lle serve: error: {error}", file=sys.stderr)
        return 2
    return 0
