"""NIQE of the default model at several exposure settings, on dark photos of the training data (docs/MODEL_CARD.md,
"NIQE and the exposure level").

Takes every k-th photo of ``train_exposure_SICE_sequences`` whose mean brightness lies in (0.03, 0.2) (training
data: no evaluation set is read), enhances it as ``scl-lle enhance`` does (finishing on) at ``--exposure off``
(the network's own level, different for every photo), ``auto`` and fixed levels, rounds to 8 bits as
``scl-lle evaluate`` writes outputs, and prints mean NIQE and mean brightness per setting. Comparing ``off`` with
the fixed level nearest its mean brightness separates what NIQE owes to the level from what it owes to choosing
the level photo by photo. ``--models`` compares several models (``LABEL=WEIGHTS``, e.g. the released checkpoints)
at the same settings: at ``auto`` or a fixed level every model's outputs have the same brightness, so what differs
is the shape of its curves. ``--local-power P`` turns on local weighting with that power (docs/MODEL_CARD.md, "Local
weighting"; ``--local-weighting`` of ``scl-lle enhance`` uses 2); 0, the default, weights every region alike.
``--local-grid N`` sets its regions along the long side (local weighting's: 8; 16 before 2026-12-02).

    SCL_LLE_SHARED=../shared python scripts/niqe_exposure_levels.py [--photos 40]
    SCL_LLE_SHARED=../shared python scripts/niqe_exposure_levels.py --settings auto,0.4,off \
        --models scl-lle,release=../shared/weights/upstream/scl-lle_official.pth [--local-power 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import torch
from fit_exposure_policy import sequences_root

from scl_lle import Enhancer
from scl_lle.core.colour import mean_brightness
from scl_lle.engine import exposure as exposure_module
from scl_lle.engine.exposure import parse_exposure
from scl_lle.evaluation import niqe as niqe_module
from scl_lle.evaluation.datasets import load_image

SETTINGS = "off,auto,0.35,0.4,0.43,0.45,0.5,0.55"


def dark_photos(root: Path, count: int) -> list[Path]:
    """Every k-th SICE photo with mean brightness in (0.03, 0.2), ``count`` of them (in ``files.tsv`` order)."""
    with open(root / "files.tsv", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t") if 0.03 < float(row["mean_rgb"]) < 0.2]
    step = max(1, len(rows) // count)
    return [root / row["dest_path"] for row in rows[::step][:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("SCL_LLE_SHARED", "../shared"))
    parser.add_argument("--photos", type=int, default=40, help="how many dark SICE photos (default: 40)")
    parser.add_argument("--settings", default=SETTINGS, help=f"exposure settings, comma-separated ({SETTINGS})")
    parser.add_argument(
        "--models",
        default="scl-lle",
        help="comma-separated LABEL=WEIGHTS (a file or a registry name); scl-lle alone is the default model",
    )
    parser.add_argument(
        "--local-power",
        type=int,
        default=0,
        help="with local weighting (--local-weighting) of this power (default: 0, without it, as enhance's default; "
        f"local weighting's power is {exposure_module.LOCAL_POWER})",
    )
    parser.add_argument(
        "--local-grid",
        type=int,
        default=exposure_module.LOCAL_GRID,
        help=f"regions of the local weights along the long side (default: {exposure_module.LOCAL_GRID})",
    )
    args = parser.parse_args(argv)
    if args.local_power:
        exposure_module.LOCAL_POWER = args.local_power
    exposure_module.LOCAL_GRID = args.local_grid
    settings = [parse_exposure(value) for value in args.settings.split(",")]
    models = [model.partition("=")[::2] if "=" in model else (model, model) for model in args.models.split(",")]
    root = sequences_root(args.shared)
    if root is None:
        return 2
    images = [load_image(path) for path in dark_photos(root, args.photos)]
    print(f"| model | exposure ({len(images)} dark SICE photos, local power {args.local_power}) | NIQE | brightness |")
    print("|---|---|---:|---:|")
    for label, weights in models:
        enhancer = Enhancer(
            weights=None if weights == "scl-lle" else weights,
            device="cpu",
            threads=2,
            local_weighting=args.local_power > 0,
        )
        for setting in settings:
            niqe, brightness = [], []
            for image in images:
                out = (enhancer(image, exposure=setting) * 255).round() / 255
                niqe.append(float(niqe_module.niqe(out)[0]))
                brightness.append(float(mean_brightness(out)[0]))
            mean_niqe, mean_brightness_ = sum(niqe) / len(niqe), sum(brightness) / len(brightness)
            print(f"| {label} | {setting} | {mean_niqe:.2f} | {mean_brightness_:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
