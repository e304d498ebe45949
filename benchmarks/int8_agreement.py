"""How far the int8 backend's results are from the float32 backend's, on real photos (docs/PERFORMANCE.md).

Every photo of the given registry data sets is enhanced twice as ``scl-lle enhance`` runs it (finishing, the
given exposure), with ``backend="onnxruntime"`` and ``backend="onnxruntime-int8"``, both rounded to 8 bits as
``scl-lle evaluate`` writes outputs. Per data set: the PSNR between the two (mean and lowest), the largest
difference in 8-bit levels, the share of samples that differ at all, and mean NIQE of each (lower is better).
First it prints how long each backend's enhancer takes to set up in a fresh process, with an empty ONNX graph
cache and with one that process filled (``scl_lle.models.graph_cache``), and how smooth each keeps a smooth dark
gradient given in 8 and in 16 bits (the output's reversals along it: a pixel darker than the one before it; why
``backend="auto"`` runs pictures of more than 8 bits in float32); ``--datasets ''`` prints only those.

    SCL_LLE_SHARED=../shared python benchmarks/int8_agreement.py --datasets lime,dicm,lol15,npe

This is a script, not a test (it needs the shared data sets and takes minutes).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from scl_lle import Enhancer
from scl_lle.evaluation import niqe as niqe_module
from scl_lle.evaluation.datasets import dataset_images
from scl_lle.models.graph_cache import CACHE_ENV


def setup_seconds(backend: str, threads: int, graphs: Path) -> float:
    """Seconds to make ``Enhancer(backend=backend)`` in a new Python process, after importing scl_lle, with the
    ONNX graph cache in the folder ``graphs``."""
    code = (
        "import time; from scl_lle import Enhancer; start = time.perf_counter(); "
        f"Enhancer(backend={backend!r}, device='cpu', threads={threads}); print(time.perf_counter() - start)"
    )
    environment = {**os.environ, CACHE_ENV: str(graphs)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment)
    return float(result.stdout.split()[-1])


def gradient_reversals(enhancer: Enhancer, bits: int, width: int = 1024) -> tuple[int, int]:
    """``(reversals, largest in output levels)`` along a smooth dark ramp (brightness 0.002 to 0.06, slightly
    coloured) given as ``bits``-bit pixels: steps down in the output along the ramp, which never goes down."""
    ramp = np.linspace(0.002, 0.06, width)[None, :].repeat(16, 0)
    peak = 2**bits - 1
    pixels = np.round(np.stack([ramp, ramp * 1.05, ramp * 0.9], -1) * peak).astype(np.uint8 if bits == 8 else np.uint16)
    steps = np.diff(enhancer.enhance_array(pixels)[8].astype(np.int64), axis=0)
    return int((steps < 0).sum()), int(max(0, -steps.min()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--datasets", default="lime,dicm,lol15,npe", help="registry data sets, comma-separated")
    parser.add_argument("--exposure", default="auto", help="as --exposure of scl-lle enhance (default: auto)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    settings = {"device": "cpu", "threads": args.threads, "exposure": args.exposure}
    with tempfile.TemporaryDirectory(prefix="scl-lle-graphs-") as folder:
        backends = ("onnxruntime", "onnxruntime-int8")
        cold = {backend: setup_seconds(backend, args.threads, Path(folder) / backend) for backend in backends}
        warm = {backend: setup_seconds(backend, args.threads, Path(folder) / backend) for backend in backends}
    print(
        "set-up of an enhancer in a fresh process, with an empty ONNX graph cache (importing onnx and making the "
        "graph; for int8 also importing the quantiser and quantising) and with the cache filled by that process: "
        f"float32 {cold['onnxruntime']:.2f} s / {warm['onnxruntime']:.2f} s, "
        f"int8 {cold['onnxruntime-int8']:.2f} s / {warm['onnxruntime-int8']:.2f} s\n"
    )
    exact, int8 = Enhancer(backend="onnxruntime", **settings), Enhancer(backend="onnxruntime-int8", **settings)
    print("| gradient | float32 reversals | largest (output levels) | int8 reversals | largest (output levels) |")
    print("|---|---:|---:|---:|---:|")
    for bits in (8, 16):
        (fr, fl), (qr, ql) = (gradient_reversals(enhancer, bits) for enhancer in (exact, int8))
        print(f"| {bits}-bit | {fr} | {fl} | {qr} | {ql} |")
    print()
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
