"""Command-line interface: ``scl-lle <command> ...`` (also ``python -m scl_lle``). Thin over the Python API.

The library reports through :mod:`logging` (loggers under ``scl_lle``) and :mod:`warnings`; the command line
prints both as one line each on stderr, between progress bars, at the verbosity of ``-q``/``-v``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from .. import __version__

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 1..100, got {text}")
    return value


def _smoothing(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1), got {text}")
    return value


def _exposure(text: str) -> str | float:
    from ..engine.exposure import parse_exposure

    try:
        return parse_exposure(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_enhance(commands: argparse._SubParsersAction) -> None:
    from ..apps.batch import OUTPUT_FORMATS
    from ..io.image import DEFAULT_MAX_PIXELS

    parser = commands.add_parser(
        "enhance",
        help="enhance photos (files, folders, glob patterns)",
        description="Brighten low-light photos. The output folder mirrors the input tree; inputs are never "
        "written over; each output is written atomically; a bad file is reported and the rest still complete.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    from ..engine.enhancer import BACKENDS, DEFAULT_TILE, FAST_SCALE

    speed = parser.add_mutually_exclusive_group()
    speed.add_argument(
        "--scale",
        type=_positive_int,
        default=None,
        metavar="N",
        help="estimate the curves on the image shrunk N times: faster, slightly smoother (default: 1)",
    )
    speed.add_argument(
        "--fast",
        action="store_true",
        help=f"speed preset: --scale {FAST_SCALE} --no-finish; much faster on large photos, smoother and "
        "grainier result (time and quality measured in docs/PERFORMANCE.md)",
    )
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="auto",
        help="where the curve-estimation network runs; auto: onnxruntime for float32 on the CPU when it is "
        "installed ('pip install onnx onnxruntime', about 2x faster there), else torch (default: auto)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
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
    parser.add_argument(
        "--no-finish",
        dest="finish",
        action="store_false",
        help="apply the network's curves alone: no detail-preserving application, no black-point anchoring "
        "(the paper's output; see scl_lle.engine.finishing)",
    )
    parser.add_argument(
        "--exposure",
        type=_exposure,
        default="auto",
        metavar="auto|off|E",
        help="how bright the result is: auto (a target chosen from each photo; well-exposed and over-exposed "
        "photos come back nearly unchanged), off (the network's curves at full strength, as in the paper), or E "
        "in (0, 1): that mean brightness; photos already at or above it are left unchanged. Videos hold it per "
        "shot (default: auto)",
    )
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
        type=_quality,
        default=95,
        metavar="Q",
        help="JPEG, WebP and AVIF quality 1-100 (default: 95)",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true", help="keep outputs that exist (resume a batch)")
    existing.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument(
        "--max-pixels",
        type=_non_negative_int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images with more pixels (decompression bombs); 0: no limit (default: {DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--tile",
        type=_positive_int,
        default=DEFAULT_TILE,
        metavar="PX",
        help=f"process images in tiles of PX x PX: memory grows with PX, not with the image; same result "
        f"(default: {DEFAULT_TILE})",
    )
    from ..apps.video import DEFAULT_SMOOTHING

    parser.add_argument(
        "--temporal-smoothing",
        type=_smoothing,
        default=DEFAULT_SMOOTHING,
        metavar="S",
        help="videos: keep this share of the previous frames' curves where the picture did not change, so the "
        f"brightness does not flicker; 0 turns it off (default: {DEFAULT_SMOOTHING})",
    )
    parser.add_argument(
        "--video-batch",
        type=_positive_int,
        default=8,
        metavar="N",
        help="videos: frames enhanced together on the device (default: 8)",
    )
    from ..io.formats import RAW_WHITE_BALANCES

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
    parser.set_defaults(run=_run_enhance)


#: Most bytes ``scl-lle enhance -`` reads from stdin.
MAX_STDIN_BYTES = 2**30
# File ending for what stdin holds, by :func:`scl_lle.io.image.sniff_container`; unknown: none (Pillow guesses).
_SNIFFED_ENDINGS = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "GIF": ".gif",
    "TIFF": ".tiff",
    "BMP": ".bmp",
    "WEBP": ".webp",
    "AVIF": ".avif",
    "HEIF": ".heic",
    "mp4": ".mp4",
    "matroska": ".mkv",
    "avi": ".avi",
}


def _spool_stdin(folder: Path) -> Path:
    """Copy stdin into ``folder/stdin.<ending>`` (ending from the bytes); at most :data:`MAX_STDIN_BYTES`."""
    from ..io.image import sniff_container

    spool = folder / "stdin"
    size = 0
    with open(spool, "wb") as handle:
        while chunk := sys.stdin.buffer.read(2**20):
            size += len(chunk)
            if size > MAX_STDIN_BYTES:
                raise ValueError(f"stdin holds more than {MAX_STDIN_BYTES // 2**20} MiB")
            handle.write(chunk)
    if size == 0:
        raise ValueError("stdin is empty; give an image on it, or a file instead of '-'")
    return spool.rename(spool.with_suffix(_SNIFFED_ENDINGS.get(sniff_container(spool) or "", "")))


def _stdout_file(source: Path, format: str, folder: Path) -> Path:
    """Where the one output goes before it is copied to stdout: ``--format``'s ending, else the input's."""
    from ..apps.batch import OUTPUT_FORMATS
    from ..apps.video import VIDEO_EXTENSIONS
    from ..io.image import WRITABLE_EXTENSIONS

    suffix = source.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        suffix = OUTPUT_FORMATS[format] or (suffix if suffix in WRITABLE_EXTENSIONS else ".png")
    return folder / f"stdout{suffix}"


def _run_enhance(args: argparse.Namespace) -> int:
    from ..io.image import one_line

    if "-" not in args.inputs and args.output != "-":
        return _enhance_files(args, list(args.inputs), args.output)
    try:  # stdin and stdout go through files in a temporary folder
        with tempfile.TemporaryDirectory(prefix="scl-lle-") as folder:
            return _enhance_with_pipes(args, Path(folder))
    except ValueError as error:
        print(f"scl-lle enhance: error: {one_line(str(error))}", file=sys.stderr)
        return 2


def _enhance_with_pipes(args: argparse.Namespace, folder: Path) -> int:
    """``_run_enhance`` with ``-`` (stdin) and ``-o -`` (stdout) mapped to files in the temporary ``folder``."""
    inputs, output = list(args.inputs), args.output
    if "-" in inputs:
        if len(inputs) != 1:
            raise ValueError("'-' (stdin) must be the only input")
        inputs = [os.fspath(_spool_stdin(folder))]
    if output == "-":
        if len(inputs) != 1 or not Path(inputs[0]).is_file():
            raise ValueError("-o - (stdout) takes exactly one input file")
        output = os.fspath(_stdout_file(Path(inputs[0]), args.format, folder))
    status = _enhance_files(args, inputs, output)
    if args.output == "-" and Path(output).is_file():
        with open(output, "rb") as handle:
            shutil.copyfileobj(handle, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return status


def _enhance_files(args: argparse.Namespace, inputs: list[str], output: str) -> int:
    from PIL import Image

    from ..apps.batch import enhance, is_file_output
    from ..engine.enhancer import FAST_SCALE
    from ..io.image import one_line, show_path
    from ..models.hub import WeightsError

    Image.MAX_IMAGE_PIXELS = None  # --max-pixels is the limit that applies
    single = is_file_output(inputs, output)
    try:
        result = enhance(
            inputs,
            output,
            weights=args.weights,
            device=args.device,
            scale=FAST_SCALE if args.fast else (args.scale or 1),
            recursive=args.recursive,
            format=args.format,
            quality=args.quality,
            skip_existing=args.skip_existing,
            overwrite=args.overwrite,
            max_pixels=args.max_pixels or None,
            tile_size=args.tile,
            progress=_verbosity(args) >= 0,
            backend=args.backend,
            threads=args.threads,
            compile=args.compile,
            finish=args.finish and not args.fast,
            exposure=args.exposure,
            temporal_smoothing=args.temporal_smoothing,
            video_batch=args.video_batch,
            raw_half_size=args.raw_half_size,
            raw_white_balance=args.raw_white_balance,
        )
    except (ImportError, WeightsError, ValueError, RuntimeError) as error:
        print(f"scl-lle enhance: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    if args.output == "-":
        where = "output to stdout"
    elif single:
        where = f"output {show_path(output)}"
    else:
        where = f"outputs in {show_path(output)}"
    if _verbosity(args) > -2:
        print(f"scl-lle: {result.summary()}; {where}", file=sys.stderr)
    return 0 if result.ok else 1


def _add_serve(commands: argparse._SubParsersAction) -> None:
    from ..apps.serve.server import ServeLimits

    defaults = ServeLimits()
    parser = commands.add_parser(
        "serve",
        help="a local web page to enhance photos and short videos",
        description="Serve a page where photos (and short videos) can be dropped, enhanced, compared before/after "
        "with a slider and downloaded. Listens on 127.0.0.1 (this computer only) unless --host says otherwise. "
        "Uploads are kept in a temporary folder (at most 8, 256 MB) for re-rendering at other settings, deleted "
        "after 15 idle minutes and on exit.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0: any free port)")
    parser.add_argument(
        "-w", "--weights", metavar="PATH", help="weights file or pretrained name; default: the embedded model"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_int,
        default=defaults.max_upload_bytes // 2**20,
        metavar="MB",
        help=f"largest upload accepted (default: {defaults.max_upload_bytes // 2**20})",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=defaults.max_pixels,
        metavar="N",
        help=f"largest image accepted, in pixels (default: {defaults.max_pixels:,})",
    )
    parser.add_argument(
        "--max-video-seconds",
        type=float,
        default=defaults.max_video_seconds,
        metavar="S",
        help=f"longest video accepted (default: {defaults.max_video_seconds:g})",
    )
    parser.add_argument(
        "--max-queue",
        type=_positive_int,
        default=defaults.max_queue,
        metavar="N",
        help=f"uploads in the works at once (one is enhanced at a time); more get 503 with Retry-After "
        f"(default: {defaults.max_queue})",
    )
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from ..apps.serve.server import ServeLimits, serve
    from ..models.hub import WeightsError

    limits = ServeLimits(
        max_upload_bytes=args.max_upload_mb * 2**20,
        max_pixels=args.max_pixels,
        max_video_seconds=args.max_video_seconds,
        max_queue=args.max_queue,
    )
    try:
        serve(args.host, args.port, weights=args.weights, device=args.device, limits=limits)
    except KeyboardInterrupt:
        print("scl-lle serve: stopped", file=sys.stderr)
    except (WeightsError, ValueError, RuntimeError, OSError) as error:
        print(f"scl-lle serve: error: {error}", file=sys.stderr)
        return 2
    return 0


def _add_export(commands: argparse._SubParsersAction) -> None:
    from ..apps.export import DEFAULT_OPSET, MIN_OPSET

    parser = commands.add_parser(
        "export",
        help="export the enhancer network to ONNX",
        description="Write DCE-Net as ONNX with dynamic batch, height and width. By default the network alone "
        "(image -> 24 curve maps), which 'scl-lle enhance --weights FILE.onnx' runs in ONNX Runtime with "
        "tiling and --scale; --with-curves writes network + curves (image -> enhanced image, full resolution, "
        "the curves alone as with enhance --no-finish). "
        "Needs the 'onnx' package.",
    )
    parser.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    parser.add_argument(
        "-w",
        "--weights",
        metavar="PATH",
        help="weights file (.safetensors or .pth) or pretrained name; default: the embedded model",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset, >= {MIN_OPSET} (default: 17)"
    )
    parser.add_argument(
        "--with-curves", action="store_true", help="include the curves: output the enhanced image, not the maps"
    )
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ..apps.export import export_onnx
    from ..models.hub import WeightsError

    try:
        path = export_onnx(args.weights, args.onnx, opset=args.opset, include_curves=args.with_curves)
    except (ImportError, WeightsError, ValueError, OSError) as error:
        print(f"scl-lle export: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


TRAIN_EXAMPLES = """\
examples:
  SCL_LLE_SHARED=../shared scl-lle train --config configs/scl_lle.yaml
  scl-lle train --config configs/scl_lle.yaml steps=5000 optim.lr=3e-4 name=lr3e-4
  scl-lle train --config configs/scl_lle.yaml --resume
  torchrun --nproc-per-node 2 -m scl_lle train --config configs/scl_lle.yaml
