#!/usr/bin/env python3
"""Run every command of README.md, in order, in one bash session on a fresh clone (issue 20).

The ```bash blocks of README.md (and the ```python block of its "Python API" section) are split into commands
the way bash reads them (a backslash at the end of a line continues it, ``# ...`` comments are dropped) and run
one after the other in a single ``bash`` process, so that ``export``, ``source .venv/bin/activate`` and ``cd``
carry over from one command to the next, exactly as for a user who types them into one terminal.

Where: a clone of the committed HEAD of this repository (``git clone`` + ``checkout --detach HEAD``), laid out
as ``<tmp>/repo`` beside ``<tmp>/shared``, a symlink to the shared data folder, so that the README's
``../shared`` paths work. HEAD, not the working tree: CI runs on a clean clone, a user gets what is committed,
and a checkout where work is in progress would test half-finished files (``--readme FILE`` runs the commands of
an uncommitted README instead).

The session starts without ``SCL_LLE_SHARED``, ``VIRTUAL_ENV`` or this checkout's virtual environment on
``PATH``: only what the README itself sets up counts. Files the README's examples name as the user's own
(night.jpg, photos/, clip.mp4, ...) are created in the clone from the shared data before the first command, and
the output says which.

Commands that by nature run for a long time (training runs other than the smoke run, the ablations, the full
evaluation of the Results section, ``scl-lle serve``) run as written under a time budget: each is stopped (its
process group gets SIGINT, as from Ctrl-C, then SIGTERM, then SIGKILL) a few seconds after it has shown that it
got past its setup (its progress bar, i.e. the training or evaluation loop, has started; the web page answers;
see LONG_RULES), or when ``--budget`` seconds have passed. It passes if it had got past its setup and was still
running without error when stopped ("CUT" in the table). Every other command must exit 0. One line per
command: status, seconds, the command.

    python scripts/readme_commands.py                 # everything (several minutes: installs, a smoke training)
    python scripts/readme_commands.py --list          # the commands, numbered, without running anything
    python scripts/readme_commands.py --keep --from 5 # commands 5.. (export/source/cd before 5 are replayed)
    python scripts/readme_commands.py --reuse /tmp/readme-commands-XXXX --only 12   # rerun one in a kept clone

Exit status: 0 when every command passed (or was cut as planned, or skipped on request), 1 when any failed,
2 for a usage or setup error.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS_COMMAND = "bash scripts/test.sh"
PYTHON_SECTION = "Python API"
PYTHON_HEREDOC = "__README_PYTHON__"
STATE_WORDS = {"export", "source", ".", "cd", "unset", "set", "alias"}


# ------------------------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class Command:
    """One command of the README, as bash will run it."""

    index: int  # 1-based, in README order
    section: str  # the ``##`` heading it is under
    line: int  # README line where it starts
    kind: str  # "bash" or "python"
    text: str  # what the session runs

    @property
    def display(self) -> str:
        if self.kind == "python":
            body = self.text.split("\n")[1:-1]
            return f"python - <<'EOF' ... ({self.section} block, {len(body)} lines)"
        return " ".join(self.text.split())

    @property
    def first_word(self) -> str:
        words = self.text.split()
        return words[0] if words else ""


def fenced_blocks(markdown: str) -> list[tuple[str, int, str, str]]:
    """(section, first line of the body, language, body) of every fenced code block, in order."""
    blocks: list[tuple[str, int, str, str]] = []
    section = ""
    fence: tuple[str, str, int] | None = None  # (marker, language, first body line)
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            opening = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if opening:
                fence = (opening.group(1), opening.group(2).lower(), number + 1)
                body = []
            elif re.match(r"^#{1,6}\s", line):
                section = line.lstrip("#").strip()
        elif stripped.startswith(fence[0]) and not stripped.strip(fence[0][0]):
            blocks.append((section, fence[2], fence[1], "\n".join(body) + ("\n" if body else "")))
            fence = None
        else:
            body.append(line)
    if fence is not None:
        raise ValueError(f"README line {fence[2] - 1}: code block never closed")
    return blocks


def split_commands(script: str, first_line: int = 1) -> list[tuple[int, str]]:
    """Split shell text into (line, command) pairs as bash reads it: a backslash before a newline (outside single
    quotes and comments) joins the lines, a ``#`` that starts a word (outside quotes) starts a comment to the end
    of the line, a newline outside quotes ends a command. Blank results are dropped. Here-documents are not
    supported (a README command should not need one)."""
    commands: list[tuple[int, str]] = []
    current: list[str] = []
    start = line = first_line
    quote = ""  # "", "'", '"' or "$'"
    i = 0
    n = len(script)

    def word_start() -> bool:
        return not current or current[-1].isspace() or current[-1] in ";&|()<>"

    while i < n:
        char = script[i]
        if char == "\n":
            line += 1
        if quote == "'":
            current.append(char)
            if char == "'":
                quote = ""
        elif char == "\\":
            following = script[i + 1] if i + 1 < n else ""
            if following == "\n":  # line continuation: both characters vanish
                line += 1
                i += 2
                continue
            current.append(char + following)
            i += 2
            continue
        elif quote:  # '"' or "$'"
            current.append(char)
            if (quote == '"' and char == '"') or (quote == "$'" and char == "'"):
                quote = ""
        elif char == "#" and word_start():
            end = script.find("\n", i)
            i = n if end < 0 else end
            continue
        elif char == "\n":
            text = "".join(current).strip()
            if text:
                commands.append((start, text))
            current = []
            start = line
        else:
            if script.startswith("<<<", i):  # a here-string is fine
                current.append("<<<")
                i += 3
                continue
            if script.startswith("<<", i):
                raise ValueError(f"line {line}: here-documents are not supported in README commands")
            if char == "$" and script.startswith("$'", i):
                quote = "$'"
                current.append("$'")
                i += 2
                continue
            if char in "'\"":
                quote = char
            current.append(char)
        i += 1
    if quote:
        raise ValueError(f"line {start}: unterminated {quote} quote")
    text = "".join(current).strip()
    if text:
        commands.append((start, text))
    return commands


def extract_commands(markdown: str) -> list[Command]:
    """Every command of the README's ```bash blocks and the ```python block(s) of "Python API", in order."""
    commands: list[Command] = []
    for section, first_line, language, body in fenced_blocks(markdown):
        if language in ("bash", "sh", "shell"):
            for line, text in split_commands(body, first_line):
                commands.append(Command(len(commands) + 1, section, line, "bash", text))
        elif language == "python" and section == PYTHON_SECTION:
            if PYTHON_HEREDOC in body:
                raise ValueError(f"README line {first_line}: the Python block contains {PYTHON_HEREDOC}")
            text = f"python - <<'{PYTHON_HEREDOC}'\n{body}{PYTHON_HEREDOC}"
            commands.append(Command(len(commands) + 1, section, first_line, "python", text))
    return commands


