"""Before/after grid of photos that are already well lit: what each method does to a photo that needs no help.

Takes the images of a registry data set (default: DICM) whose mean brightness is at least ``--min-brightness``
(default 0.45, the split of ``scl-lle evaluate``'s ``dicm-lit``), ``--count`` of them spread evenly over the
sorted names, and writes one row per photo: the input, then each method, with each cell's mean brightness in
the row label.

    python scripts/well_lit_grid.py --output docs/images/well_lit_dicm.png
    python scripts/well_lit_grid.py --methods identity,scl-lle@off,scl-lle --count 6 --output grid.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from scl_lle.evaluation.datasets import dataset_images
from scl_lle.evaluation.methods import get_method
from scl_lle.evaluation.report import save_grid, thumbnail

DEFAULT_METHODS = "scl-lle@off,scl-lle,scl-lle-release,zero-dce"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dataset", default="dicm")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"(default: {DEFAULT_METHODS})")
    parser.add_argument("--min-brightness", type=float, default=0.45)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    lit = [(name, image) for name, image in dataset_images(args.dataset) if image.mean() >= args.min_brightness]
    if not lit:
        print(f"no image of {args.dataset} has a mean brightness of {args.min_brightness} or more", file=sys.stderr)
        return 1
    picks = sorted(set(np.linspace(0, len(lit) - 1, min(args.count, len(lit))).round().astype(int).tolist()))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    runs = {m: get_method(m, "cpu") for m in methods}
    rows = []
    for index in picks:
        name, image = lit[index]
        outputs = [runs[m](image) for m in methods]
        levels = " / ".join(f"{float(x.mean()):.2f}" for x in (image, *outputs))
        rows.append((f"{name}: {levels}", [thumbnail(image), *(thumbnail(x) for x in outputs)]))
    title = f"{args.dataset}, {len(lit)} photos with brightness >= {args.min_brightness:g}: input / " + " / ".join(
        methods
    )
    path = save_grid(args.output, ["input", *methods], rows, title)
    print(f"wrote {path} ({len(rows)} photos of {len(lit)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
