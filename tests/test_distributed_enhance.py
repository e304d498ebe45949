"""``torchrun -m scl_lle enhance``: disjoint shards per rank, every input enhanced exactly once, resumable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scl_lle import enhance
from scl_lle.engine.backends import shard_from_env
from scl_lle.io.files import TEMP_SUFFIX

REPO = Path(__file__).resolve().parents[1]


def _photos(root: Path, count: int = 6) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = root / ("sub" if i % 3 == 2 else "") / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 60, (12 + i, 16, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    return subprocess.run(
        [*command, "-m", "scl_lle", "enhance", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def _summaries(stderr: str) -> dict[int, tuple[int, int, int]]:
    found = re.findall(r"\[rank (\d)/2\] (\d+) enhanced, (\d+) skipped, (\d+) failed", stderr)
    return {int(rank): (int(a), int(b), int(c)) for rank, a, b, c in found}


def test_torchrun_shards_every_input_exactly_once(tmp_path: Path, weights_file: Path):
    sources = _photos(tmp_path / "in")
    out = tmp_path / "out"
    args = [str(tmp_path / "in"), "-o", str(out), "-w", str(weights_file), "-r", "-q"]
    run = _torchrun(args, tmp_path)
    assert run.returncode == 0, run.stderr
    summaries = _summaries(run.stderr)
    assert set(summaries) == {0, 1}, run.stderr
    assert sum(s[0] for s in summaries.values()) == len(sources)
    assert all(s[0] == 3 and s[1:] == (0, 0) for s in summaries.values())  # 6 jobs, modulo 2: 3 each
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "in").as_posix() for p in sources)
    assert not list(out.rglob(f"*{TEMP_SUFFIX}"))
    for path in out.rglob("*.png"):
        Image.open(path).load()

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    rerun = _torchrun([*args, "--skip-existing"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert _summaries(rerun.stderr) == {0: (0, 3, 0), 1: (0, 3, 0)}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def test_shards_are_disjoint_and_cover_the_sorted_jobs(tmp_path: Path, weights_file: Path):
    _photos(tmp_path / "in", count=7)
    names: list[list[str]] = []
    for rank in range(3):
        result = enhance(
            [tmp_path / "in"],
            tmp_path / "out",
            weights=weights_file,
            device="cpu",
            recursive=True,
            progress=False,
            rank=rank,
            world_size=3,
        )
        assert result.ok and f"[rank {rank}/3]" in result.summary()
        names.append(sorted(p.relative_to(tmp_path / "out").as_posix() for p in result.written))
    everything = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert sorted(name for shard in names for name in shard) == everything and len(everything) == 7
    assert [len(n) for n in names] == [3, 2, 2]
    ordered = sorted(everything)
    for rank in range(3):
        assert names[rank] == sorted(ordered[rank::3])


def test_shard_from_env(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert shard_from_env() == (0, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert shard_from_env() == (1, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK"):
        shard_from_env()
