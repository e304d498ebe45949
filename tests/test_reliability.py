"""Reliability and security (issue 7): kills, concurrent writers, hostile weights and hostile paths lose nothing.

The kill tests run the real command line (``python -m scl_lle``) as child processes and end them with SIGKILL,
which no handler can catch: what survives is exactly what the atomic writes guarantee. Each test prints a
``reliability:`` line with its figures (run with ``-s`` to see them; docs/RELIABILITY.md quotes them).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from conftest import tiny_training_config
from scl_lle import DCENet, Enhancer, WeightsError, load_dcenet
from scl_lle.cli import main
from scl_lle.io.files import TEMP_SUFFIX
from scl_lle.io.image import read_image
from scl_lle.train.config import DEFAULTS, apply_overrides
from scl_lle.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = 300  # seconds; far above what a child needs, so a hang fails instead of blocking CI


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for child processes: this checkout's sources, one thread, no VGG16 weights anywhere."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "SCL_LLE_CACHE": str(tmp_path / "empty-cache"),
        "TORCH_HOME": str(tmp_path / "empty-torch"),
        **extra,
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scl_lle", *args]


def _kill_when(process: subprocess.Popen, condition: Callable[[], bool], timeout: float = CHILD_TIMEOUT) -> bool:
    """SIGKILL ``process`` as soon as ``condition()`` holds; True if the kill ended it (not its own exit)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return process.returncode == -signal.SIGKILL
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"{process.args} did not reach the kill point within {timeout} s")
        time.sleep(0.002)
    return False


def _visible(folder: Path) -> list[Path]:
    """Files under their final names (not hidden temporaries)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _temporaries(folder: Path) -> list[Path]:
    return sorted(folder.rglob(f"*{TEMP_SUFFIX}")) if folder.is_dir() else []


def _has_partial_temporary(folder: Path) -> bool:
    for path in _temporaries(folder):
        try:
            if path.stat().st_size > 0:
                return True
        except FileNotFoundError:  # renamed into place meanwhile
            continue
    return False


def _decodes(path: Path) -> tuple[int, int]:
    """Decode the whole file (not only its header); return its size."""
    with Image.open(path) as image:
        image.load()
        return image.size


def _photos(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(11)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        width, height = (48 + i % 17, 32 + i % 13)  # odd sizes too
        path = folder / f"p{i:02d}.png"
        Image.fromarray(rng.integers(0, 70, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _expected(weights: Path, sources: list[Path]) -> dict[str, np.ndarray]:
    enhancer = Enhancer(weights, device="cpu")
    return {p.name: enhancer.enhance_picture(read_image(p)).pixels for p in sources}


def _assert_complete(out: Path, expected: dict[str, np.ndarray]) -> None:
    """Every input has exactly one output, complete, of its size and content; nothing else is there."""
    assert sorted(p.name for p in out.rglob("*")) == sorted(expected)
    for name, pixels in expected.items():
        assert _decodes(out / name) == (pixels.shape[1], pixels.shape[0])
        got = read_image(out / name).pixels.astype(int)
        assert np.abs(got - pixels.astype(int)).max() <= 1, name  # thread count may change a rounding


# ------------------------------------------------------------------------------------ killed enhance batches
STALLING_ENHANCE = """
import io, os, sys, time
from PIL import Image
from scl_lle.cli import main

real_save = Image.Image.save
calls = 0


