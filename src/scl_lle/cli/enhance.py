"""``scl-lle enhance``: brighten photos and videos (files, folders, glob patterns, stdin/stdout), over
:func:`scl_lle.apps.batch.enhance`.

The parser is built from torch-free defaults; the batch app (and PyTorch) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from ..defaults import (
    AUTO_SCALE_SIDE,
    BACKENDS,
    DEFAULT_SMOOTHING,
    DEFAULT_TILE,
    DEFAULT_VIDEO_BATCH,
    FAST_SCALE,
    OUTPUT_FORMATS,
)
from ..io.formats import RAW_WHITE_BALANCES
from ..io.image import DEFAULT_MAX_PIXELS
from .options import exposure, non_negative_int, positive_int, quality, scale_setting, smoothing, verbosity

__all__ = ["add_parser", "run"]

EXAMPLES = """\
examples:
  scl-lle enhance night.jpg --output bright/
  scl-lle enhance night.png -o bright.jpg           (one file in, that file out; type from the ending)
  cat night.png | scl-lle enhance - -o - > bright.png
  scl-lle enhance photos/ --recursive --output bright/ --skip-existing
  scl-lle enhance night.jpg --output bright/ --exposure 0.35     (or off: the network's full curves)
  scl-lle enhance "scans/**/*.tif" --recursive --output out/ --weights my_model.safetensors --scale 4
  scl-lle enhance big_photos/ --output out/ --weights my_model.safetensors --fast --compile
  scl-lle enhance clip.mp4 --output out/ --fast        (video: needs pip install 'scl-lle[video]')
  torchrun --nproc-per-node 4 -m scl_lle enhance photos/ --output out/ --weights my_model.safetensors
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``enhance`` to ``commands`` (an argparse sub-parsers object); returns its parser (``run``: :func:`run`)."""
    parser = commands.add_parser(
        "enhance",
        help="enhance photos (files, folders, glob patterns)",
        description="Brighten low-light photos. The output folder mirrors the input tree; inputs are never "
        "written over; each output is written atomically; a bad file is reported and the rest still complete.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_inputs_and_model(parser)
    _add_engine(parser)
    _add_result(parser)
    _add_outputs(parser)
    _add_video_and_raw(parser)
    parser.set_defaults(run=run)
    return parser


def _add_inputs_and_model(parser: argparse.ArgumentParser) -> None:
    """INPUT..., ``-o``, ``-w`` and ``--device``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image or video files, folders or glob patterns; '-': one image read from stdin",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR|FILE|-",
        help="output folder (created if needed); with one input file, a file with an image ending (a video "
        "ending for a video): exactly that file, its type from the ending; '-': that one image to stdout",
    )
    parser.add_argument(
        "-w",
        "--weights",
        metavar="PATH",
        help="weights file (.safetensors, .pth, or .onnx from scl-lle export) or pretrained name; "
        "default: the embedded model",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: auto)",
    )


def _add_engine(parser: argparse.ArgumentParser) -> None:
    """How fast the engine runs: ``--scale``/``--fast``, ``--backend``, ``--threads``, ``--compile``."""
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument(
        "--scale",
        type=scale_setting,
        default=None,
        metavar="N|auto",
        help="estimate the curves on the image shrunk N times: faster, slightly smoother; auto: 8, or more on "
        f"large photos, so the network sees about {AUTO_SCALE_SIDE} pixels on the long side (default: 1)",
    )
    speed.add_argument(
        "--fast",
        action="store_true",
        help=f"speed preset: --scale {FAST_SCALE} --no-finish; much faster on large photos, smoother and "
        "grainier result (time and quality measured in docs/PERFORMANCE.md); faster still from 8 MP on with "
        "pip install 'scl-lle[fast]' (numba)",
    )
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="auto",
        help="where the curve-estimation network runs; onnxruntime: in float32 ONNX Runtime; onnxruntime-int8: "
        "in 8-bit integers there, on the CPU only, faster at full resolution and within two 8-bit levels of "
        "float32 on real photos; auto: onnxruntime-int8 on the CPU when ONNX Runtime is installed ('pip install onnx "
        "onnxruntime'; float32 for pictures of more than 8 bits, such as 16-bit PNG and RAW), else torch; speeds "
        "in docs/PERFORMANCE.md (default: auto)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads (default: PyTorch's, i.e. the cores or OMP_NUM_THREADS; torchrun sets 1 per process)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network and the fused curve pass: faster per image after a one-time "
        "compilation (tens of seconds; needs a C++ compiler on the CPU)",
    )


