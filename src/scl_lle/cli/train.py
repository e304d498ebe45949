"""``scl-lle train``: train an enhancer from a YAML experiment file (:func:`scl_lle.train.trainer.train`)."""

from __future__ import annotations

import argparse
import sys

from .options import verbosity

__all__ = ["add_parser", "run"]

EXAMPLES = """\
examples:
  SCL_LLE_SHARED=../shared scl-lle train --config configs/scl_lle.yaml
  scl-lle train --config configs/scl_lle.yaml steps=5000 optim.lr=3e-4 name=lr3e-4
  scl-lle train --config configs/scl_lle.yaml --resume
  torchrun --nproc-per-node 2 -m scl_lle train --config configs/scl_lle.yaml
"""


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` to ``commands`` (an argparse sub-parsers object); returns its parser (``run``: :func:`run`)."""
    parser = commands.add_parser(
        "train",
        help="train an enhancer from a YAML experiment file",
        description="Train DCE-Net with the SCL-LLE objective. Outputs (checkpoints, logs, pictures, final "
        "weights) go to <output_root>/<name>/ (default runs/<name>/). Under torchrun it trains data-parallel.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="YAML", help="experiment file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings to override, e.g. optim.lr=3e-4")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Train; exit status 0, or 2 for a bad experiment file, a missing file or a bad setting."""
    from ..train.config import ConfigError
    from ..train.trainer import train

    try:
        train(args.config, args.overrides, resume=args.resume, progress=verbosity(args) >= 0)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"scl-lle train: error: {error}", file=sys.stderr)
        return 2
    return 0
