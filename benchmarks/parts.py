"""Where an engine mode's time goes: its parts timed inside whole calls, on a quiet machine and beside busy ones.

The parts (each timed exclusively, without the parts it calls):

- ``shrink``: the picture shrunk for the network (``TileReader.downsample``: ``scale > 1``, and the solve's
  thumbnail at scale 1);
- ``network``: DCE-Net on the shrunk picture (``Enhancer._estimate_maps``; at scale 1 the network runs inside
  the tiles instead);
- ``noise estimate``: the finishing's filter setting (``read_detail_eps``; ``+finish`` only);
- ``local weights``: the grid of the curve maps' local weights (``picture_weights``, from a thumbnail; about 0
  here: the modes run without local weighting, as enhance does by default; multiplying them into the maps is part
  of ``tiles``);
- ``exposure solve``: the gain that realises the exposure (``picture_gain``; ``+auto`` only);
- ``tiles``: the rest, the tile work (at scale 1 the network and curves, else the fused upsample-and-curves pass;
  the finishing; reading and writing).

Modes and sizes as in ``benchmarks/speed.py``. This is a script, not a test: timings depend on the machine.

    python benchmarks/parts.py --sizes 12mp --modes fast,fast+auto --threads 2 --background-load 1
    python benchmarks/parts.py --sizes 1080p --modes onnxruntime+finish+auto --threads 2 --background-load 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import (
    SIZES,
    BackgroundLoad,
    device_description,
    find_shared,
    fused_kernel_description,
    load_input,
    parse_modes,
    parse_sizes,
)

import scl_lle.engine.enhancer as enhancer_module
from scl_lle.engine.enhancer import Enhancer
from scl_lle.engine.tiling import TileReader

PARTS = ("shrink", "network", "noise estimate", "local weights", "exposure solve", "tiles")


class PartTimer:
    """Exclusive seconds per part: a part's time without the time of the parts it calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._stack: list[list[float]] = []  # [start, seconds of the parts called]

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._stack.append([time.perf_counter(), 0.0])
        try:
            yield
        finally:
            start, inner = self._stack.pop()
            spent = time.perf_counter() - start
            self.seconds[name] += spent - inner
            if self._stack:
                self._stack[-1][1] += spent

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        function = getattr(owner, attribute)

        def timed(*args: object, **kwargs: object) -> object:
            with self.part(name):
                return function(*args, **kwargs)

        setattr(owner, attribute, timed)


def measure(enhancer: Enhancer, x: torch.Tensor, timer: PartTimer, repeats: int) -> dict[str, float]:
    """Median seconds per part (and ``total``) over ``repeats`` calls after one warm-up."""
    enhancer(x)
    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        timer.seconds = dict.fromkeys(PARTS, 0.0)
        start = time.perf_counter()
        with timer.part("tiles"):
            enhancer(x)
        runs.append({**timer.seconds, "total": time.perf_counter() - start})
    return {key: statistics.median(run[key] for run in runs) for key in (*PARTS, "total")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="12mp", help=f"comma-separated: {', '.join(SIZES)} or HxW (default 12mp)")
    parser.add_argument("--modes", default="fast,fast+auto", help="modes as in speed.py (default fast,fast+auto)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--background-load", type=int, default=0, metavar="N", help="also time beside N busy processes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    timer = PartTimer()
    timer.wrap(TileReader, "downsample", "shrink")
    timer.wrap(Enhancer, "_estimate_maps", "network")
    timer.wrap(enhancer_module, "picture_weights", "local weights")
    timer.wrap(enhancer_module, "picture_gain", "exposure solve")
    timer.wrap(enhancer_module, "read_detail_eps", "noise estimate")

    shared = find_shared()
    photo = shared / "data" / "eval_noref_DICM" / "images" / "01.jpg" if shared else None
    print(f"device: {device_description(torch.device('cpu'))}; threads {torch.get_num_threads()}")
    print(f"fast path: {fused_kernel_description()}\n")
    header = "| size | mode | load | " + " | ".join(PARTS) + " | total s |"
    print(header + "\n|" + "---|" * 3 + "---:|" * (len(PARTS) + 1))
    for size, shape in parse_sizes(args.sizes):
        x, _ = load_input(photo if photo is not None and photo.is_file() else None, shape)
        for mode in parse_modes(args.modes):
            enhancer = Enhancer(
                backend=mode.backend, scale=mode.scale, threads=args.threads, finish=mode.finish, exposure=mode.exposure
            )
            loads: list[tuple[str, Callable[[], contextlib.AbstractContextManager[object]]]] = [
                ("quiet", contextlib.nullcontext)
            ]
            if args.background_load:
                loads.append((f"{args.background_load} busy", lambda: BackgroundLoad(args.background_load)))
            for label, context in loads:
                with mode.kernels(), context():
                    seconds = measure(enhancer, x, timer, args.repeats)
                cells = " | ".join(f"{seconds[part]:.3f}" for part in (*PARTS, "total"))
                print(f"| {size} | {mode.label} | {label} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
