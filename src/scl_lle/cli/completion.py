"""``scl-lle completion bash|zsh``: a shell completion script generated from the parser by shtab."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

__all__ = ["PATH_ARGUMENTS", "add_parser", "complete_paths", "run"]

#: Arguments that name files or folders, completed as paths by the shell (shtab's FILE completion).
PATH_ARGUMENTS = frozenset({"inputs", "output", "weights", "onnx", "config", "registry"})
_FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``completion`` to ``commands`` (an argparse sub-parsers object); returns its parser."""
    parser = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for scl-lle's commands, options, choices and file arguments. "
        "bash: add 'source <(scl-lle completion bash)' to ~/.bashrc. zsh: write it as _scl-lle into a folder "
        "on $fpath, e.g. 'scl-lle completion zsh > ~/.zfunc/_scl-lle' with 'fpath+=~/.zfunc' before compinit.",
    )
    parser.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    parser.set_defaults(run=run)
    return parser


def complete_paths(parsers: Iterable[argparse.ArgumentParser]) -> None:
    """Mark the :data:`PATH_ARGUMENTS` of ``parsers`` for completion as file names (read by shtab)."""
    for parser in parsers:
        for action in parser._actions:
            if action.dest in PATH_ARGUMENTS:
                action.complete = _FILE_COMPLETION  # type: ignore[attr-defined]  # read by shtab


def run(args: argparse.Namespace) -> int:
    """Print the completion script for ``args.shell`` on stdout; exit status 0."""
    import shtab

    from .app import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0
