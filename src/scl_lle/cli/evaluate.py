"""``scl-lle evaluate``: compare enhancement methods on evaluation sets (:mod:`scl_lle.evaluation`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import add_verbosity, positive_int

__all__ = ["add_parser", "run"]

_EVAL_EXAMPLES = """\
examples:
  export SCL_LLE_SHARED=../shared
  scl-lle evaluate --methods identity,gamma,clahe,histeq,lime,scl-lle-release,zero-dce \\
      --datasets lime,dicm,lol15,npe,fivek,camvid-dark,camvid-dusk --output eval/ --device cpu
  scl-lle evaluate --methods identity,dcenet:runs/exp/model.safetensors --datasets lol15 --output eval/ \\
      --max-images 5
  scl-lle evaluate --methods mine=runs/exp/model.safetensors,zero-dce --datasets lime --output eval/

methods: identity, gamma, histeq, clahe, lime; gamma:G (fixed x^(1/G)); clahe:CLIP; dcenet:PATH or a
.pth/.safetensors path; names under 'methods:' of the registry (scl-lle-release, zero-dce); scl-lle (the
packaged default model). Around a DCE-Net method: METHOD@auto|off|E (its exposure), finished:METHOD,
local-weighting:METHOD. LABEL=METHOD names a method's column in the report.
data sets: the names under 'datasets:' of the registry (configs/datasets.yaml: lime, dicm, lol15, npe,
fivek, camvid-dark, camvid-dusk).
"""


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to ``commands`` (an argparse sub-parsers object); returns its parser.

    The parser's ``run`` default is the handler: ``args.run(args)`` returns the exit status (0 ok, 1 when
    some method failed on some image, 2 for a usage or setup error).
    """
    parser = commands.add_parser(
        "evaluate",
        help="compare enhancement methods on evaluation sets and write a report",
        description="Run enhancement methods over evaluation data sets and write report.md, results.json, "
        "per-image CSVs, comparison grids and a bar chart into the output folder: no-reference metrics "
        "(NIQE, LOE, brightness, exposure error, colourfulness), PSNR/SSIM on paired sets, and mIoU of "
        "ESPNet-CamVid on the segmentation sets, plus time per megapixel and peak memory per method.",
        epilog=_EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--methods", required=True, type=_comma_list, metavar="M1,M2,...", help="methods to run")
    parser.add_argument("--datasets", required=True, type=_comma_list, metavar="D1,D2,...", help="data sets")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: auto)"
    )
    parser.add_argument(
        "--registry",
        metavar="YAML",
        help="data set and method registry (default: configs/datasets.yaml of the source tree); paths may use "
        "${SCL_LLE_SHARED}",
    )
    parser.add_argument(
        "--max-images", type=positive_int, metavar="N", help="at most N images per data set (the first by name)"
    )
    add_verbosity(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``scl-lle evaluate`` with parsed ``args``; the exit status."""
    from ..evaluation.datasets import RegistryError, UnknownNameError
    from ..evaluation.runner import evaluate
    from ..models.hub import WeightsError

    command = None
    if sys.argv[1:2] == ["evaluate"]:
        command = "scl-lle " + " ".join(_quote(a) for a in sys.argv[1:])
    try:
        results = evaluate(
            args.methods,
            args.datasets,
            args.output,
            device=args.device,
            registry=args.registry,
            max_images=args.max_images,
            progress=args.verbose >= args.quiet,  # -q: no progress bars
            command=command,
        )
    except (RegistryError, UnknownNameError, WeightsError, ValueError, FileNotFoundError) as error:
        print(f"scl-lle evaluate: error: {error}", file=sys.stderr)
        return 2
    n_fail = len(results["failures"])
    print(
        f"scl-lle evaluate: report in {Path(args.output) / 'report.md'}"
        + (f"; {n_fail} failure(s), see the report" if n_fail else ""),
        file=sys.stderr,
    )
    return 1 if n_fail else 0


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