"""


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train an enhancer from a YAML experiment file",
        description="Train DCE-Net with the SCL-LLE objective. Outputs (checkpoints, logs, pictures, final "
        "weights) go to <output_root>/<name>/ (default runs/<name>/). Under torchrun it trains data-parallel.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="YAML", help="experiment file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings to override, e.g. optim.lr=3e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run")
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ..train.config import ConfigError
    from ..train.trainer import train

    try:
        train(args.config, args.overrides, resume=args.resume, progress=_verbosity(args) >= 0)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"scl-lle train: error: {error}", file=sys.stderr)
        return 2
    return 0


def _add_assets(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "assets",
        help="list or fetch external assets (pretrained VGG16 for training)",
        description="External assets that scl-lle does not ship. 'fetch' downloads one from the package index, "
        "checks its sha256 and converts it once into the cache folder.",
    )
    actions = parser.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list known assets and where they are found")
    listing.set_defaults(run=_run_assets_list)
    fetch = actions.add_parser("fetch", help="download and convert an asset into the cache")
    fetch.add_argument("name", help="asset name (see 'scl-lle assets list')")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the cache has it")
    fetch.set_defaults(run=_run_assets_fetch)


def _run_assets_list(args: argparse.Namespace) -> int:
    from ..models.assets import list_assets, locate_asset

    for name, description in list_assets().items():
        try:
            path, source = locate_asset(name)
            where = f"found ({source}): {path}"
        except FileNotFoundError:
            where = f"not found: run 'scl-lle assets fetch {name}'"
        print(f"{name}: {description}\n    {where}")
    return 0


def _run_assets_fetch(args: argparse.Namespace) -> int:
    from ..models.assets import fetch_asset

    try:
        path = fetch_asset(args.name, force=args.force)
    except (KeyError, RuntimeError, OSError) as error:
        print(f"scl-lle assets fetch: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``scl-lle`` argument parser with all sub-commands."""
    parser = argparse.ArgumentParser(
        prog="scl-lle",
        description="Low-light image enhancement with Semantically Contrastive Learning (SCL-LLE).",
    )
    parser.add_argument("--version", action="version", version=f"scl-lle {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True)
    _add_enhance(commands)
    _add_serve(commands)
    _add_export(commands)
    _add_train(commands)
    from .evaluate import add_parser as add_evaluate

    add_evaluate(commands)
    _add_assets(commands)
    _add_completion(commands)
    for command in _leaf_parsers(commands):
        if "--quiet" not in command._option_string_actions:  # cli.evaluate adds them itself
            add_verbosity(command)
        for action in command._actions:
            if action.dest in _PATH_ARGUMENTS:
                action.complete = _FILE_COMPLETION  # type: ignore[attr-defined]  # read by shtab
    return parser


# Arguments that name files or folders, completed as paths by the shell (shtab's FILE completion).
_PATH_ARGUMENTS = {"inputs", "output", "weights", "onnx", "config", "registry"}
_FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}


