"""The ``scl-lle`` command line: a thin layer over the public API (``main`` is the console script).

One module per sub-command (:mod:`.enhance`, :mod:`.serve`, :mod:`.export`, :mod:`.train`, :mod:`.evaluate`,
:mod:`.assets`, :mod:`.completion`), each with ``add_parser(commands)`` and ``run(args)``; :mod:`.app` puts them
together; :mod:`.options` (argument types, ``-q``/``-v``) and :mod:`.console` (log lines, Ctrl-C) are shared.
"""

from __future__ import annotations

from .app import build_parser, main

__all__ = ["build_parser", "main"]