def stalling_save(self, fp, format=None, **params):
    global calls
    calls += 1
    if calls < int(os.environ["STALL_AT"]):
        return real_save(self, fp, format, **params)
    buffer = io.BytesIO()
    real_save(self, buffer, format, **params)
    data = buffer.getvalue()
    with open(fp, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        open(os.environ["STALLED_FLAG"], "w").close()
        time.sleep(600)  # SIGKILL arrives here, half-way through writing the file
        handle.write(data[len(data) // 2 :])


Image.Image.save = stalling_save
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_batch_then_skip_existing_loses_nothing(tmp_path: Path, weights_file: Path):
    sources = _photos(tmp_path / "in", 36)
    out = tmp_path / "out"
    args = ["enhance", str(tmp_path / "in"), "-o", str(out), "-w", str(weights_file), "-q", "--skip-existing"]
    env = _env(tmp_path)
    kills = mid_write = 0

    def check_after_kill() -> None:
        nonlocal mid_write
        mid_write += bool(_temporaries(out))
        for path in _visible(out):  # whatever carries a final name is complete
            _decodes(path)

    # 1. A kill while an output is half written: a child whose encoder stalls half-way through its 5th file.
    stalling = tmp_path / "stalling_enhance.py"
    stalling.write_text(STALLING_ENHANCE)
    flag = tmp_path / "stalled"
    child = subprocess.Popen(
        [sys.executable, str(stalling), *args], env={**env, "STALL_AT": "5", "STALLED_FLAG": str(flag)}
    )
    assert _kill_when(child, flag.exists)
    kills += 1
    check_after_kill()
    assert len(_visible(out)) == 4 and len(_temporaries(out)) == 1 and _has_partial_temporary(out)
    # 2. Kills of the real command at random points of the batch.
    rng = random.Random(7)
    for _ in range(4):
        target = len(_visible(out)) + rng.randint(1, 5)
        child = subprocess.Popen(_cli(*args), env=env, stderr=subprocess.DEVNULL)
        kills += _kill_when(child, lambda target=target: len(_visible(out)) >= target)
        check_after_kill()
    assert kills == 5 and len(_visible(out)) < len(sources)  # the batch really was cut short each time
    # 3. Resume to the end.
    run = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert run.returncode == 0, run.stderr[-2000:]
    skipped = int(re.search(r"(\d+) skipped", run.stderr).group(1))
    _assert_complete(out, _expected(weights_file, sources))
    assert not _temporaries(out)
    print(
        f"\nreliability: enhance batch of {len(sources)} survived {kills} SIGKILLs ({mid_write} left a partial "
        f"temporary file); resume kept {skipped} outputs and wrote {len(sources) - skipped}; files lost: 0"
    )


@pytest.mark.parametrize("mode", ["--skip-existing", "--overwrite"])
def test_two_processes_write_into_one_folder(tmp_path: Path, weights_file: Path, mode: str):
    sources = _photos(tmp_path / "in", 24)
    out = tmp_path / "out"
    command = _cli("enhance", str(tmp_path / "in"), "-o", str(out), "-w", str(weights_file), "-q", mode)
    children = [subprocess.Popen(command, env=_env(tmp_path), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    observed = 0
    while any(child.poll() is None for child in children):  # meanwhile, every visible output must decode
        for path in _visible(out):
            try:
                _decodes(path)
            except FileNotFoundError:
                continue
            observed += 1
        time.sleep(0.05)
    errors = [child.communicate(timeout=CHILD_TIMEOUT)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0], errors
    written = sum(int(re.search(r"(\d+) enhanced", err).group(1)) for err in errors)
    skipped = sum(int(re.search(r"(\d+) skipped", err).group(1)) for err in errors)
    if mode == "--skip-existing":
        assert (written, skipped) == (len(sources), len(sources))  # each output written exactly once
    else:
        assert (written, skipped) == (2 * len(sources), 0)
    _assert_complete(out, _expected(weights_file, sources))
    print(f"\nreliability: two processes {mode}: {written} writes, {observed} reads of live outputs, 0 corrupt")


# ----------------------------------------------------------------------------------------------- path safety
def _snapshot(root: Path, skip: Path) -> dict[str, bytes | str]:
    """Everything under ``root`` outside ``skip``: file contents, and where symlinks point."""
    found: dict[str, bytes | str] = {}
    for path in root.rglob("*"):
        if path == skip or skip in path.parents:
            continue
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "folder"
    return found


def test_symlinks_in_the_output_folder_are_not_followed(tmp_path: Path, weights_file: Path, capsys):
    src = tmp_path / "in"
    for name in ("a.png", "c.png", "d.png", "sub/b.png"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (9, 7), (20, 30, 40)).save(src / name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.png").write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").symlink_to(outside / "victim.png")  # a file link to an existing file outside
    (out / "c.png").symlink_to(outside / "new.png")  # a dangling link: writing through it would create a file
    (out / "sub").symlink_to(outside, target_is_directory=True)  # a folder link
    before = _snapshot(tmp_path, skip=out / "d.png")
    for mode in ("--overwrite", "--skip-existing"):
        code = main(["enhance", str(src), "-o", str(out), "-w", str(weights_file), "-r", "-q", mode])
        err = capsys.readouterr().err
        assert code == 1
        for name in ("a.png", "c.png", "b.png"):
            assert any(name in line and "would fall outside" in line for line in err.splitlines()), (name, err)
        assert _snapshot(tmp_path, skip=out / "d.png") == before  # nothing outside written, links untouched
        assert _decodes(out / "d.png") == (9, 7)


def test_dot_dot_and_symlinked_inputs_stay_inside(tmp_path: Path, weights_file: Path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    for name in ("a.png", "trip/b.png", "trip/deep/c.png"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 5), (10, 20, 30)).save(photos / name)
    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (6, 5)).save(secret / "s.png")
    (photos / "links").mkdir()
    (photos / "links" / "s.png").symlink_to(secret / "s.png")  # symlinks inside a folder input are skipped
    (photos / "links" / "loop").symlink_to(photos, target_is_directory=True)  # and never followed (no loop)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path, skip=work)
    weights = ["-w", str(weights_file), "-q"]

    assert main(["enhance", "../photos", "-o", "tree", "-r", *weights]) == 0  # a folder given with ..
    assert sorted(str(p.relative_to("tree")) for p in Path("tree").rglob("*")) == [
        "a.png",
        "trip",
        "trip/b.png",
        "trip/deep",
        "trip/deep/c.png",
    ]
    assert main(["enhance", "../photos/t*/../../secret/*.png", "-o", "climb", *weights]) == 1  # .. out of the mirror
    assert re.search(r"s\.png: its output \S+ would fall outside climb", capsys.readouterr().err)
    assert not Path("climb").exists() or not any(Path("climb").iterdir())
    assert main(["enhance", "../photos/t*/deep/../*.png", "-o", "inside", *weights]) == 0  # .. that stays inside
    assert sorted(str(p.relative_to("inside")) for p in Path("inside").rglob("*")) == ["trip", "trip/b.png"]
    assert main(["enhance", "../photos/links/s.png", "-o", "direct", *weights]) == 0  # a link given directly: read
    assert [p.name for p in Path("direct").iterdir()] == ["s.png"]
    for path in work.rglob("*"):
        assert not path.is_symlink() and work in path.resolve().parents
    assert _snapshot(tmp_path, skip=work) == before  # nothing outside the output folders changed


# ---------------------------------------------------------------------------------------------- hostile weights
class _Exploit:
    """Unpickling this calls ``Path.write_text(marker, "pwned")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the random VGG16 guide
def test_hostile_pickles_are_refused_by_every_entry_point(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("SCL_LLE_CACHE", str(tmp_path / "empty-cache"))  # no VGG16 weights: random guide
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"e_conv1.weight": _Exploit(marker)}}, evil)
    photo = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(photo)
    assert main(["enhance", str(photo), "-o", str(tmp_path / "out"), "-w", str(evil), "-q"]) == 2
    assert "refused to load" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="refused"):
        Enhancer(evil, device="cpu")
    with pytest.raises(WeightsError, match="refused"):
        Trainer(apply_overrides(DEFAULTS, [f"model.init_weights={evil}"]), progress=False)
    checkpoints = tmp_path / "runs" / "evil" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"step": 5, "model": _Exploit(marker)}, checkpoints / "step_0000005.pt")
    config = apply_overrides(_tiny_config(tmp_path), ["name=evil"])
    with pytest.raises(WeightsError, match=r"step_0000005\.pt: refused to load"):
        Trainer(config, resume=True, progress=False)
    config_file = tmp_path / "evil.yaml"
    config_file.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["train", "--config", str(config_file), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "step_0000005.pt: refused to load" in err, err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def _safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _hostile_safetensors(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Broken safetensors files and the error each must give."""
    state = DCENet().state_dict()
    valid = _safetensors(tmp_path / "valid.safetensors", state).read_bytes()
    header = len(struct.pack("<Q", 0))
    (tmp_path / "truncated.safetensors").write_bytes(valid[: len(valid) // 2])
    (tmp_path / "giant-header.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{" + valid[header + 1 :])
    (tmp_path / "bad-json.safetensors").write_bytes(struct.pack("<Q", 16) + b"{not json at all" + b"\0" * 32)
    shapes = dict(state, **{"e_conv5.weight": torch.zeros(32, 32, 3, 3)})
    diverged = dict(state, **{"e_conv7.bias": torch.tensor([float("nan"), float("inf")] * 12)})
    return {
        "missing-key": (
            _safetensors(tmp_path / "missing-key.safetensors", {k: v for k, v in state.items() if "conv3" not in k}),
            r"missing keys \['e_conv3",
        ),
        "extra-key": (
            _safetensors(tmp_path / "extra-key.safetensors", dict(state, extra=torch.zeros(2))),
            "unexpected keys",
        ),
        "wrong-shape": (_safetensors(tmp_path / "wrong-shape.safetensors", shapes), r"e_conv5\.weight"),
        "int-dtype": (
            _safetensors(tmp_path / "int-dtype.safetensors", {k: v.to(torch.int32) for k, v in state.items()}),
            "floating point",
        ),
        "bool-dtype": (
            _safetensors(tmp_path / "bool-dtype.safetensors", {k: v > 0 for k, v in state.items()}),
            "floating point",
        ),
        "other-architecture": (
            _safetensors(tmp_path / "other-architecture.safetensors", state, {"architecture": "unet"}),
            "not a dce-net",
        ),
        "not-finite": (
            _safetensors(tmp_path / "not-finite.safetensors", diverged),
            "not finite",
        ),
        "truncated": (tmp_path / "truncated.safetensors", "not a readable weights file"),
        "giant-header": (tmp_path / "giant-header.safetensors", "not a readable weights file"),
        "bad-json": (tmp_path / "bad-json.safetensors", "not a readable weights file"),
    }


def test_broken_safetensors_give_clear_errors(tmp_path: Path, capsys):
    photo = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(photo)
    for name, (path, reason) in _hostile_safetensors(tmp_path).items():
        with pytest.raises(WeightsError, match=reason) as caught:
            load_dcenet(path)
        assert path.name in str(caught.value), name
        assert main(["enhance", str(photo), "-o", str(tmp_path / "out"), "-w", str(path), "-q"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and path.name in err, (name, err)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------- killed training
def _tiny_config(tmp_path: Path) -> dict:
    """The tiny synthetic run (tests/conftest.py), 24 steps checkpointing every 3 steps, without pictures."""
    return tiny_training_config(
        tmp_path,
        ["name=killed", "steps=24", "checkpoint_every=3", "keep_checkpoints=2", "sample_every=1000", "log_every=1"],
    )


STALLING_TRAIN = """
import io, os, sys, time
import torch
from scl_lle.cli import main

real_save = torch.save


def stalling_save(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    with open(f, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        open(os.environ["STALLED_FLAG"], "w").close()
        time.sleep(600)  # SIGKILL arrives here, half-way through writing the checkpoint


torch.save = stalling_save
sys.exit(main(sys.argv[1:]))
"""


def _checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.pt"))


def _assert_checkpoints_load(folder: Path) -> None:
    """Every checkpoint under its final name loads as the trainer loads it, and holds the step of its name."""
    for step in _checkpoint_steps(folder):
        state = torch.load(folder / f"step_{step:07d}.pt", map_location="cpu", weights_only=True)
        assert state["step"] == step


def _logged_step(log: Path) -> int:
    """The last step in ``log.jsonl`` (0 before the first)."""
    try:
        lines = log.read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (FileNotFoundError, ValueError, KeyError):  # not there yet, or a line half appended
        return 0


def _resumed_from(stderr: str) -> int | None:
    found = re.search(r"resumed from .*step_\d+\.pt \(step (\d+)\)", stderr)
    return int(found.group(1)) if found else None


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sigkill_during_training_and_checkpoint_writes_then_resume(tmp_path: Path):
    config = _tiny_config(tmp_path)
    total, every = int(config["steps"]), int(config["checkpoint_every"])
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "runs" / "killed"
    checkpoints = run_dir / "checkpoints"
    env = _env(tmp_path)
    rng = random.Random(3)
    kills, resumed_from = 0, []
    train = _cli("train", "--config", str(config_path))  # notes on: "resumed from ..." is read below

    def launch(command: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.stderr"
        with open(log, "w") as handle:
            return subprocess.Popen(command, env=env, stderr=handle, stdout=subprocess.DEVNULL), log

    # 1. Killed during training, as soon as the first checkpoint exists.
    child, _ = launch(train, "first")
    kills += _kill_when(child, lambda: bool(_checkpoint_steps(checkpoints)))
    _assert_checkpoints_load(checkpoints)
    # 2. Resumed, then killed at a random step after its next checkpoint.
    for i in range(3):
        newest = _checkpoint_steps(checkpoints)[-1]
        kill_at = newest + every + 1 + rng.randint(0, every - 2)  # after its next checkpoint, before another
        child, log = launch([*train, "--resume"], f"resume{i}")
        kills += _kill_when(child, lambda kill_at=kill_at: _logged_step(run_dir / "log.jsonl") >= kill_at)
        _assert_checkpoints_load(checkpoints)  # no checkpoint is ever corrupt
        resumed_from.append(_resumed_from(log.read_text()))
        assert resumed_from[-1] == newest  # it went on from the newest complete checkpoint
    # 3. Killed half-way through writing a checkpoint.
    newest = _checkpoint_steps(checkpoints)[-1]
    assert newest + every < total
    stalling = tmp_path / "stalling_train.py"
    stalling.write_text(STALLING_TRAIN)
    flag = tmp_path / "stalled"
    env["STALLED_FLAG"] = str(flag)
    child, log = launch([sys.executable, str(stalling), *train[3:], "--resume"], "stalled")
    assert _kill_when(child, flag.exists)
    kills += 1
    _assert_checkpoints_load(checkpoints)
    assert _checkpoint_steps(checkpoints)[-1] == newest  # the half-written one exists only as a temporary file
    assert _has_partial_temporary(checkpoints)
    resumed_from.append(_resumed_from(log.read_text()))
    # 4. Resumed to the end.
    final = subprocess.run([*train, "--resume"], env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert final.returncode == 0, final.stderr[-3000:]
    resumed_from.append(_resumed_from(final.stderr))
    assert resumed_from[-2:] == [newest, newest]
    assert kills == 5
    _assert_checkpoints_load(checkpoints)
    assert _checkpoint_steps(checkpoints)[-1] == total
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, total + 1))  # every step logged exactly once
    assert load_dcenet(run_dir / "model.safetensors").iterations == 8
    assert not _temporaries(run_dir)
    print(
        f"\nreliability: training survived {kills} SIGKILLs (1 half-way through a checkpoint write), resumed "
        f"from steps {resumed_from}; {total}/{total} steps logged exactly once; corrupt checkpoints: 0"
    )


# ------------------------------------------------------------------------------------------ non-finite losses
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_losses_and_gradients_skip_steps_and_stop_after_max_bad_steps_in_a_row(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCL_LLE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    trainer = Trainer(apply_overrides(_tiny_config(tmp_path), ["max_bad_steps=3"]), progress=False)
    real = trainer.objective.forward
    # "grad": a finite loss whose gradient is NaN (the square root of an exact 0)
    poison = iter(["inf", "nan", "ok", "-inf", "grad", "ok", "grad", "inf", "nan"])

    def poisoned(**kwargs):
        total, terms = real(**kwargs)
        kind = next(poison)
        if kind == "grad":
            zero = (kwargs["enhanced"] - kwargs["enhanced"].detach()).abs().sum()
            return total + zero.sqrt(), terms
        return (total if kind == "ok" else total * float(kind)), terms

    monkeypatch.setattr(trainer.objective, "forward", poisoned)
    outcomes = []
    with pytest.warns(UserWarning, match="non-finite") as warned:
        for _ in range(8):
            before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            row = trainer.train_step()
            unchanged = all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
            assert unchanged == (row is None)  # a skipped step leaves the weights as they were
            outcomes.append(row is not None)
        with pytest.raises(FloatingPointError, match="3 non-finite losses or gradients in a row"):
            trainer.train_step()
    assert outcomes == [False, False, True, False, False, True, False, False]  # two in a row never stop it
    assert trainer.step == 8
    messages = [str(w.message) for w in warned]
    assert sum("non-finite loss" in m for m in messages) == 5
    assert sum("non-finite gradient" in m for m in messages) == 2
    assert all(bool(torch.isfinite(v).all()) for v in trainer.model.state_dict().values())