# ------------------------------------------------------------------------------------- long commands
@dataclass(frozen=True)
class LongRule:
    """A kind of command that runs for a long time by nature, the sign that it got past its setup, and how long it
    must keep running after that sign before it is stopped."""

    why: str
    matches: Callable[[str], bool]
    sign: str  # "tqdm:<desc>" (its progress bar is shown), "serve" (the page answers) or "line:<regex>"
    settle: float  # seconds


def _runs(subcommand: str) -> Callable[[str], bool]:
    pattern = re.compile(rf"(^|\s)(scl-lle|-m\s+scl_lle)\s+{subcommand}(\s|$)")
    return lambda text: bool(pattern.search(text))


def _is_training(text: str) -> bool:
    # the README's quick check (the smoke run as such) must finish; any other training is a long run
    return _runs("train")(text) and not re.fullmatch(r"scl-lle\s+train\s+--config\s+configs/smoke\.yaml", text)


LONG_RULES = (
    LongRule("training run", _is_training, "tqdm:train", 5),
    LongRule("full evaluation", _runs("evaluate"), "tqdm:evaluate", 5),
    # ablations.sh trains with -q (no progress bar): its first "== training" line, then 25 s for the trainer's setup
    LongRule("ablation trainings", lambda text: "scripts/ablations.sh" in text, r"line:== training \S+", 25),
    LongRule("web server, runs until stopped", _runs("serve"), "serve", 1),
)


