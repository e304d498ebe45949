"""``scl-lle assets list|fetch``: external assets scl-lle does not ship (:mod:`scl_lle.models.assets`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run_fetch", "run_list"]


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``assets`` with its actions ``list`` and ``fetch`` to ``commands``; returns its parser (each action's
    ``run``: :func:`run_list`, :func:`run_fetch`)."""
    parser = commands.add_parser(
        "assets",
        help="list or fetch external assets (pretrained VGG16 for training)",
        description="External assets that scl-lle does not ship. 'fetch' downloads one from the package index, "
        "checks its sha256 and converts it once into the cache folder.",
    )
    actions = parser.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list known assets and where they are found")
    listing.set_defaults(run=run_list)
    fetch = actions.add_parser("fetch", help="download and convert an asset into the cache")
    fetch.add_argument("name", help="asset name (see 'scl-lle assets list')")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the cache has it")
    fetch.set_defaults(run=run_fetch)
    return parser


def run_list(args: argparse.Namespace) -> int:
    """Print each known asset and where it is found (or how to fetch it); exit status 0."""
    from ..models.assets import list_assets, locate_asset

    for name, description in list_assets().items():
        try:
            path, source = locate_asset(name)
            where = f"found ({source}): {path}"
        except FileNotFoundError:
            where = f"not found: run 'scl-lle assets fetch {name}'"
        print(f"{name}: {description}\n    {where}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch one asset into the cache and print its path; exit status 0, or 2 (unknown name, download failed)."""
    from ..models.assets import fetch_asset

    try:
        path = fetch_asset(args.name, force=args.force)
    except (KeyError, RuntimeError, OSError) as error:
        print(f"scl-lle assets fetch: error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0
