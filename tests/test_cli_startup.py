"""``scl-lle --version`` and ``--help`` start quickly (issue 23): building the parser loads no PyTorch and none of
the engine or model code; the sub-commands import their machinery when they run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = ["enhance", "serve", "export", "train", "evaluate", "assets", "completion"]


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


def test_version_and_every_help_load_no_torch():
    argvs = [["--version"], ["--help"], *([command, "--help"] for command in COMMANDS)]
    code = f"""
import sys
from scl_lle.cli.app import main
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
    else:
        raise AssertionError(f"{{argv}} did not exit")
engine = ("scl_lle.engine", "scl_lle.models")
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(engine))
assert not loaded, loaded[:10]
"""
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("scl-lle ") and "usage: scl-lle enhance" in done.stdout


def test_the_module_entry_point_prints_the_version():
    done = _python("-m", "scl_lle", "--version")
    assert done.returncode == 0, done.stderr
    import scl_lle

    assert done.stdout == f"scl-lle {scl_lle.__version__}\n"
