"""``scl-lle export``: write the enhancer network as ONNX (:func:`scl_lle.apps.export.export_onnx`)."""

from __future__ import annotations

import argparse
import sys

from ..defaults import DEFAULT_OPSET, MIN_OPSET

__all__ = ["add_parser", "run"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` to ``commands`` (an argparse sub-parsers object); returns its parser (``run``: :func:`run`)."""
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
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Export, then print the written path; exit status 0, or 2 (no onnx package, bad weights or opset)."""
    from ..apps.export import export_onnx
    from ..models.hub import WeightsError

    try:
        path = export_onnx(args.weights, args.onnx, opset=args.opset, with_curves=args.with_curves)
    except (ImportError, WeightsError, ValueError, OSError) as error:
        print(f"scl-lle export: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
