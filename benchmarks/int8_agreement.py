"""How far the int8 backend's results are from the float32 backend's, on real photos (docs/PERFORMANCE.md).

Every photo of the given registry data sets is enhanced twice as ``scl-lle enhance`` runs it (finishing, the
given exposure), with ``backend="onnxruntime"`` and ``backend="onnxruntime-int8"``, both rounded to 8 bits as
``scl-lle evaluate`` writes outputs. Per data set: the PSNR between the two (mean and lowest), the largest
difference in 8-bit levels, the share of samples that differ at all, and mean NIQE of each (lower is better).
First it prints how long each enhancer took to set up (the int8 one first: it imports ONNX Runtime and quantises
the network); ``--datasets ''`` prints only that.

    SCL_LLE_SHARED=../shared python benchmarks/int8_agreement.py --datasets lime,dicm,lol15,npe

This is a script, not a test (it needs the shared data sets and takes minutes).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from scl_lle import Enhancer
from scl_lle.evaluation import niqe as niqe_module
from scl_lle.evaluation.datasets import dataset_images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--datasets", default="lime,dicm,lol15,npe", help="registry data sets, comma-separated")
    parser.add_argument("--exposure", default="auto", help="as --exposure of scl-lle enhance (default: auto)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    settings = {"device": "cpu", "threads": args.threads, "exposure": args.exposure}
    start = time.perf_counter()
    int8 = Enhancer(backend="onnxruntime-int8", **settings)
    middle = time.perf_counter()
    exact = Enhancer(backend="onnxruntime", **settings)
    print(
        f"set-up: the int8 enhancer {middle - start:.2f} s (importing ONNX Runtime and its quantiser, "
        f"quantising), then the float32 one {time.perf_counter() - middle:.2f} s\n"
    )
    if not args.datasets:
        return 0
    print(
        "| data set | photos | PSNR mean dB (photos that differ) | PSNR lowest dB | largest difference "
        "(8-bit levels) | samples that differ | NIQE float32 | NIQE int8 |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for name in args.datasets.split(","):
        psnr, largest, differ, niqe_exact, niqe_int8 = [], 0.0, [], [], []
        for _, image in dataset_images(name):
            a, b = (torch.round(enhancer(image) * 255) / 255 for enhancer in (exact, int8))
            mse = float((a - b).square().mean())
            psnr.append(10 * math.log10(1.0 / mse) if mse > 0 else math.inf)
            largest = max(largest, float((a - b).abs().max()) * 255)
            differ.append(float((a != b).float().mean()))
            niqe_exact.append(float(niqe_module.niqe(a)[0]))
            niqe_int8.append(float(niqe_module.niqe(b)[0]))
        finite = [p for p in psnr if math.isfinite(p)] or [math.inf]
        print(
            f"| {name} | {len(psnr)} | {sum(finite) / len(finite):.1f} | {min(psnr):.1f} | {largest:.0f} | "
            f"{100 * sum(differ) / len(differ):.2f}% | {sum(niqe_exact) / len(psnr):.3f} | "
            f"{sum(niqe_int8) / len(psnr):.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
