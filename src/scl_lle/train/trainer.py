"""Training: the SCL-LLE objective on synthetic low-light street scenes, resumable and distributed.

One call, :func:`train`, runs an experiment described by a config (see :mod:`scl_lle.train.config`):

- data: :mod:`scl_lle.train.data` draws the batch for step ``s`` as a pure function of (seed, rank, s), so a resumed
  run sees exactly the batches an uninterrupted one would;
- objective: :class:`scl_lle.train.losses.SCLObjective` with the frozen guides (VGG16 features, ESPNet segmenter);
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
import math
import os
import pickle
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..engine.backends import shard_from_env
from ..engine.enhancer import resolve_device
from ..io.files import atomic_write, remove_stale_temporaries
from ..models.dcenet import DCENet
from ..models.hub import WeightsError, _first_line, inspect_pickle, load_dcenet, save_weights
from .config import expand_path, load_config

_log = logging.getLogger(__name__)

__all__ = ["Trainer", "train"]


class _WithMaps(nn.Module):
    """Makes ``forward`` return (enhanced, curve maps), so DistributedDataParallel hooks the right call."""

    def __init__(self, model: DCENet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_maps(image)


def _exposure_setting(value: Any) -> str | float | tuple[float, float]:
    """The training config's ``exposure``: ``"off"``, ``"auto"``, a level or a ``(low, high)`` range of levels."""
    from ..engine.exposure import parse_exposure

    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"exposure: a range is [low, high], got {value!r}")
        low, high = (parse_exposure(v) for v in value)
        if isinstance(low, str) or isinstance(high, str) or not low <= high:
            raise ValueError(f"exposure: a range is [low, high] with 0 < low <= high < 1, got {value!r}")
        return (low, high)
    return parse_exposure(value)


def scored_at_exposure(
    low: torch.Tensor,
    maps: torch.Tensor,
    setting: str | float | tuple[float, float],
    share: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The enhanced batch as the enhancer serves it at an exposure ``setting``, for the losses to score.

    Args:
        low: ``(B, 3, H, W)`` inputs in [0, 1].
        maps: ``(B, 3n, H, W)`` curve maps of ``low`` in [-1, 1] (with their gradient).
        setting: ``"off"`` (full strength), ``"auto"`` (:func:`~scl_lle.engine.exposure.auto_target`), a level, or a
            ``(low, high)`` range from which a level is drawn per image.
        share: the fraction of images (drawn per image) scored at ``setting``; the others at full strength.
        generator: the CPU generator the draws come from (deterministic per step).

    Returns:
        ``(B, 3, H, W)`` in [0, 1]: the curves with each image's maps times its gain (solved without gradient,
        :func:`~scl_lle.engine.exposure.solve_gain`), clipped to [-1, 1]; the gradient reaches ``maps``.
    """
    from ..engine.exposure import AUTO, OFF, auto_target, scale_maps, solve_gain
    from ..models.dcenet import apply_curves

    if setting == OFF or share <= 0:
        return apply_curves(low, maps)
    batch = low.shape[0]
    draws = torch.rand(2, batch, generator=generator).to(low.device)
    with torch.no_grad():
        if setting == AUTO:
            target = auto_target(low.float())
        elif isinstance(setting, tuple):
            target = setting[0] + draws[1] * (setting[1] - setting[0])
        else:
            target = torch.full((batch,), float(setting), device=low.device)
        gain = solve_gain(low, maps.detach(), target)
        gain = torch.where(draws[0] < share, gain, torch.ones_like(gain))
    return apply_curves(low, scale_maps(maps, gain))


def _amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    if setting == "off" or device.type != "cuda":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _learning_rate_factor(step: int, optim: dict[str, Any], total: int) -> float:
    warmup = int(optim["warmup_steps"])
    if warmup and step < warmup:
        return (step + 1) / warmup
    if optim["schedule"] == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        floor = float(optim["min_lr_ratio"])
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if optim["schedule"] != "constant":
        raise ValueError(f"optim.schedule must be constant or cosine, got {optim['schedule']!r}")
    return 1.0


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A training checkpoint written by :meth:`Trainer.save_checkpoint`, loaded with ``weights_only=True``.

    Raises :class:`~scl_lle.models.hub.WeightsError` (one line: ``--resume: <path>: <reason>``) for a file holding
    Python objects other than tensors and plain containers (refused without running them), and for one that is
    empty, truncated, damaged or not a checkpoint (found before any tensor data is read, where the file shows it).
    """
    try:
        inspect_pickle(path, kind="checkpoint")
        state = torch.load(path, map_location=device, weights_only=True)
    except WeightsError as error:
        raise WeightsError(f"--resume: {error}") from None
    except pickle.UnpicklingError as error:
        raise WeightsError(
            f"--resume: {path}: refused to load: it contains Python objects that could run code when unpickled "
            f"(weights_only=True). Details: {_first_line(error)}"
        ) from None
    except Exception as error:  # damaged in a way the inspection could not see
        raise WeightsError(f"--resume: {path}: not a readable checkpoint ({_first_line(error)})") from None
    missing = [
        k for k in ("step", "model", "optimizer", "scaler", "history") if not isinstance(state, dict) or k not in state
    ]
    if missing:
        raise WeightsError(f"--resume: {path}: not a scl-lle training checkpoint (missing {', '.join(missing)})")
    return state


