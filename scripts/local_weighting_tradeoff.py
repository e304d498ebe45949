"""Local weighting's trade-off on training data: NIQE of dark photos against segmentation of street frames, for
several grids and powers of the local weights (docs/MODEL_CARD.md, "Local weighting").

For each setting ``GRIDxPOWER`` (``LOCAL_GRID`` regions along the long side, ``LOCAL_POWER``; power 0: no weights,
as ``scl-lle enhance`` runs by default) it measures, at ``--exposure auto``:

- the mean NIQE of the 40 dark SICE training photos of ``niqe_exposure_levels.py`` (their brightness is the same
  for every setting: the gain sees to it);
- ESPNet's mIoU on the CamVid *training* frames: ``camvid-train-dark`` (68 daytime frames, darkened as
  ``camvid-dark`` darkens the test frames) and ``camvid-train-dusk`` (62 real dusk frames) of
  ``configs/datasets.yaml``, through ``scl-lle evaluate`` with ``local-weighting:scl-lle``.

No evaluation set is read. Prints a Markdown table and, with ``--output``, draws NIQE against mIoU.

    SCL_LLE_SHARED=../shared python scripts/local_weighting_tradeoff.py \
        [--settings 16x0,16x2,12x2,8x2,4x2,8x1,8x3] --output docs/images/local_weighting_tradeoff.png

About 5 minutes per setting on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from fit_exposure_policy import sequences_root
from niqe_exposure_levels import dark_photos

from scl_lle import Enhancer
from scl_lle.engine import exposure as exposure_module
from scl_lle.evaluation import niqe as niqe_module
from scl_lle.evaluation.datasets import load_image
from scl_lle.evaluation.runner import evaluate

DARK_LEVELS = ("0.2", "0.1", "0.05")


def sice_niqe(images: list[torch.Tensor], local_weighting: bool) -> float:
    """Mean NIQE of ``images`` enhanced at ``auto`` (as ``scl-lle enhance`` does), rounded to 8 bits."""
    enhancer = Enhancer(device="cpu", threads=2, local_weighting=local_weighting)
    scores = [float(niqe_module.niqe((enhancer(image) * 255).round() / 255)[0]) for image in images]
    return sum(scores) / len(scores)


def camvid_miou(local_weighting: bool) -> dict[str, float]:
    """ESPNet's mIoU on the CamVid training frames: ``{"1", "0.2", "0.1", "0.05", "dusk"}`` -> mIoU."""
    method = "local-weighting:scl-lle" if local_weighting else "scl-lle"
    with tempfile.TemporaryDirectory() as folder:
        results = evaluate([method], ["camvid-train-dark", "camvid-train-dusk"], folder, device="cpu", progress=False)
    subsets = {
        **results["datasets"]["camvid-train-dark"]["subsets"],
        **results["datasets"]["camvid-train-dusk"]["subsets"],
    }
    return {
        name.rpartition("@")[2] if "@" in name else "dusk": entry["methods"][method]["miou"]
        for name, entry in subsets.items()
    }


def draw(rows: list[tuple[str, float, dict[str, float]]], output: Path) -> None:
    """NIQE (x) against the mean mIoU of the darkened frames and of the dusk frames (y), one point per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for key, label, marker in (("dark", "darkened frames (0.2, 0.1, 0.05)", "o"), ("dusk", "dusk frames", "s")):
        xs = [niqe for _, niqe, _ in rows]
        ys = [_dark_mean(miou) if key == "dark" else miou["dusk"] for _, _, miou in rows]
        axes.plot(xs, ys, marker, label=label)
        for (setting, _, _), x, y in zip(rows, xs, ys, strict=True):
            if key == "dark":  # the dusk point of a setting is straight above it
                axes.annotate(setting, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    axes.set_xlabel("NIQE of 40 dark SICE training photos at auto (lower is better)")
    axes.set_ylabel("ESPNet mIoU, CamVid training frames")
    axes.set_title("Local weighting GRIDxPOWER: image quality against segmentation")
    axes.invert_xaxis()  # better to the right and up
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def _dark_mean(miou: dict[str, float]) -> float:
    return sum(miou[level] for level in DARK_LEVELS) / len(DARK_LEVELS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("SCL_LLE_SHARED", "../shared"))
    parser.add_argument("--settings", default="16x0,16x2,12x2,8x2,4x2,8x1,8x3", help="GRIDxPOWER, comma-separated")
    parser.add_argument("--output", type=Path, help="where to draw the plot (PNG)")
    args = parser.parse_args(argv)
    root = sequences_root(args.shared)
    if root is None:
        return 2
    os.environ.setdefault("SCL_LLE_SHARED", args.shared)  # the registry's paths
    images = [load_image(path) for path in dark_photos(root, 40)]
    print("| setting | SICE NIQE | CamVid train dark@1 / 0.2 / 0.1 / 0.05 | mean of 0.2-0.05 | dusk |")
    print("|---|---:|---|---:|---:|")
    rows = []
    for setting in args.settings.split(","):
        grid, power = (int(part) for part in setting.split("x"))
        exposure_module.LOCAL_GRID, exposure_module.LOCAL_POWER = grid, power
        niqe = sice_niqe(images, power > 0)
        miou = camvid_miou(power > 0)
        label = setting if power else "none"  # power 0: every region alike, the default
        rows.append((label, niqe, miou))
        levels = " / ".join(f"{miou[level]:.3f}" for level in ("1", *DARK_LEVELS))
        print(f"| {label} | {niqe:.2f} | {levels} | {_dark_mean(miou):.3f} | {miou['dusk']:.3f} |", flush=True)
    if args.output is not None:
        draw(rows, args.output)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
