"""The ``scl-lle`` command line: :func:`build_parser` with every sub-command, and :func:`main` (the console
script ``scl-lle``, also ``python -m scl_lle`` and ``torchrun -m scl_lle``).

Each sub-command is a module with ``add_parser(commands)`` and ``run(args)``; building the parser loads no
PyTorch (``scl-lle --version`` and ``--help`` stay quick), the machinery is imported when a command runs. This
module imports only the standard library at the top, so that :func:`main` handles a Ctrl-C from its first moment.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator, Sequence

from .. import __version__
from .console import Interrupt, console, exit_at_once, interrupted
from .options import add_verbosity, verbosity

__all__ = ["build_parser", "main"]

#: How to carry on after an interruption, per command.
_RESUME_HINTS = {"enhance": " (resume with --skip-existing)", "train": " (continue with --resume)"}
#: Commands that run without PyTorch; the others import it before a Ctrl-C starts unwinding (see :func:`main`).
_WITHOUT_TORCH = {"completion"}


def build_parser() -> argparse.ArgumentParser:
    """The ``scl-lle`` argument parser with all sub-commands; each leaf's ``run`` default runs it."""
    # Imported here, not at the top: their imports (NumPy, Pillow) then run under main's Ctrl-C handler.
    from . import assets, completion, enhance, evaluate, export, serve, train

    parser = argparse.ArgumentParser(
        prog="scl-lle",
        description="Low-light image enhancement with Semantically Contrastive Learning (SCL-LLE).",
    )
    parser.add_argument("--version", action="version", version=f"scl-lle {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command", required=True)
    for command in (enhance, serve, export, train, evaluate, assets, completion):
        command.add_parser(commands)
    leaves = list(_leaf_parsers(commands))
    for leaf in leaves:
        if "--quiet" not in leaf._option_string_actions:  # cli.evaluate adds them itself
            add_verbosity(leaf)
    completion.complete_paths(leaves)
    return parser


def _leaf_parsers(commands: argparse._SubParsersAction) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run something: each sub-command, or each action of one with actions (assets)."""
    for command in dict.fromkeys(commands.choices.values()):
        actions = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        if actions:
            yield from _leaf_parsers(actions[0])
        else:
            yield command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some files failed, 2 usage or setup error,
    130 interrupted: Ctrl-C from the moment this runs, sub-command imports and model loading included).

    Until PyTorch is imported a Ctrl-C exits at once (nothing to clean up yet); from then on it unwinds, so that
    temporary files are removed on the way out.
    """
    interrupt = Interrupt()
    hint = ""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, exit_at_once) if main_thread else None
    try:
        args = build_parser().parse_args(argv)
        hint = _RESUME_HINTS.get(args.command, "")
        if args.command not in _WITHOUT_TORCH:
            import torch  # noqa: F401  # its import is not interruptible (see console.exit_at_once)
        if main_thread:
            signal.signal(signal.SIGINT, interrupt)
        with console(verbosity(args)):
            return args.run(args)
    except KeyboardInterrupt:
        return interrupted(hint)
    except Exception:
        if interrupt.fired:
            return interrupted(hint)
        raise
    finally:
        if main_thread:  # after an interruption, a second Ctrl-C while exiting is ignored
            signal.signal(signal.SIGINT, signal.SIG_IGN if interrupt.fired else previous)
