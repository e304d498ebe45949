"""Training: the smoke recipe runs and its weights enhance; resume is exact; DDP ranks agree; bad losses skip."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import tiny_training_config
from scl_lle import Enhancer
from scl_lle.models.hub import WeightsError, load_dcenet
from scl_lle.train.config import apply_overrides, load_config
from scl_lle.train.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_config(tmp_path: Path) -> dict:
    return tiny_training_config(
        tmp_path, [f"validation.folder={tmp_path / 'data' / 'validation'}", "validation.every=10"]
    )


@pytest.fixture
def random_vgg(monkeypatch, tmp_path: Path) -> None:
    """No VGG16 weights anywhere: the config's explicit allow_random_init applies (deterministic via the seed)."""
    monkeypatch.setenv("SCL_LLE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_dcenet(path).state_dict()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_resume_gives_identical_weights(tiny_config: dict, random_vgg: None):
    straight = train(apply_overrides(tiny_config, ["name=straight"]), progress=False)
    half = apply_overrides(tiny_config, ["name=resumed", "steps=10"])
    train(half, progress=False)
    resumed = train(apply_overrides(half, ["steps=20"]), resume=True, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    run = straight.parent
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000010.pt", "step_0000020.pt"]
    assert (run / "loss_curve.png").is_file() and (run / "samples" / "step_0000020.png").is_file()
    rows = [yaml.safe_load(line) for line in (resumed.parent / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [5, 10, 15, 20]
    assert [row["step"] for row in rows if "val/brightness" in row] == [10, 20]
    assert (run / "best.safetensors").is_file() and (run / "best.json").is_file()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exported_weights_are_the_moving_average(tiny_config: dict, random_vgg: None):
    trainer = Trainer(apply_overrides(tiny_config, ["steps=3", "validation.folder=null"]), progress=False)
    final = trainer.run()
    exported = _weights(final)
    assert all(torch.equal(exported[k], v) for k, v in trainer.ema.state_dict().items())
    assert not all(torch.equal(exported[k], v) for k, v in trainer.model.state_dict().items())


def test_best_validation_is_brightness_aware(tiny_config: dict, random_vgg: None):
    trainer = Trainer.__new__(Trainer)  # only the selection rule is exercised
    trainer.config, trainer.best = tiny_config, None
    dark_but_clean = {"val/brightness": 0.2, "val/niqe": 3.0}
    in_range = {"val/brightness": 0.45, "val/niqe": 6.0}
    in_range_better = {"val/brightness": 0.5, "val/niqe": 5.0}
    too_bright = {"val/brightness": 0.8, "val/niqe": 2.0}
    assert trainer._better(dark_but_clean)
    trainer.best = dark_but_clean
    assert trainer._better(in_range)  # inside the range beats any NIQE outside it
    trainer.best = in_range
    assert not trainer._better(too_bright) and not trainer._better(dark_but_clean)
    assert trainer._better(in_range_better)
    trainer.best = too_bright
    assert trainer._better({"val/brightness": 0.6, "val/niqe": 9.0})  # closer to the range


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_resume_without_checkpoint_is_an_error(tiny_config: dict, random_vgg: None):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(tiny_config, resume=True, progress=False)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The config of a finished tiny run of 4 steps with checkpoints at steps 2 and 4 (tests work on copies)."""
    root = tmp_path_factory.mktemp("two_checkpoints")
    config = tiny_training_config(
        root, ["steps=4", "checkpoint_every=2", "sample_every=1000", "validation.folder=null"]
    )
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the random VGG16 guide
        patch.setenv("SCL_LLE_CACHE", str(root / "empty-cache"))
        patch.setenv("TORCH_HOME", str(root / "empty-torch"))
        train(config, progress=False)
    names = sorted(p.name for p in (root / "runs" / "tiny" / "checkpoints").iterdir())
    assert names == ["step_0000002.pt", "step_0000004.pt"]
    return config


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    corrupted = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "random bytes": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    path.write_bytes(corrupted[how])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("how", ["truncated", "empty", "random bytes"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(
    two_checkpoints: dict, how: str, tmp_path: Path, random_vgg: None, caplog
):
    shutil.copytree(two_checkpoints["output_root"], tmp_path / "runs")
    checkpoints = tmp_path / "runs" / "tiny" / "checkpoints"
    older, newest = checkpoints / "step_0000002.pt", checkpoints / "step_0000004.pt"
    _corrupt(newest, how)
    config = apply_overrides(two_checkpoints, [f"output_root={tmp_path / 'runs'}"])
    with caplog.at_level(logging.INFO, logger="scl_lle.train.trainer"):
        trainer = Trainer(config, resume=True, progress=False)
    assert trainer.step == 2
    saved = torch.load(older, weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items())
    told = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "scl_lle.train.trainer"]
    assert len(told) == 2, told
    assert told[0][0] == logging.WARNING and told[0][1].startswith(f"skipped {newest}: "), told
    assert told[1] == (logging.INFO, f"resumed from {older} (step 2)"), told
    _corrupt(older, "empty")
    with pytest.raises(WeightsError, match=r"step_0000004\.pt"):  # none readable: the newest one's error
        Trainer(config, resume=True, progress=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_losses_skip_then_stop(tiny_config: dict, random_vgg: None, monkeypatch):
    trainer = Trainer(apply_overrides(tiny_config, ["max_bad_steps=3"]), progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    real = trainer.objective.forward

    def poisoned(**kwargs):
        total, terms = real(**kwargs)
        return total * float("nan"), terms

    monkeypatch.setattr(trainer.objective, "forward", poisoned)
    with pytest.warns(UserWarning, match="non-finite loss"):
        assert trainer.train_step() is None
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError, match="3 non-finite"):
        trainer.train_step()
        trainer.train_step()


def test_torchrun_two_ranks_agree(tiny_config: dict, tmp_path: Path):
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(apply_overrides(tiny_config, ["steps=4", "name=ddp"])))
    env = {
        **os.environ,
        "SCL_LLE_CACHE": str(tmp_path / "c"),
        "TORCH_HOME": str(tmp_path / "t"),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531"]
    command += ["-m", "scl_lle", "train", "--config", str(config_path)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "parameters identical across 2 ranks" in run.stderr
    assert (tmp_path / "runs" / "ddp" / "model.safetensors").is_file()


@pytest.fixture(scope="session")
def vgg16_available() -> None:
    from scl_lle.models.assets import AssetFetchError, fetch_asset, locate_asset

    try:
        locate_asset("vgg16")
    except FileNotFoundError:
        try:
            fetch_asset("vgg16", progress=False)
        except AssetFetchError as error:
            pytest.skip(f"VGG16 weights unavailable and cannot be fetched: {error}")


def test_smoke_recipe_trains_on_the_cpu_and_enhances(shared: Path, vgg16_available: None, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCL_LLE_SHARED", str(shared))
    config = load_config(REPO / "configs" / "smoke.yaml", [f"output_root={tmp_path}"])
    started = time.perf_counter()
    weights = train(config, progress=False)
    assert time.perf_counter() - started < 180
    run = weights.parent
    assert (run / "loss_curve.png").is_file() and list((run / "tb").iterdir())
    assert any("val/niqe" in line for line in (run / "log.jsonl").read_text().splitlines())
    dark = Image.open(shared / "data" / "eval_LOLv1_eval15_low" / "images_cut600x396_SGZ" / "1.png").convert("RGB")
    x = torch.from_numpy(np.asarray(dark, np.float32) / 255).permute(2, 0, 1)[None]
    y = Enhancer(weights, device="cpu")(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert y.mean() > x.mean()  # the smoke model already brightens a real dark photo


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_unlabelled_lows_get_pseudo_labels(tiny_config: dict, random_vgg: None, tmp_path: Path):
    from scl_lle.models.segmenter import SEGMENTERS

    torch.manual_seed(0)
    segmenter_weights = tmp_path / "espnet.pth"
    torch.save(SEGMENTERS["espnet-camvid"].build().state_dict(), segmenter_weights)
    config = apply_overrides(
        tiny_config,
        [
            f"data.unlabelled=[{tmp_path / 'data' / 'under'}]",
            "data.unlabelled_per_batch=1",
            "loss.pseudo_labels=true",
            "loss.weights.segmentation=1",
            f"guides.segmenter.weights={segmenter_weights}",
        ],
    )
    trainer = Trainer(config, progress=False)
    batch = trainer.batches.batch(0)
    assert batch.low.shape[0] == 3 and batch.labelled.tolist() == [True, True, False]
    labels = trainer._pseudo_labels(batch)
    assert torch.equal(labels[:2], batch.labels[:2])
    assert bool((labels[2] != batch.labels[2]).any())  # the real low image got predicted labels, not void
    row = trainer.train_step()
    assert row is not None and row["loss/segmentation"] > 0


def test_smoke_recipe_resume_is_exact(shared: Path, vgg16_available: None, tmp_path: Path, monkeypatch):
    """The acceptance check on the real recipe (VGG16, ESPNet, real data): 20 steps == 10 + resume + 10."""
    monkeypatch.setenv("SCL_LLE_SHARED", str(shared))
    base = [f"output_root={tmp_path}", "validation.folder=null", "sample_every=1000", "checkpoint_every=10"]
    straight = train(load_config(REPO / "configs" / "smoke.yaml", [*base, "steps=20", "name=a"]), progress=False)
    half = load_config(REPO / "configs" / "smoke.yaml", [*base, "steps=10", "name=b"])
    train(half, progress=False)
    resumed = train(apply_overrides(half, ["steps=20"]), resume=True, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_stop_after_is_the_first_part_of_the_long_run(tiny_config: dict, random_vgg: None):
    config = apply_overrides(
        tiny_config, ["validation.folder=null", "steps=8", "checkpoint_every=4", "log_every=2", "optim.schedule=cosine"]
    )
    long_run = Trainer(apply_overrides(config, ["name=long"]), progress=False)
    long_run.run()
    short = train(apply_overrides(config, ["name=short", "stop_after=4"]), progress=False)
    assert sorted(p.name for p in (short.parent / "checkpoints").iterdir()) == ["step_0000004.pt"]
    state = torch.load(long_run.checkpoint_dir / "step_0000004.pt", weights_only=True)
    short_state = torch.load(short.parent / "checkpoints" / "step_0000004.pt", weights_only=True)
    assert all(torch.equal(state["ema"][k], short_state["ema"][k]) for k in state["ema"])
    assert all(torch.equal(state["ema"][k], v) for k, v in _weights(short).items())

    def rates(run: Path) -> list[float]:
        return [row["lr"] for row in map(yaml.safe_load, (run / "log.jsonl").read_text().splitlines())]

    assert rates(short.parent) == rates(long_run.run_dir)[:2]  # the cosine schedule of the full 8 steps
    assert rates(short.parent)[-1] < 1e-3


def test_scored_at_exposure_brings_the_batch_to_a_fixed_level():
    """share 1: every image at the level's mean brightness (gradient to the maps); share 0: full-strength curves."""
    from scl_lle.train.exposure import exposure_setting, scored_at_exposure

    generator = torch.Generator().manual_seed(0)
    low = torch.rand(3, 3, 24, 32, generator=generator) * torch.tensor([0.1, 0.2, 0.3])[:, None, None, None]
    maps = (-0.2 - 0.3 * torch.rand(3, 24, 24, 32, generator=generator)).requires_grad_(True)
    level = exposure_setting(0.45)
    out = scored_at_exposure(low, maps, level, 1.0, torch.Generator().manual_seed(1))
    assert out.shape == low.shape and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out.mean(dim=(1, 2, 3)), torch.full((3,), 0.45), atol=0.02), out.mean(dim=(1, 2, 3))
    out.mean().backward()
    assert maps.grad is not None and bool(maps.grad.abs().sum() > 0)
    full = low
    for r in maps.detach().split(3, dim=1):  # the curves at full strength, x <- x + r (x^2 - x)
        full = full + r * (full * full - full)
    for share_zero in (
        scored_at_exposure(low, maps.detach(), level, 0.0, torch.Generator().manual_seed(1)),
        scored_at_exposure(low, maps.detach(), exposure_setting("off"), 1.0, torch.Generator().manual_seed(1)),
    ):
        assert torch.equal(share_zero, full)
    assert exposure_setting([0.3, 0.5]) == (0.3, 0.5)
    with pytest.raises(ValueError, match="range"):
        exposure_setting([0.5, 0.3])
