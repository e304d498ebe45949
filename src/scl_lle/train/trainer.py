"""Training: the SCL-LLE objective on synthetic low-light street scenes, resumable and distributed.

One call, :func:`train`, runs an experiment described by a config (see :mod:`scl_lle.train.config`):

- data: :mod:`scl_lle.train.data` draws the batch for step ``s`` as a pure function of (seed, rank, s), so a resumed
  run sees exactly the batches an uninterrupted one would;
- objective: :class:`scl_lle.train.objective.SCLObjective` with the frozen guides (VGG16 features, ESPNet segmenter);
- loop: Adam with gradient-norm clipping, optional warm-up and cosine schedule, AMP on CUDA, fp32 on CPU;
  non-finite losses or gradients skip the step (and stop training after ``max_bad_steps`` in a row);
- outputs under ``<output_root>/<name>/``: ``checkpoints/step_XXXXXXX.pt`` (atomic), ``log.jsonl``, TensorBoard
  scalars (``tb/``, when the ``tensorboard`` package is installed), ``loss_curve.png``, before/after sample grids
  (``samples/``), validation (NIQE and mean brightness on a folder) and the final ``model.safetensors``;
- distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the enhancer is wrapped in DistributedDataParallel
  (NCCL on CUDA, gloo on CPU); each rank draws its own data; rank 0 writes the outputs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..engine.backends import resolve_device, shard_from_env
from ..io.files import atomic_write, remove_stale_temporaries
from ..models.dcenet import DCENet
from ..models.hub import load_dcenet, save_weights
from . import validation
from .checkpoints import newest_readable, write_checkpoint
from .config import expand_path, load_config
from .data import build_batches
from .exposure import exposure_setting, scored_at_exposure
from .objective import LossSettings, LossWeights, SCLObjective
from .optim import amp_dtype, learning_rate_factor
from .runlog import RunLog

_log = logging.getLogger(__name__)

__all__ = ["Trainer", "train"]


class _WithMaps(nn.Module):
    """Makes ``forward`` return (enhanced, curve maps), so DistributedDataParallel hooks the right call."""

    def __init__(self, model: DCENet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_maps(image)


class Trainer:
    """Holds the state of one training run; :meth:`run` trains to ``config['steps']``.

    Args:
        config: a full config (from :func:`scl_lle.train.config.load_config`).
        resume: continue from the newest complete checkpoint in the run folder (error if there is none).
        progress: show a progress bar (rank 0).
    """

    def __init__(self, config: dict[str, Any], *, resume: bool = False, progress: bool = True) -> None:
        self.config = config
        self.rank, self.world = shard_from_env()
        device = resolve_device(config["device"])  # cuda:LOCAL_RANK under torchrun
        if device.type == "cuda" and self.world > 1:
            torch.cuda.set_device(device)
        self.device = device
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if config["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
        self.progress = progress and self.rank == 0
        self.run_dir = expand_path(config["output_root"]) / config["name"]
        self.checkpoint_dir = self.run_dir / "checkpoints"

        torch.manual_seed(int(config["seed"]))  # same initial weights on every rank
        self.model = self._build_model().to(device)
        self.net: nn.Module = _WithMaps(self.model)
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device] if device.type == "cuda" else None
            )
        optim = config["optim"]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
        self.ema_decay = float(optim["ema_decay"])
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if self.ema_decay > 0 else None
        self.amp_dtype = amp_dtype(str(config["amp"]), device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.loss = LossSettings.from_config(config["loss"])
        self.segmenter = self._build_segmenter(self.loss.weights)
        vgg = self._build_vgg(self.loss.weights)
        self.batches = build_batches(
            config["data"],
            batch_size=int(config["batch_size"]),
            device=device,
            seed=int(config["seed"]),
            rank=self.rank,
        )
        void_index = self.batches.labelled.void_index
        self.objective = SCLObjective(self.loss, vgg=vgg, segmenter=self.segmenter, void_index=void_index).to(device)
        self.exposure = exposure_setting(config["exposure"])
        self.step = 0  # steps completed
        self.best: dict[str, float] | None = None  # the best validation so far (see _better)
        self._validation_images: list[torch.Tensor] | None = None
        self.log = RunLog(self.run_dir, write=self.rank == 0)
        self.bad_steps = 0
        if resume:
            self._resume()

    @property
    def served(self) -> DCENet:
        """The model that is exported, validated and shown: the weight average when ``optim.ema_decay`` > 0."""
        return self.ema if self.ema is not None else self.model

    # ------------------------------------------------------------------------------------------ building
    def _build_model(self) -> DCENet:
        cfg = self.config["model"]
        if cfg["init_weights"]:
            return load_dcenet(expand_path(cfg["init_weights"]))
        model = DCENet(channels=int(cfg["channels"]), iterations=int(cfg["iterations"]))
        for module in model.modules():  # the release's initialisation: conv weights ~ N(0, 0.02)
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, float(cfg["init_std"]))
        return model

    def _build_vgg(self, weights: LossWeights) -> nn.Module | None:
        if not (weights.texture or weights.feature):
            return None
        from ..models.vgg import VGG16Features

        cfg = self.config["guides"]["vgg16"]
        path = cfg["weights"] if cfg["weights"] in (None, "random") else expand_path(cfg["weights"])
        layers = ("relu1_2", "relu2_2", "relu4_3") if weights.feature else ("relu1_2", "relu2_2")
        return VGG16Features(path, layers=layers, allow_random_init=bool(cfg["allow_random_init"])).to(self.device)

    def _build_segmenter(self, weights: LossWeights) -> nn.Module | None:
        cfg = self.config["guides"]["segmenter"]
        needed = weights.segmentation or self.loss.pseudo_labels
        if not needed and not cfg["weights"]:
            return None
        if not cfg["weights"]:
            raise ValueError("the segmentation loss needs guides.segmenter.weights (a path to ESPNet weights)")
        from ..models.segmenter import load_segmenter

        return load_segmenter(cfg["name"], expand_path(cfg["weights"]), device=self.device)

    # ---------------------------------------------------------------------------------------- checkpoints
    def _resume(self) -> None:
        """Load the newest readable checkpoint; unreadable newer ones are skipped (and said so on stderr)."""
        if self.rank == 0:  # a run killed while writing leaves temporary files (never a partial checkpoint)
            remove_stale_temporaries(self.run_dir)
        path, state, skipped = newest_readable(self.checkpoint_dir, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.log.restore(state["history"])  # log.jsonl (rank 0) holds exactly the checkpoint's rows again
        self.bad_steps = int(state.get("bad_steps", 0))
        self.best = state.get("best")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
        if self.rank == 0:
            for skipped_path, error in skipped:
                _log.warning("skipped %s: %s", skipped_path, str(error).removeprefix(f"--resume: {skipped_path}: "))
            _log.info("resumed from %s (step %d)", path, self.step)

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_XXXXXXX.pt`` atomically (rank 0); keep the newest ``keep_checkpoints``."""
        if self.rank != 0:
            return None
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.log.history,
            "bad_steps": self.bad_steps,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": self.best,
            "config": json.dumps(self.config, sort_keys=True, default=str),
        }
        return write_checkpoint(self.checkpoint_dir, state, keep=int(self.config["keep_checkpoints"]))

    # -------------------------------------------------------------------------------------------- loop
    def _pseudo_labels(self, batch: Any) -> torch.Tensor:
        labels = batch.labels
        if self.loss.pseudo_labels and self.segmenter is not None and not bool(batch.labelled.all()):
            with torch.no_grad():
                predicted = self.segmenter.predict(batch.low)
            labels = torch.where(batch.labelled[:, None, None], labels, predicted)
        return labels

    def train_step(self) -> dict[str, float] | None:
        """One optimisation step on the batch of the current step; returns the logged values (or None)."""
        batch = self.batches.batch(self.step)
        labels = self._pseudo_labels(batch)
        labelled = batch.labelled | bool(self.loss.pseudo_labels)
        factor = learning_rate_factor(self.step, self.config["optim"], int(self.config["steps"]))
        for group in self.optimizer.param_groups:
            group["lr"] = self.config["optim"]["lr"] * factor
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        with autocast:
            enhanced, maps = self.net(batch.low)
            if self.exposure != "off":
                draws = torch.Generator().manual_seed(int(self.config["seed"]) * 1_000_003 + self.step)
                enhanced = scored_at_exposure(
                    batch.low, maps, self.exposure, float(self.config["exposure_share"]), draws
                )
            total, terms = self.objective(
                low=batch.low,
                enhanced=enhanced.float(),
                curve_maps=maps.float(),
                positives=batch.positives,
                negatives=batch.negatives,
                labels=labels,
                labelled=labelled,
            )
        self.optimizer.zero_grad(set_to_none=True)
        finite = torch.isfinite(total.detach())
        if self.world > 1:  # every rank must agree to skip, or DDP would hang
            flag = finite.float().to(self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag > 0
        if not bool(finite):
            return self._skip_step("loss")
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.config["optim"]["grad_clip"]))
        # A finite loss can still have NaN/inf gradients (a square root at 0); stepping would poison every weight.
        # Gradients are already averaged across ranks, so all agree. (With fp16 the scaler skips such steps itself.)
        if not self.scaler.is_enabled() and not bool(torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip_step("gradient")
        self.bad_steps = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))  # short memory at the start
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)
        self.step += 1
        row = {"step": self.step, "loss": float(total.detach()), "lr": self.optimizer.param_groups[0]["lr"]}
        row |= {f"loss/{k}": float(v) for k, v in terms.items()}
        row["grad_norm"] = float(grad_norm)
        row["brightness"] = float(enhanced.detach().float().mean())
        return row

    def _skip_step(self, what: str) -> None:
        """Skip the current step after a non-finite loss or gradient; stop after ``max_bad_steps`` in a row."""
        self.bad_steps += 1
        warnings.warn(f"step {self.step}: non-finite {what}, step skipped ({self.bad_steps} in a row)", stacklevel=3)
        if self.bad_steps >= int(self.config["max_bad_steps"]):
            raise FloatingPointError(f"{self.bad_steps} non-finite losses or gradients in a row; stopping")
        self.step += 1

    def run(self) -> Path:
        """Train until ``steps`` (or ``stop_after``); returns the path of the exported ``model.safetensors``.

        ``stop_after`` ends the run early on the schedule of the full ``steps`` (learning rate, warm-up), so a
        short run equals the first part of the long one; it can be resumed later with a larger ``stop_after``.
        """
        from tqdm import tqdm

        total = int(self.config["steps"])
        if self.config.get("stop_after") is not None:
            total = min(total, int(self.config["stop_after"]))
        every = {k: int(self.config[k]) for k in ("log_every", "checkpoint_every", "sample_every")}
        val_every = int(self.config["validation"]["every"])
        started = time.perf_counter()
        bar = tqdm(
            total=total, initial=self.step, desc="train", unit="step", disable=not self.progress, file=sys.stderr
        )
        while self.step < total:
            row = self.train_step()
            bar.update(1)
            if row is not None and (self.step % every["log_every"] == 0 or self.step == total):
                row["seconds"] = time.perf_counter() - started
                self.log.append(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", bright=f"{row['brightness']:.2f}")
            if self.step % every["sample_every"] == 0 or self.step == total:
                self.write_samples()
            if self.config["validation"]["folder"] and (self.step % val_every == 0 or self.step == total):
                self.validate()
            if self.step % every["checkpoint_every"] == 0 or self.step == total:
                self.save_checkpoint()
                self.log.plot(self.config["name"])
        bar.close()
        self._check_ranks_agree()
        final = self.run_dir / "model.safetensors"
        if self.rank == 0:
            info = {"steps": str(self.step), "ema_decay": str(self.ema_decay)}
            save_weights(self.served, final, config=self.config, metadata=info)
            _log.info("%d steps; weights in %s", self.step, final)
        self.log.close()
        return final

    # ------------------------------------------------------------------------------------- pictures etc.
    def write_samples(self) -> Path | None:
        """A before/after grid of the current batch's first images (``samples/step_XXXXXXX.png``)."""
        if self.rank != 0:
            return None
        from ..evaluation.report import save_grid, thumbnail

        batch = self.batches.batch(0)  # the same images every time, to compare across steps
        with torch.no_grad():
            enhanced = self.served(batch.low[:4])
        rows = [(f"#{i}", [thumbnail(batch.low[i]), thumbnail(enhanced[i])]) for i in range(len(enhanced))]
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        save_grid(path, ["input", f"step {self.step}"], rows, f"{self.config['name']}: synthetic low-light inputs")
        return path

    def validate(self) -> dict[str, float] | None:
        """NIQE and mean brightness of the enhanced validation folder, logged as ``val/*`` (rank 0).

        The served model is scored (:func:`scl_lle.train.validation.score`); the best so far (:meth:`_better`) is
        kept as ``best.safetensors``.
        """
        if self.rank != 0:
            return None
        if self._validation_images is None:  # read once
            self._validation_images = validation.load_images(self.config["validation"])
        row = {"step": self.step, **validation.score(self.served, self._validation_images, self.device, self.exposure)}
        self.log.append(row)
        if self._better(row):
            self.best = dict(row)
            with atomic_write(self.run_dir / "best.json") as temporary:
                temporary.write_text(json.dumps(self.best, indent=1) + "\n")
            save_weights(
                self.served, self.run_dir / "best.safetensors", config=self.config, metadata={"steps": str(self.step)}
            )
        return row

    def _better(self, row: dict[str, float]) -> bool:
        """Whether ``row`` beats the best validation so far (:func:`scl_lle.train.validation.better`)."""
        return validation.better(row, self.best, self.config["validation"]["brightness_range"])

    def _check_ranks_agree(self) -> None:
        """Under DDP, verify every rank ends with identical parameters (raises if not)."""
        if self.world <= 1:
            return
        flat = torch.cat([p.detach().flatten().double() for p in self.model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], other) for other in gathered[1:]):
            raise RuntimeError("parameters differ across ranks after training")
        if self.rank == 0:
            _log.info("parameters identical across %d ranks", self.world)


def train(
    config: dict[str, Any] | str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run an experiment: ``config`` is a YAML path or a config dict; returns the final weights path."""
    if not isinstance(config, dict):
        config = load_config(config, overrides)
    elif overrides:
        from .config import apply_overrides

        config = apply_overrides(config, overrides)
    trainer = Trainer(config, resume=resume, progress=progress)
    try:
        return trainer.run()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