def _add_completion(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for scl-lle's commands, options, choices and file arguments. "
        "bash: add 'source <(scl-lle completion bash)' to ~/.bashrc. zsh: write it as _scl-lle into a folder "
        "on $fpath, e.g. 'scl-lle completion zsh > ~/.zfunc/_scl-lle' with 'fpath+=~/.zfunc' before compinit.",
    )
    parser.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    parser.set_defaults(run=_run_completion)


def _run_completion(args: argparse.Namespace) -> int:
    import shtab

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _leaf_parsers(commands: argparse._SubParsersAction) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run something: each sub-command, or each action of one with actions (assets)."""
    for command in dict.fromkeys(commands.choices.values()):
        actions = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if actions:
            yield from _leaf_parsers(actions[0])
        else:
            yield command


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q``/``-qq`` and ``-v`` on a command's parser (read by :func:`_verbosity`)."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="less output: -q no progress bars and no notes (warnings, errors and the final summary stay); "
        "-qq errors only",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output: the engine's settings (device, backend, tile) and a line per file",
    )


def _verbosity(args: argparse.Namespace) -> int:
    """-2 (errors only), -1 (no progress bars, no notes), 0 (default) or 1 (details)."""
    return max(-2, min(1, getattr(args, "verbose", 0) - getattr(args, "quiet", 0)))


#: Logging level of the ``scl_lle`` loggers at each verbosity.
_LEVELS = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


class _ConsoleHandler(logging.Handler):
    """Each record as one line on stderr (``scl-lle: note``, ``warning: ...``, ``error: ...``, ``debug: ...``),
    written through tqdm so that a progress bar on the terminal stays whole."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        from ..io.image import one_line

        try:
            message = one_line(record.getMessage())
            prefix = "scl-lle" if record.levelno == logging.INFO else record.levelname.lower()
            message = f"{prefix}: {message}"
            tqdm.write(message, file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _console(verbosity: int) -> Iterator[None]:
    """While a command runs: the ``scl_lle`` loggers print at ``verbosity`` (see :func:`_verbosity`), and Python
    warnings (the library's and its dependencies') become one ``warning:`` line each instead of a source dump."""
    logger = logging.getLogger("scl_lle")
    saved = logger.level, logger.propagate
    handler = _ConsoleHandler()
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[verbosity])
    logger.propagate = False

    def show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
        logger.warning("%s", message)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