def long_rule(command: Command) -> LongRule | None:
    if command.kind != "bash":
        return None
    return next((rule for rule in LONG_RULES if rule.matches(command.text)), None)


def _tqdm_counts(output: str, desc: str) -> list[tuple[int, int]]:
    found = re.finditer(rf"{re.escape(desc)}:\s*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+)", output)
    return [(int(m.group(1)), int(m.group(2))) for m in found]


def past_setup(rule: LongRule, output: str, probed: dict[str, bool]) -> str | None:
    """What the command has shown of getting past its setup, or None."""
    kind, _, argument = rule.sign.partition(":")
    if kind == "tqdm":
        counts = _tqdm_counts(output, argument)
        if not counts:
            return None
        (first, total), (last, _) = counts[0], max(counts)
        if last > first:
            return f"past setup: {argument} progress {first} -> {last} of {total}"
        return f"past setup: {argument} progress bar shown at {first}/{total}"
    if kind == "line":
        line = re.search(argument, output)
        return f"past setup: printed '{line.group(0)}'" if line else None
    url = re.search(r"(https?://[^\s)]+)", output)
    if url is None:
        return None
    if url.group(1) not in probed:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url.group(1), timeout=3) as answer:
                probed[url.group(1)] = answer.status == 200
        except OSError:
            return None  # not answering yet: try again on the next round
    return f"serving: {url.group(1)} answered 200" if probed[url.group(1)] else None


# ------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Input:
    """A file the README's examples name as the user's own, and how this script makes a stand-in."""

    name: str  # as it appears in the commands
    make: Callable[[Path, Path], str]  # (clone, shared) -> what was made


LOL = "data/eval_LOLv1_eval15_low/images_cut600x396_SGZ"
LIME = "data/eval_noref_LIME/images"


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _make_photos(clone: Path, shared: Path) -> str:
    from PIL import Image

    picks = [(LIME, "6.bmp"), (LIME, "4.bmp"), (LOL, "111.png"), (LOL, "146.png"), (LOL, "179.png")]
    for number, (folder, name) in enumerate(picks):
        target = clone / "photos" / ("2024" if number == 4 else "") / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(shared / folder / name) as image:  # half size: the examples are about the commands
            image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS).save(target)
    return f"half-size copies of {LIME}/6.bmp, 4.bmp and {LOL}/111.png, 146.png, 179.png (in 2024/, for --recursive)"


def _make_scans(clone: Path, shared: Path) -> str:
    from PIL import Image

    for folder, name in (("roll1", "22.png"), ("roll2/box", "23.png")):
        target = clone / "scans" / folder / name.replace(".png", ".tif")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(shared / LOL / name) as image:
            image.save(target)
    return f"scans/roll1/22.tif and scans/roll2/box/23.tif, TIFF copies of {LOL}/22.png and 23.png"


def _make_clip(clone: Path, shared: Path) -> str:
    try:
        import av
        import numpy as np
        from PIL import Image
    except ImportError as error:  # pragma: no cover - the dev environment has PyAV
        raise RuntimeError(f"clip.mp4 needs PyAV and numpy in the Python that runs this script ({error})") from None
    with Image.open(shared / LOL / "1.png") as image:
        picture = np.asarray(image.convert("RGB"))
    width, height, frames = 320, 240, 12
    with av.open(str(clone / "clip.mp4"), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):  # a slow pan across the photo
            x = k * (picture.shape[1] - width) // (frames - 1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[60 : 60 + height, x : x + width]), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return f"a 1 s {width}x{height} {codec} clip panning across {LOL}/1.png (written with PyAV)"


