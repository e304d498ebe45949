"""The extraction of scripts/readme_commands.py (issue 20): what it would run, without running anything."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


rc = _load()

README = """# Title

Text with `inline code` and a # hash.

## Set up

```bash
python3 -m venv .venv && .venv/bin/pip install -e '.[onnx]'   # install
bash scripts/test.sh
```

```text
scl-lle enhance INPUT... [--not-run]
```

## Results

```bash
# a whole-line comment
export SCL_LLE_SHARED=../shared          # where the data are
scl-lle evaluate --methods a,b \\
    --datasets lime --output eval/   # joined
echo 'a # not a comment' "b # nor this" c#d $# # but this is
```

## Python API

```python
from scl_lle import enhance  # Python comments stay
print("x")
```

## Other

```python
print("not run: outside Python API")
```
"""


def test_blocks_in_order_with_sections_and_lines():
    commands = rc.extract_commands(README)
    assert [c.index for c in commands] == list(range(1, 7))
    assert [c.section for c in commands] == ["Set up", "Set up", "Results", "Results", "Results", "Python API"]
    assert [c.kind for c in commands] == ["bash"] * 5 + ["python"]
    assert [c.line for c in commands] == [8, 9, 20, 21, 23, 29]


def test_comments_stripped_and_continuations_joined_as_bash_does():
    texts = [c.text for c in rc.extract_commands(README)]
    assert texts[0] == "python3 -m venv .venv && .venv/bin/pip install -e '.[onnx]'"
    assert texts[1] == "bash scripts/test.sh"
    assert texts[2] == "export SCL_LLE_SHARED=../shared"
    assert texts[3] == "scl-lle evaluate --methods a,b     --datasets lime --output eval/"
    assert texts[4] == "echo 'a # not a comment' \"b # nor this\" c#d $#"
    assert rc.extract_commands(README)[3].display == "scl-lle evaluate --methods a,b --datasets lime --output eval/"


def test_comment_text_means_the_same_to_bash(tmp_path):
    """What the extraction keeps prints the same as the README's line run by bash itself."""
    line = "echo 'a # not a comment' \"b # nor this\" c#d x\\ y \\\n  z # gone \\\necho next\n"
    expected = subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=True).stdout
    joined = "\n".join(text for _, text in rc.split_commands(line))
    assert subprocess.run(["bash", "-c", joined], capture_output=True, text=True, check=True).stdout == expected
    assert [n for n, _ in rc.split_commands(line, first_line=10)] == [10, 12]


def test_python_block_runs_as_a_heredoc():
    python = rc.extract_commands(README)[-1]
    assert python.text.splitlines()[0] == f"python - <<'{rc.PYTHON_HEREDOC}'"
    assert python.text.splitlines()[1:] == [
        "from scl_lle import enhance  # Python comments stay",
        'print("x")',
        rc.PYTHON_HEREDOC,
    ]
    assert "Python API block, 2 lines" in python.display


def test_quotes_span_lines_and_unsupported_forms_are_refused():
    assert rc.split_commands("echo 'a\nb' c\nls\n") == [(1, "echo 'a\nb' c"), (3, "ls")]
    assert rc.split_commands("cat <<< 'x'\n") == [(1, "cat <<< 'x'")]
    with pytest.raises(ValueError, match="here-documents"):
        rc.split_commands("cat <<EOF\nx\nEOF\n")
    with pytest.raises(ValueError, match="unterminated"):
        rc.split_commands("echo 'open\n")
    with pytest.raises(ValueError, match="never closed"):
        rc.fenced_blocks("```bash\nls\n")


def test_long_commands_tests_command_and_replayed_state():
    commands = rc.extract_commands(
        "## T\n```bash\nbash scripts/test.sh\nexport X=1\nsource .venv/bin/activate\n"
        "scl-lle train --config configs/smoke.yaml\nscl-lle train --config configs/scl_lle.yaml\n"
        "scl-lle serve\nscl-lle evaluate --methods a --datasets b -o e\nbash scripts/ablations.sh 200\n"
        "scl-lle enhance photos/ -o out/\n```\n"
    )
    assert [rc.long_rule(c) is not None for c in commands] == [False] * 4 + [True] * 4 + [False]
    args = rc.parse_args(["--skip-tests-command", "--from", "4"])
    assert [(c.index, how) for c, how in rc.plan(commands, args)] == [
        (2, "replay"),
        (3, "replay"),
        (4, "run"),
        (5, "long"),
        (6, "long"),
        (7, "long"),
        (8, "long"),
        (9, "run"),
    ]
    skipped = rc.plan(commands, rc.parse_args(["--skip-tests-command", "--only", "1"]))
    assert [(c.index, how) for c, how in skipped] == [(1, "skip")]


def test_signs_of_getting_past_setup():
    training = rc.LONG_RULES[0]
    assert rc.past_setup(training, "loading\n", {}) is None
    start = "train:   0%|          | 0/20000 [00:00<?, ?step/s]"
    assert rc.past_setup(training, start, {}) == "past setup: train progress bar shown at 0/20000"
    later = start + "\rtrain:   0%|          | 1/20000 [00:04<25:00:00, 4.5s/step]"
    assert rc.past_setup(training, later, {}) == "past setup: train progress 0 -> 1 of 20000"
    resumed = "train:  50%|#####     | 30/60 [00:00<?, ?step/s]"
    assert rc.past_setup(training, resumed, {}) == "past setup: train progress bar shown at 30/60"
    ablations = rc.LONG_RULES[2]
    assert rc.past_setup(ablations, "== training full (x.yaml)", {}) == "past setup: printed '== training full'"
    serve = rc.LONG_RULES[3]
    url = "http://127.0.0.1:7860/"
    assert rc.past_setup(serve, f"scl-lle: open {url} (Ctrl-C to stop)", {url: True}).endswith("answered 200")


def test_inputs_named_by_the_commands_only():
    commands = rc.extract_commands('## T\n```bash\nscl-lle enhance night.jpg "scans/**/*.tif" -o out/\n```\n')
    assert [item.name for item in rc.inputs_needed(commands)] == ["night.jpg", "scans/"]


def test_the_real_readme_parses_and_keeps_its_first_two_commands():
    commands = rc.extract_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands[0].text.startswith("python3 -m venv .venv && .venv/bin/pip install torch==")
    assert commands[1].text == rc.TESTS_COMMAND
    assert all(c.text.split()[0] != "pip" for c in commands), "install extras with .venv/bin/pip install -e"
