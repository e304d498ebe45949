"""Effective tone curves of enhancement methods: mean output luminance per band of input luminance.

For every data set and method, the pixels of all images are grouped by their input luminance (BT.601) into
bands, and the table gives the mean output luminance of each band, with the share of pixels in it. A global
curve shows the same row on every data set; a method that adapts to the photo's exposure, or to the
neighbourhood of a pixel, lifts dark photos more than bright ones and can keep bright parts where they are.
Outputs are rounded to 8 bits as ``scl-lle evaluate`` writes them. Used in docs/MODEL_CARD.md.

    SCL_LLE_SHARED=../shared python scripts/tone_curves.py --methods scl-lle,scl-lle-release,zero-dce \\
        --datasets lime,dicm,lol15
"""

from __future__ import annotations

import argparse
import itertools

import torch

from scl_lle.core.colour import luminance
from scl_lle.evaluation.datasets import dataset_images
from scl_lle.evaluation.methods import get_method

BAND_EDGES = (0.0, 0.02, 0.04, 0.08, 0.12, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)


def band_means(inputs: torch.Tensor, outputs: torch.Tensor, edges: tuple[float, ...] = BAND_EDGES) -> torch.Tensor:
    """Sums and counts of ``outputs`` per band of ``inputs`` (same shape, values in [0, 1]) -> ``(2, bands)``.

    Band ``i`` holds the values with ``edges[i] <= input < edges[i + 1]`` (the last band includes 1).
    """
    bands = len(edges) - 1
    index = (torch.bucketize(inputs.flatten(), torch.tensor(edges[1:-1]), right=True)).clamp(max=bands - 1)
    sums = torch.zeros(bands, dtype=torch.float64).index_add_(0, index, outputs.flatten().double())
    counts = torch.bincount(index, minlength=bands).double()
    return torch.stack([sums, counts])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="scl-lle,scl-lle-release,zero-dce", help="comma-separated methods")
    parser.add_argument("--datasets", default="lime,dicm,lol15", help="comma-separated no-reference data sets")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    functions = {m: get_method(m.partition("=")[2] or m) for m in methods}
    labels = [f"{a:g}-{b:g}" for a, b in itertools.pairwise(BAND_EDGES)]
    print("| data set | method | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(labels))
    for dataset in args.datasets.split(","):
        totals = {m: torch.zeros(2, len(labels), dtype=torch.float64) for m in methods}
        for _, image in dataset_images(dataset):
            y_in = (luminance(image) * 255).round() / 255
            for m, fn in functions.items():
                with torch.inference_mode():
                    out = (fn(image).clamp(0, 1) * 255).round() / 255
                totals[m] += band_means(y_in, luminance(out))
        counts = next(iter(totals.values()))[1]
        share = (counts / counts.sum()).tolist()
        print(f"| {dataset} | share of pixels | " + " | ".join(f"{s:.2f}" for s in share) + " |")
        for m in methods:
            sums, n = totals[m]
            means = [f"{s / c:.2f}" if c > 0 else "" for s, c in zip(sums.tolist(), n.tolist(), strict=True)]
            print(f"| {dataset} | {m.partition('=')[0]} | " + " | ".join(means) + " |", flush=True)


if __name__ == "__main__":
    main()