class Trainer:
    """Holds the state of one training run; :meth:`run` trains to ``config['steps']``.

    Args:
        config: a full config (from :func:`scl_lle.train.config.load_config`).
        resume: continue from the newest complete checkpoint in the run folder (error if there is none).
        progress: show a progress bar (rank 0).
    """

    def __init__(self, config: dict[str, Any], *, resume: bool = False, progress: bool = True) -> None:
        from .data import build_batches
        from .losses import LossWeights, SCLObjective

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
        self.amp_dtype = _amp_dtype(str(config["amp"]), device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        loss_cfg = config["loss"]
        known = {f.name for f in fields(LossWeights)}
        unknown = set(loss_cfg["weights"]) - known
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(known)}")
        weights = LossWeights(**loss_cfg["weights"])
        self.segmenter = self._build_segmenter(weights)
        vgg = self._build_vgg(weights)
        self.batches = build_batches(
            config["data"],
            batch_size=int(config["batch_size"]),
            device=device,
            seed=int(config["seed"]),
            rank=self.rank,
        )
        void = self.batches.labelled.void_index
        num_classes = loss_cfg["num_classes"] or (self.segmenter.num_classes if self.segmenter else void + 1)
        self.objective = SCLObjective(
            weights,
            vgg=vgg,
            segmenter=self.segmenter,
            num_classes=int(num_classes),
            ignore_index=void,
            semantic_variant=loss_cfg["semantic_variant"],
            segmentation_detach=loss_cfg["segmentation_detach"],
            contrastive_margin=loss_cfg["contrastive_margin"],
            texture_margin=loss_cfg["texture_margin"],
            grey_distance=loss_cfg["grey_distance"],
            exposure_patch=loss_cfg["exposure_patch"],
            exposure_target=loss_cfg["exposure_target"],
            keep_above=loss_cfg["keep_above"],
            tone_target=loss_cfg["tone_target"],
        ).to(device)
        self.exposure = _exposure_setting(config["exposure"])
        self.step = 0  # steps completed
        self.best: dict[str, float] | None = None  # the best validation so far (see _better)
        self._validation_images: list[torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self.bad_steps = 0
        self.writer = None
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

    def _build_vgg(self, weights: Any) -> nn.Module | None:
        if not (weights.texture or weights.feature):
            return None
        from ..models.vgg import VGG16Features

        cfg = self.config["guides"]["vgg16"]
        path = cfg["weights"] if cfg["weights"] in (None, "random") else expand_path(cfg["weights"])
        layers = ("relu1_2", "relu2_2", "relu4_3") if weights.feature else ("relu1_2", "relu2_2")
        return VGG16Features(path, layers=layers, allow_random_init=bool(cfg["allow_random_init"])).to(self.device)

    def _build_segmenter(self, weights: Any) -> nn.Module | None:
        cfg = self.config["guides"]["segmenter"]
        needed = weights.segmentation or self.config["loss"]["pseudo_labels"]
        if not needed and not cfg["weights"]:
            return None
        if not cfg["weights"]:
            raise ValueError("the segmentation loss needs guides.segmenter.weights (a path to ESPNet weights)")
        from ..models.espnet import load_segmenter

        return load_segmenter(cfg["name"], expand_path(cfg["weights"]), device=self.device)

    # ---------------------------------------------------------------------------------------- checkpoints
    def _checkpoints(self) -> list[Path]:
        return sorted(self.checkpoint_dir.glob("step_*.pt"))

    def _resume(self) -> None:
        """Load the newest readable checkpoint; unreadable newer ones are skipped (and said so on stderr)."""
        if self.rank == 0:  # a run killed while writing leaves temporary files (never a partial checkpoint)
            remove_stale_temporaries(self.run_dir)
        candidates = self._checkpoints()
        if not candidates:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        skipped: list[tuple[Path, WeightsError]] = []
        for path in reversed(candidates):
            try:
                state = _load_checkpoint(path, self.device)
                break
            except WeightsError as error:  # e.g. damaged on disk after it was written: try the one before
                skipped.append((path, error))
        else:
            newest = skipped[0][1]
            raise newest if len(skipped) == 1 else WeightsError(f"{newest}; no older checkpoint is readable either")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.bad_steps = int(state.get("bad_steps", 0))
        self.best = state.get("best")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
        if self.rank == 0:
            self._rewrite_log()
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
            "history": self.history,
            "bad_steps": self.bad_steps,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": self.best,
            "config": json.dumps(self.config, sort_keys=True, default=str),
        }
        path = self.checkpoint_dir / f"step_{self.step:07d}.pt"
        with atomic_write(path) as temporary:
            torch.save(state, temporary)
        for old in self._checkpoints()[: -int(self.config["keep_checkpoints"])]:
            old.unlink(missing_ok=True)
        return path

    # ----------------------------------------------------------------------------------------- logging
    def _rewrite_log(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.run_dir / "log.jsonl") as temporary:
            temporary.write_text("".join(json.dumps(row) + "\n" for row in self.history))

    def _log(self, row: dict[str, float]) -> None:
        self.history.append(row)
        if self.rank != 0:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is None:
            self.writer = _tensorboard(self.run_dir / "tb")
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, int(row["step"]))

    # -------------------------------------------------------------------------------------------- loop
    def _pseudo_labels(self, batch: Any) -> torch.Tensor:
        labels = batch.labels
        if self.config["loss"]["pseudo_labels"] and self.segmenter is not None and not bool(batch.labelled.all()):
            with torch.no_grad():
                predicted = self.segmenter.predict(batch.low)
            labels = torch.where(batch.labelled[:, None, None], labels, predicted)
        return labels

    def train_step(self) -> dict[str, float] | None:
        """One optimisation step on the batch of the current step; returns the logged values (or None)."""
        batch = self.batches.batch(self.step)
        labels = self._pseudo_labels(batch)
        labelled = batch.labelled | bool(self.config["loss"]["pseudo_labels"])
        factor = _learning_rate_factor(self.step, self.config["optim"], int(self.config["steps"]))
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
                self._log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", bright=f"{row['brightness']:.2f}")
            if self.step % every["sample_every"] == 0 or self.step == total:
                self.write_samples()
            if self.config["validation"]["folder"] and (self.step % val_every == 0 or self.step == total):
                self.validate()
            if self.step % every["checkpoint_every"] == 0 or self.step == total:
                self.save_checkpoint()
                self.plot_losses()
        bar.close()
        self._check_ranks_agree()
        final = self.run_dir / "model.safetensors"
        if self.rank == 0:
            info = {"steps": str(self.step), "ema_decay": str(self.ema_decay)}
            save_weights(self.served, final, config=self.config, metadata=info)
            _log.info("%d steps; weights in %s", self.step, final)
        if self.writer:
            self.writer.close()
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

    def plot_losses(self) -> Path | None:
        """Plot every logged loss term against the step (``loss_curve.png``)."""
        if self.rank != 0 or not self.history:
            return None
        from ..evaluation.report import plot_curves

        keys = list(dict.fromkeys(k for row in self.history for k in row if k != "step"))
        keys = [k for k in keys if k.startswith("loss")] + [
            k for k in keys if k == "brightness" or k.startswith("val/")
        ]
        return plot_curves(self.history, keys, self.run_dir / "loss_curve.png", title=self.config["name"])

    def _load_validation_images(self) -> list[torch.Tensor]:
        """The validation folder's images, shrunk to ``max_side``, read once: ``(1, 3, H, W)`` in [0, 1]."""
        from ..io.files import image_files
        from ..io.image import read_image

        cfg = self.config["validation"]
        files = image_files(expand_path(cfg["folder"]))[: int(cfg["max_images"])]
        images = []
        for path in files:
            pixels = read_image(path).pixels
            rgb = np.repeat(pixels[..., None], 3, 2) if pixels.ndim == 2 else pixels
            x = torch.from_numpy(rgb.astype(np.float32) / np.iinfo(rgb.dtype).max).permute(2, 0, 1)[None]
            side = max(x.shape[-2:])
            if side > int(cfg["max_side"]):
                size = [round(s * int(cfg["max_side"]) / side) for s in x.shape[-2:]]
                x = nn.functional.interpolate(x, size=size, mode="area")
            images.append(x)
        return images

    def validate(self) -> dict[str, float] | None:
        """NIQE and mean brightness of the enhanced validation folder, logged as ``val/*`` (rank 0).

        The served model is scored; the best so far (:meth:`_better`) is kept as ``best.safetensors``.
        """
        if self.rank != 0:
            return None
        from ..evaluation.metrics import mean_brightness, niqe

        if self._validation_images is None:
            self._validation_images = self._load_validation_images()
        scores, brightness = [], []
        model = self.served
        model.eval()
        with torch.no_grad():
            for x in self._validation_images:
                x = x.to(self.device)
                if self.exposure == "off":
                    y = model(x).float().cpu()
                else:  # as the enhancer serves a model trained for exposure control: at auto exposure
                    maps = model.curve_maps(x)
                    y = scored_at_exposure(x, maps, "auto", 1.0, torch.Generator()).float().cpu()
                brightness.append(float(mean_brightness(y)[0]))
                try:
                    scores.append(float(niqe(y)[0]))
                except ValueError:  # too small for NIQE
                    pass
                except FileNotFoundError as error:  # no NIQE parameters: brightness only
                    warnings.warn(f"validation without NIQE: {error}", stacklevel=2)
                    break
        model.train()
        row = {"step": self.step, "val/brightness": float(np.mean(brightness))}
        if scores:
            row["val/niqe"] = float(np.mean(scores))
        self._log(row)
        if self._better(row):
            self.best = dict(row)
            with atomic_write(self.run_dir / "best.json") as temporary:
                temporary.write_text(json.dumps(self.best, indent=1) + "\n")
            save_weights(
                model, self.run_dir / "best.safetensors", config=self.config, metadata={"steps": str(self.step)}
            )
        return row

    def _better(self, row: dict[str, float]) -> bool:
        """Brightness-aware selection: a validation inside ``validation.brightness_range`` beats any outside it;
        inside, lower NIQE wins; outside, the one closer to the range wins."""

        def key(r: dict[str, float]) -> tuple[float, float]:
            low, high = self.config["validation"]["brightness_range"]
            distance = max(low - r["val/brightness"], r["val/brightness"] - high, 0.0)
            return (distance, r.get("val/niqe", 0.0)) if distance == 0 else (1.0 + distance, 0.0)

        return self.best is None or key(row) < key(self.best)

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


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False  # the tensorboard package is optional
    return SummaryWriter(str(folder))


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
