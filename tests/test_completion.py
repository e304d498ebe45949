"""``scl-lle completion bash|zsh`` (issue 20): the script bash runs completes commands, options, choices and
paths."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scl_lle.cli import main

BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "scl-lle.bash"
    with open(path, "w") as handle, pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", handle)
        assert main(["completion", "bash"]) == 0
    return path


def _complete(script: Path, line: str, cwd: Path) -> list[str]:
    """What bash offers for ``line`` (the cursor at its end), with the generated script loaded."""
    program = f"""
        source {script}
        COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}
        read -ra COMP_WORDS <<< "$COMP_LINE"
        [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
        _shtab_scl_lle scl-lle "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    run = subprocess.run([BASH, "-c", program], cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return [word for word in run.stdout.splitlines() if word]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_completes_commands_options_choices_and_paths(bash_script: Path, tmp_path: Path):
    (tmp_path / "night.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert _complete(bash_script, "scl-lle enh", tmp_path) == ["enhance"]
    assert _complete(bash_script, "scl-lle enhance --form", tmp_path) == ["--format"]
    assert _complete(bash_script, "scl-lle enhance x --format ", tmp_path)[:2] == ["same", "png"]
    assert "webp" in _complete(bash_script, "scl-lle enhance x --format ", tmp_path)
    assert _complete(bash_script, "scl-lle enhance x -", tmp_path).count("--verbose") == 1
    assert _complete(bash_script, "scl-lle enhance nig", tmp_path) == ["night.jpg"]
    assert _complete(bash_script, "scl-lle train --config no", tmp_path) == ["notes.txt"]
    assert _complete(bash_script, "scl-lle completion ", tmp_path) == ["bash", "zsh"]


def test_zsh_script_defines_the_completion_function(capsys):
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("#compdef scl-lle")
    assert "_shtab_scl_lle_enhance_options" in script and "--exposure" in script