def _make_weights(clone: Path, shared: Path) -> str:
    _copy(clone / "src/scl_lle/models/weights/scl-lle.safetensors", clone / "my_model.safetensors")
    return "a copy of the embedded default model (src/scl_lle/models/weights/scl-lle.safetensors)"


def _copy_maker(relative: str, name: str):
    def make(clone: Path, shared: Path) -> str:
        _copy(shared / relative, clone / name)
        return f"a copy of ../shared/{relative}"

    return make


INPUTS = (
    Input("night.jpg", _copy_maker("data/eval_noref_DICM/images/27.jpg", "night.jpg")),
    Input("night.png", _copy_maker(f"{LOL}/1.png", "night.png")),
    Input("photos/", _make_photos),
    Input("scans/", _make_scans),
    Input("clip.mp4", _make_clip),
    Input("my_model.safetensors", _make_weights),
)


def inputs_needed(commands: list[Command]) -> list[Input]:
    text = "\n".join(c.text for c in commands)
    return [item for item in INPUTS if re.search(rf"(?<![\w./-]){re.escape(item.name.rstrip('/'))}\b", text)]


def make_inputs(commands: list[Command], clone: Path, shared: Path) -> list[str]:
    notes = []
    for item in inputs_needed(commands):
        target = clone / item.name.rstrip("/")
        if target.exists():
            notes.append(f"{item.name}: already there, kept")
            continue
        notes.append(f"{item.name}: {item.make(clone, shared)}")
    return notes


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    command: Command
    status: str = "NOT RUN"  # PASS, CUT, SKIP, REPLAY, FAIL, NOT RUN
    seconds: float = 0.0
    note: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "NOT RUN")


def session_environment() -> dict[str, str]:
    """This process's environment minus what would make the README pass by accident."""
    env = dict(os.environ)
    venvs = [
        Path(p).resolve() for p in (env.get("VIRTUAL_ENV"), sys.prefix if sys.prefix != sys.base_prefix else None) if p
    ]
    for name in ("SCL_LLE_SHARED", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)

    def keep(entry: str) -> bool:
        if not entry:
            return False
        path = Path(entry).resolve()
        return not any(path == v or v in path.parents for v in [*venvs, REPO])

    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if keep(p))
    env["PYTHONUNBUFFERED"] = "1"  # output as it happens, so progress is seen when it is made
    return env


def driver_script(steps: list[tuple[Command, str]], nonce: str) -> str:
    """The bash program the session runs: each command between markers the reader finds in the output."""

    def mark(event: str, index: int, value: str = "0") -> str:
        return f"printf '\\n@@RCMD:{nonce}:{event}:%d:%d@@\\n' {index} {value}"

    lines = ["# generated by scripts/readme_commands.py: the README's commands, in order, in one session"]
    for command, how in steps:
        lines.append(f"# --- [{command.index}] README line {command.line} ({how})")
        if how == "skip":
            lines.append(mark("skip", command.index))
            continue
        lines.append(mark("begin", command.index))
        if how == "long":
            lines += [
                "set -m",
                f"{command.text} &",
                "__rcmd_pid=$!",
                "set +m",
                mark("pid", command.index, '"$__rcmd_pid"'),
            ]
            lines += ['wait "$__rcmd_pid"', mark("end", command.index, '"$?"')]
        else:
            lines += [command.text, mark("end", command.index, '"$?"')]
    return "\n".join(lines) + "\n"


