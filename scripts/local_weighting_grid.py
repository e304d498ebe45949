"""Before/after grid of the local weighting of the curve maps (docs/MODEL_CARD.md, "Local weighting").

Dark photos of the SICE training sequences (the selection of ``niqe_exposure_levels.py``; no evaluation set is
read), ``--count`` of them evenly spread: the input, then ``scl-lle enhance``'s result at ``--exposure`` without
the local weights (every region weighted alike, the default) and with them (``--local-weighting``; the power
``--local-power``, by default local weighting's, 2). Both
results have the same mean brightness; the row label gives it with each cell's NIQE.

    SCL_LLE_SHARED=../shared python scripts/local_weighting_grid.py --output docs/images/local_weighting_sice.png
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from fit_exposure_policy import sequences_root
from niqe_exposure_levels import dark_photos

from scl_lle import Enhancer
from scl_lle.engine import exposure as exposure_module
from scl_lle.evaluation import niqe as niqe_module
from scl_lle.evaluation.datasets import load_image
from scl_lle.evaluation.report import save_grid, thumbnail


def _enhanced(enhancer: Enhancer, image: torch.Tensor, setting: str | float) -> torch.Tensor:
    """``image`` enhanced at ``setting``, rounded to 8 bits."""
    return (enhancer(image, exposure=setting) * 255).round() / 255


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("SCL_LLE_SHARED", "../shared"))
    parser.add_argument("--count", type=int, default=4, help="how many photos (default: 4)")
    parser.add_argument("--exposure", default="auto", help="the exposure setting (default: auto)")
    parser.add_argument(
        "--local-power",
        type=int,
        default=exposure_module.LOCAL_POWER,
        help=f"the power of the local weights (default: local weighting's, {exposure_module.LOCAL_POWER})",
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    root = sequences_root(args.shared)
    if root is None:
        return 2
    torch.set_num_threads(2)
    setting = exposure_module.parse_exposure(args.exposure)
    photos = dark_photos(root, 40)
    picks = sorted(set(np.linspace(0, len(photos) - 1, min(args.count, len(photos))).round().astype(int).tolist()))
    exposure_module.LOCAL_POWER = args.local_power
    enhancer = Enhancer(device="cpu", threads=2)
    local = Enhancer(device="cpu", threads=2, local_weighting=True)
    rows = []
    for index in picks:
        image = load_image(photos[index])
        plain = _enhanced(enhancer, image, setting)
        weighted = _enhanced(local, image, setting)
        scores = " / ".join(f"{float(niqe_module.niqe(x)[0]):.2f}" for x in (image, plain, weighted))
        label = (
            f"{photos[index].name}: brightness {float(plain.mean()):.2f} / {float(weighted.mean()):.2f}, NIQE {scores}"
        )
        rows.append((label, [thumbnail(image), thumbnail(plain), thumbnail(weighted)]))
    columns = [
        "input",
        f"{args.exposure}, regions alike",
        f"{args.exposure}, local weighting (power {args.local_power}, {exposure_module.LOCAL_GRID} regions)",
    ]
    path = save_grid(args.output, columns, rows, "dark SICE training photos: the local weighting of the curve maps")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