_INTERRUPTED = "scl-lle: interrupted; outputs written so far are complete"
#: How to carry on after an interruption, per command.
_RESUME_HINTS = {"enhance": " (resume with --skip-existing)", "train": " (continue with --resume)"}


class _Interrupt:
    """SIGINT handler that remembers it fired: a Ctrl-C that lands inside a C extension's import can surface as
    another exception (seen in torch's), which must still end as an interruption, not a traceback."""

    fired = False

    def __call__(self, signum: int, frame: object) -> None:
        self.fired = True
        raise KeyboardInterrupt


def _exit_at_once(signum: int, frame: object) -> None:
    """SIGINT while the parser is built (PyTorch and the rest are imported): nothing to clean up yet, and an
    exception raised inside an extension's import can end the process by the signal despite being caught."""
    os.write(2, f"{_INTERRUPTED}\n".encode())
    os._exit(130)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some files failed, 2 usage or setup error,
    130 interrupted: Ctrl-C from the moment this runs, sub-command imports and model loading included)."""
    interrupt = _Interrupt()
    hint = ""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _exit_at_once) if main_thread else None
    try:
        parser = build_parser()
        if main_thread:  # from here a Ctrl-C unwinds, so temporary files are removed on the way out
            signal.signal(signal.SIGINT, interrupt)
        args = parser.parse_args(argv)
        hint = _RESUME_HINTS.get(getattr(args, "command", ""), "")
        with _console(_verbosity(args)):
            return args.run(args)
    except KeyboardInterrupt:
        return _interrupted(hint)
    except Exception:
        if interrupt.fired:
            return _interrupted(hint)
        raise
    finally:
        if main_thread:  # after an interruption, a second Ctrl-C while exiting is ignored
            signal.signal(signal.SIGINT, signal.SIG_IGN if interrupt.fired else previous)


def _interrupted(hint: str = "") -> int:
    print(_INTERRUPTED + hint, file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