def tail(text: str, count: int = 30) -> list[str]:
    """The last lines of a command's output, each progress-bar line reduced to its last state."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    lines = [line for line in lines if line.strip()]
    return lines[-count:]


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Session:
    """Runs the driver in one bash process and follows its markers."""

    def __init__(self, steps, clone: Path, logs: Path, args: argparse.Namespace, report) -> None:
        self.steps = steps
        self.clone = clone
        self.logs = logs
        self.args = args
        self.report = report
        self.nonce = secrets.token_hex(4)
        self.marker = re.compile(rf"\n@@RCMD:{self.nonce}:(begin|pid|end|skip):(\d+):(-?\d+)@@\n")
        self.outcomes = {c.index: Outcome(c) for c, _ in steps}
        self.how = {c.index: how for c, how in steps}
        self.long_pid: int | None = None  # the process group of the long command running now

    def run(self) -> list[Outcome]:
        driver = self.logs / "session.sh"
        driver.write_text(driver_script(self.steps, self.nonce))
        check = subprocess.run(["bash", "-n", str(driver)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"the README's commands are not valid bash:\n{check.stderr}")
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", str(driver)],
            cwd=self.clone,
            env=session_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._follow(process)
        finally:  # also when this script is interrupted: nothing it started stays behind
            if self.long_pid is not None:
                _signal_group(self.long_pid, signal.SIGKILL)
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        return [self.outcomes[c.index] for c, _ in self.steps]

    def _follow(self, process: subprocess.Popen) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        fd = process.stdout.fileno()
        pending = ""
        current: Outcome | None = None
        text = ""  # current command's output
        started = 0.0
        pid: int | None = None
        progress: str | None = None
        progress_at = 0.0
        cut_at: float | None = None
        cut_note = ""
        probed: dict[str, bool] = {}
        prefix = f"\n@@RCMD:{self.nonce}:"
        eof = False
        while not eof:
            ready, _, _ = select.select([fd], [], [], 0.25)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                pending += decoder.decode(chunk, final=not chunk)
            while True:
                found = self.marker.search(pending)
                if found is None:
                    break
                text += pending[: found.start()]
                pending = pending[found.end() :]
                event, index, value = found.group(1), int(found.group(2)), int(found.group(3))
                outcome = self.outcomes[index]
                if event == "skip":
                    outcome.status, outcome.note = "SKIP", self.args.skip_note
                    self.report(outcome)
                elif event == "begin":
                    current, text, started = outcome, "", time.monotonic()
                    pid, progress, cut_at, cut_note, probed = None, None, None, "", {}
                elif event == "pid":
                    pid = self.long_pid = value
                elif event == "end" and current is not None:
                    self.long_pid = None
                    self._finish(current, text, time.monotonic() - started, value, cut_at, cut_note)
                    if self.args.fail_fast and current.failed:
                        _signal_group(process.pid, signal.SIGKILL)
                    current = None
            # keep back only what could be the start of a marker
            keep = pending.rfind("\n")
            if keep >= 0 and prefix.startswith(pending[keep : keep + len(prefix)]):
                text, pending = text + pending[:keep], pending[keep:]
            else:
                text, pending = text + pending, ""
            if current is None:
                continue
            elapsed = time.monotonic() - started
            rule = long_rule(current.command) if self.how[current.command.index] == "long" else None
            if rule is not None and pid is not None:
                if progress is None:
                    progress = past_setup(rule, text, probed)
                    progress_at = time.monotonic()
                if cut_at is None and (
                    (progress and time.monotonic() - progress_at >= rule.settle) or elapsed >= self.args.budget
                ):
                    cut_at = elapsed
                    cut_note = past_setup(rule, text, probed) or ""  # the latest state
                    _signal_group(pid, signal.SIGINT)
                elif cut_at is not None and elapsed - cut_at >= 10:  # Ctrl-C was not enough: terminate, then kill
                    _signal_group(pid, signal.SIGTERM if elapsed - cut_at < 20 else signal.SIGKILL)
            elif rule is None and elapsed > self.args.timeout:
                text += f"\n[readme_commands] no exit after {self.args.timeout:.0f} s (--timeout): session stopped\n"
                self._finish(current, text, elapsed, None, None, "")
                _signal_group(process.pid, signal.SIGKILL)
                current = None
        process.wait()
        if current is not None:  # the session ended inside a command (e.g. an 'exit')
            note = f"the session ended in this command (bash exit status {process.returncode})"
            self._finish(current, text + pending, time.monotonic() - started, None, None, "", note)

    def _finish(self, outcome, text, seconds, rc, cut_at, cut_note, note="") -> None:
        outcome.seconds = seconds
        outcome.output = tail(text)
        (self.logs / f"{outcome.command.index:02d}.log").write_text(text)
        if cut_at is not None:
            if cut_note:
                outcome.status = "CUT"
                outcome.note = f"long ({long_rule(outcome.command).why}): cut after {cut_at:.0f} s, {cut_note}"
            else:
                outcome.status = "FAIL"
                outcome.note = f"did not get past its setup within the {self.args.budget:.0f} s budget (stopped)"
        elif rc == 0:
            outcome.status = "PASS"
            if self.how[outcome.command.index] == "replay":
                outcome.status, outcome.note = "REPLAY", "state for the commands after it"
        else:
            outcome.status = "FAIL"
            outcome.note = note or (
                f"exit status {rc}" if rc is not None else f"no exit within {self.args.timeout:.0f} s"
            )
        self.report(outcome)


# ------------------------------------------------------------------------------------------------- main
def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def read_readme(args: argparse.Namespace) -> tuple[str, str]:
    if args.readme:
        return Path(args.readme).read_text(encoding="utf-8"), f"{args.readme} (--readme)"
    if args.reuse:
        return (Path(args.reuse) / "repo/README.md").read_text(encoding="utf-8"), f"README.md of {args.reuse}/repo"
    return git("show", "HEAD:README.md"), f"README.md at HEAD {git('rev-parse', '--short', 'HEAD')}"


def plan(commands: list[Command], args: argparse.Namespace) -> list[tuple[Command, str]]:
    """(command, how) with how in run, long, skip, replay; commands outside --only/--from are left out, except
    earlier state commands (export, source, cd, ...), which are replayed."""
    first = args.only or args.from_ or 1
    last = args.only or len(commands)
    steps = []
    for command in commands:
        if command.index > last:
            break
        if command.index < first:
            if command.kind == "bash" and command.first_word in STATE_WORDS:
                steps.append((command, "replay"))
            continue
        if args.skip_tests_command and command.text == TESTS_COMMAND:
            steps.append((command, "skip"))
        else:
            steps.append((command, "long" if long_rule(command) else "run"))
    return steps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_shared = os.environ.get("SCL_LLE_SHARED") or str(REPO.parent / "shared")
    parser.add_argument("--shared", default=default_shared, help=f"shared data folder (default: {default_shared})")
    parser.add_argument("--list", action="store_true", help="print the commands it would run, and stop")
    parser.add_argument("--only", type=int, metavar="N", help="run command N only")
    parser.add_argument("--from", dest="from_", type=int, metavar="N", help="run commands N and after")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (clone, logs)")
    parser.add_argument("--reuse", metavar="DIR", help="run in a folder kept by --keep instead of a fresh clone")
    parser.add_argument("--readme", metavar="FILE", help="run this README's commands (e.g. uncommitted edits)")
    parser.add_argument(
        "--budget", type=float, default=150, help="seconds a long command has to get past its setup (default 150)"
    )
    parser.add_argument("--timeout", type=float, default=1200, help="seconds any other command may take (1200)")
    parser.add_argument(
        "--skip-tests-command",
        action="store_true",
        help=f"do not run '{TESTS_COMMAND}' (CI runs it right before this script)",
    )
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing command")
    args = parser.parse_args(argv)
    args.skip_note = "--skip-tests-command: CI runs the tests right before this script"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        readme, source = read_readme(args)
        commands = extract_commands(readme)
    except (OSError, ValueError, subprocess.CalledProcessError) as error:
        print(f"readme_commands: {error}", file=sys.stderr)
        return 2
    for value in (args.only, args.from_):
        if value is not None and not 1 <= value <= len(commands):
            print(f"readme_commands: there are commands 1..{len(commands)}", file=sys.stderr)
            return 2
    if args.skip_tests_command and not any(c.text == TESTS_COMMAND for c in commands):
        print(f"readme_commands: --skip-tests-command, but the README has no '{TESTS_COMMAND}'", file=sys.stderr)
        return 2
    steps = plan(commands, args)
    if args.list:
        print(f"{len(commands)} commands in {source}:")
        for command, how in plan(commands, argparse.Namespace(**{**vars(args), "only": None, "from_": None})):
            rule = long_rule(command)
            tag = f"long: {rule.why}" if rule else ("skipped with --skip-tests-command" if how == "skip" else "")
            print(f"[{command.index:2d}] {command.section} (line {command.line}){f' [{tag}]' if tag else ''}")
            print("     " + command.text.replace("\n", "\n     "))
        return 0

    shared = Path(args.shared).resolve()
    if not shared.is_dir():
        print(f"readme_commands: shared data folder {shared} not found (--shared, SCL_LLE_SHARED)", file=sys.stderr)
        return 2
    if args.reuse:
        root = Path(args.reuse).resolve()
        clone = root / "repo"
        if not clone.is_dir():
            print(f"readme_commands: {clone} not found", file=sys.stderr)
            return 2
    else:
        root = Path(tempfile.mkdtemp(prefix="readme-commands-"))
        clone = root / "repo"
    started = time.monotonic()
    try:
        if not args.reuse:
            head = git("rev-parse", "HEAD")
            git("clone", "--quiet", "--no-checkout", str(REPO), str(clone), cwd=root)
            git("checkout", "--quiet", "--detach", head, cwd=clone)
            (root / "shared").symlink_to(shared, target_is_directory=True)
            dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "README.md"], cwd=REPO).returncode
            print(f"clone: {clone} at {head[:10]} (the committed HEAD); ../shared -> {shared}")
            if dirty and not args.readme:
                print("note: README.md has uncommitted changes; they are not tested (--readme README.md would)")
        else:
            print(f"clone: reusing {clone}")
        if args.readme:
            shutil.copyfile(args.readme, clone / "README.md")
        print(
            f"commands: {len(commands)} from {source}; long ones are stopped a few seconds after they get past "
            f"their setup, at most after {args.budget:.0f} s"
        )
        for note in make_inputs([c for c, how in steps if how != "skip"], clone, shared):
            print(f"input created for the README's examples (a user's own file there): {note}")
        logs = root / "logs"
        logs.mkdir(exist_ok=True)
        sys.stdout.flush()

        def report(outcome: Outcome) -> None:
            note = f"  <- {outcome.note}" if outcome.note else ""
            print(
                f"{outcome.status:<7} {outcome.seconds:6.1f}s  [{outcome.command.index:2d}] "
                f"{outcome.command.display}{note}",
                flush=True,
            )
            if outcome.status == "FAIL":
                print("        last output lines:")
                for line in outcome.output or ["(no output)"]:
                    print(f"        | {line}")
                sys.stdout.flush()

        outcomes = Session(steps, clone, logs, args, report).run()
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"readme_commands: setup failed: {error} {detail}".strip(), file=sys.stderr)
        if not args.keep and not args.reuse:
            shutil.rmtree(root, ignore_errors=True)
        return 2
    for outcome in outcomes:
        if outcome.status == "NOT RUN":
            print(f"NOT RUN {0:6.1f}s  [{outcome.command.index:2d}] {outcome.command.display}")
    total = time.monotonic() - started
    counts = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "CUT", "SKIP", "FAIL", "NOT RUN")}
    summary = ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    cut = [f"[{o.command.index}] after {o.seconds:.0f} s" for o in outcomes if o.status == "CUT"]
    print(f"README commands: {summary} in {total:.0f} s" + (f"; cut under the budget: {', '.join(cut)}" if cut else ""))
    if args.keep or args.reuse:
        print(f"kept: {root} (logs in {root / 'logs'})")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