def _add_result(parser: argparse.ArgumentParser) -> None:
    """What the result looks like: ``--no-finish``, ``--exposure`` and ``--local-weighting``."""
    parser.add_argument(
        "--no-finish",
        dest="finish",
        action="store_false",
        help="apply the network's curves alone: no detail-preserving application, no black-point anchoring "
        "(the paper's output; see scl_lle.engine.finishing)",
    )
    parser.add_argument(
        "--exposure",
        type=exposure,
        default="auto",
        metavar="auto|off|E",
        help="how bright the result is: auto (a target chosen from each photo; well-exposed and over-exposed "
        "photos come back nearly unchanged), off (the network's curves at full strength, as in the paper), or E "
        "in (0, 1): that mean brightness; photos already at or above it are left unchanged. Videos hold it per "
        "shot (default: auto)",
    )
    parser.add_argument(
        "--local-weighting",
        action="store_true",
        help="at a level (--exposure auto or E), lift the dark regions of a photo more and the bright ones (skies, "
        "lamps) less, at the same mean brightness: more natural photos, less accurate segmentation of dark street "
        "scenes (docs/MODEL_CARD.md). Photos only: videos lift every region alike. Not with --exposure off",
    )


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    """Which files are read and how outputs are written: ``-r``, ``--format``, ``--quality``, existing outputs,
    ``--max-pixels`` and ``--tile``."""
    parser.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    parser.add_argument(
        "--format",
        choices=list(OUTPUT_FORMATS),
        default="same",
        help="output file type; 'same' keeps each input's type where it can be written, else PNG (camera RAW: "
        "16-bit PNG). JPEG, WebP and AVIF store 8 bits; PNG and TIFF keep 16 bits; HEIC stores 10 bits "
        "(needs pip install 'scl-lle[formats]') (default: same)",
    )
    parser.add_argument(
        "--quality",
        type=quality,
        default=95,
        metavar="Q",
        help="JPEG, WebP and AVIF quality 1-100 (default: 95)",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true", help="keep outputs that exist (resume a batch)")
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument(
        "--max-pixels",
        type=non_negative_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images with more pixels (decompression bombs); 0: no limit (default: {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--tile",
        type=positive_int,
        default=DEFAULT_TILE,
        metavar="PX",
        help=f"process images in tiles of PX x PX: memory grows with PX, not with the image; same result "
        f"(default: {DEFAULT_TILE})",
    )


def _add_video_and_raw(parser: argparse.ArgumentParser) -> None:
    """Options for videos (``--temporal-smoothing``, ``--video-batch``) and camera RAW (``--raw-*``)."""
    parser.add_argument(
        "--temporal-smoothing",
        type=smoothing,
        default=DEFAULT_SMOOTHING,
        metavar="S",
        help="videos: keep this share of the previous frames' curves where the picture did not change, so the "
        f"brightness does not flicker; 0 turns it off (default: {DEFAULT_SMOOTHING})",
    )
    parser.add_argument(
        "--video-batch",
        type=positive_int,
        default=DEFAULT_VIDEO_BATCH,
        metavar="N",
        help=f"videos: frames enhanced together on the device (default: {DEFAULT_VIDEO_BATCH})",
    )
    parser.add_argument(
        "--raw-half-size",
        action="store_true",
        help="camera RAW: decode at half the width and height (about 4x faster, a quarter of the memory)",
    )
    parser.add_argument(
        "--raw-white-balance",
        choices=list(RAW_WHITE_BALANCES),
        default="camera",
        help="camera RAW: the camera's white balance as shot, or one estimated from the picture (default: camera)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``scl-lle enhance`` with parsed ``args``; the exit status (0 ok, 1 some files failed, 2 usage or setup
    error). ``-`` (stdin) and ``-o -`` (stdout) go through files in a temporary folder (:mod:`.pipes`)."""
    from ..io.errors import one_line
    from .pipes import with_pipes

    if args.local_weighting and args.exposure == "off":
        print(
            "scl-lle enhance: error: --local-weighting acts at a level: use it with --exposure auto or E",
            file=sys.stderr,
        )
        return 2
    if "-" not in args.inputs and args.output != "-":
        return enhance_files(args, list(args.inputs), args.output)
    try:
        return with_pipes(args, enhance_files)
    except ValueError as error:
        print(f"scl-lle enhance: error: {one_line(str(error))}", file=sys.stderr)
        return 2


def enhance_files(args: argparse.Namespace, inputs: list[str], output: str) -> int:
    """Enhance ``inputs`` into ``output`` (files or folders) with the settings of ``args``; the exit status."""
    from PIL import Image

    from ..apps.batch import enhance
    from ..apps.batch_jobs import is_file_output
    from ..io.errors import one_line
    from ..models.hub import WeightsError

    Image.MAX_IMAGE_PIXELS = None  # --max-pixels is the limit that applies
    single = is_file_output(inputs, output)
    try:
        result = enhance(inputs, output, **_settings(args))
    except (ImportError, WeightsError, ValueError, RuntimeError) as error:
        print(f"scl-lle enhance: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    if verbosity(args) > -2:
        where = _where(args.output, output, single)
        print(f"scl-lle: {result.summary()}; {where}", file=sys.stderr)
    return 0 if result.ok else 1


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of :func:`scl_lle.apps.batch.enhance` that ``args`` set."""
    return {
        "weights": args.weights,
        "device": args.device,
        "scale": FAST_SCALE if args.fast else (args.scale or 1),
        "recursive": args.recursive,
        "format": args.format,
        "quality": args.quality,
        "skip_existing": args.skip_existing,
        "overwrite": args.overwrite,
        "max_pixels": args.max_pixels or None,
        "tile": args.tile,
        "progress": verbosity(args) >= 0,
        "backend": args.backend,
        "threads": args.threads,
        "compile": args.compile,
        "finish": args.finish and not args.fast,
        "exposure": args.exposure,
        "local_weighting": args.local_weighting,
        "temporal_smoothing": args.temporal_smoothing,
        "video_batch": args.video_batch,
        "raw_half_size": args.raw_half_size,
        "raw_white_balance": args.raw_white_balance,
    }


def _where(requested: str, output: str, single: bool) -> str:
    """Where the summary line says the outputs are: stdout (``-o -``), one file, or a folder."""
    from ..io.errors import show_path

    if requested == "-":
        return "output to stdout"
    return f"output {show_path(output)}" if single else f"outputs in {show_path(output)}"
