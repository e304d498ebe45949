"""NIQE against brightness for fixed global tone curves on one evaluation set (docs/MODEL_CARD.md, "NIQE").

Applies, to every image of a data set of ``configs/datasets.yaml``, curves that involve no learning: adaptive gamma
(mean luminance mapped to a target), a linear gain, and DCE-Net's own curve family with one constant curve
parameter ``a`` for all pixels and all eight steps (``x <- x + a (x^2 - x)``, brightening for ``a < 0``). Outputs
are rounded to 8 bits as ``scl-lle evaluate`` writes them; the table gives mean NIQE and mean brightness, so one
can see which brightness a curve family can reach at a given NIQE.

    SCL_LLE_SHARED=../shared python scripts/niqe_curve_family.py --dataset lol15
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from scl_lle.core.colour import gamma_correction
from scl_lle.core.curves import apply_curves
from scl_lle.evaluation import metrics
from scl_lle.evaluation import niqe as niqe_module
from scl_lle.evaluation.datasets import dataset_images

Curve = Callable[[torch.Tensor], torch.Tensor]


def constant_le_curve(x: torch.Tensor, a: float, steps: int = 8) -> torch.Tensor:
    """DCE-Net's light-enhancement curve with one parameter ``a`` in [-1, 1] for every pixel and step."""
    b, _, h, w = x.shape
    return apply_curves(x, x.new_full((b, 3 * steps, h, w), a))


CURVES: dict[str, Curve] = {
    "identity": lambda x: x,
    "gamma (mean -> 0.36)": lambda x: gamma_correction(x, target=0.36),
    "gamma (mean -> 0.45)": lambda x: gamma_correction(x, target=0.45),
    "linear gain x6": lambda x: x * 6,
    **{f"DCE curve, constant a = {a}": (lambda x, a=a: constant_le_curve(x, a)) for a in (-0.2, -0.3, -0.4, -0.5)},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="lol15", help="a no-reference data set of configs/datasets.yaml")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = [image for _, image in dataset_images(args.dataset)]
    print(f"| curve ({args.dataset}, {len(images)} images) | NIQE | brightness |\n|---|---:|---:|")
    for name, curve in CURVES.items():
        niqe, brightness = [], []
        for image in images:
            out = (curve(image).clamp(0, 1) * 255).round() / 255
            niqe.append(float(niqe_module.niqe(out)[0]))
            brightness.append(float(metrics.mean_brightness(out)[0]))
        print(f"| {name} | {sum(niqe) / len(niqe):.2f} | {sum(brightness) / len(brightness):.3f} |", flush=True)


if __name__ == "__main__":
    main()
