"""Speed benchmark: scl-lle's engine against an eager float32 reference DCE-Net, measured in the same run.

The reference is DCE-Net's own forward (``DCENet.forward``: 7 convs of 32 channels with the skip concatenations of
DCE-Net, ReLU, tanh for the 24 curve maps, then x <- x + r * (x^2 - x) eight times), run eagerly in float32 on the
whole image: the way the released code runs it. Every mode is timed on the same input after warm-up; the
table gives the median of ``--repeats`` runs, the ratio to the reference, the peak memory of one run (CPU: peak
RSS above the RSS before the run; CUDA: ``max_memory_allocated`` above what was allocated before) and, for each
mode, the quality cost: PSNR against the full-resolution output (the reference's) and NIQE (lower is better;
needs the NIQE parameters: ``SCL_LLE_SHARED`` or ``SCL_LLE_NIQE_PARAMS``).

Peers (``--modes sci,zero-dce++``) are timed in the same run from their published layer shapes, with seeded random
weights (timing only: no PSNR or NIQE): ``sci``, SCI's inference network at full resolution (Ma et al., CVPR 2022:
3x3 convolutions 3->3 channels, ReLU, one conv + batch-norm + ReLU block, a 3->3 conv with sigmoid, illumination =
input + that, clamped; output = input / illumination); ``zero-dce++``, Zero-DCE++ at its scale 12 (Li et al., TPAMI
2021: the input shrunk 12 times bilinearly, seven depthwise-separable 3x3 convolutions of 32 channels with DCE-Net's
skips, one 3-channel tanh curve map upsampled bilinearly to full resolution and applied eight times).

``--background-load N`` measures every row twice: on the machine as it is, then with N busy processes (each a
Python loop holding one core; stopped at the end, and on their own when this script is gone), so the contended
case is measured in the same run as the quiet one; a third table gives each mode's slow-down under load.

Modes (``--modes``, comma-separated): ``BACKEND[:compile][@SCALE][+finish][+auto]``, e.g. ``torch``,
``torch:compile``, ``onnxruntime``, ``onnxruntime-int8``, ``torch@8``, ``torch@auto``, ``onnxruntime@8``,
``fast`` (the ``--fast``
preset's scale and finishing in PyTorch: ``torch@FAST_SCALE``, scale ``auto``; ``scl-lle enhance --fast`` runs
``onnxruntime-int8@auto+auto`` on the CPU). Modes time the network and its curves alone, at full strength
(``exposure="off"``, as the reference), unless they end in ``+finish``, which adds the engine's default
finishing (``scl_lle.engine.finishing``: ``scl-lle enhance`` without ``--fast``), and/or ``+auto``, which adds
the default exposure solve (``scl_lle.engine.exposure``: ``exposure="auto"``); their PSNR against the reference
then measures that change, not a loss. ``onnxruntime-int8+finish+auto`` is what ``scl-lle enhance`` runs on the CPU
(``--backend auto``).
``+eager`` keeps the fast path's fused pass and shrink in eager PyTorch where the numba kernels would run them
(``scl_lle.engine.fused_pass``: pictures of 8 MP and more when numba is installed), so both are timed in one run.

    python benchmarks/speed.py                                   # CPU: 1080p and 12 MP
    python benchmarks/speed.py --device cuda --half --channels-last   # GPU: 1080p and 4K
    python benchmarks/speed.py --sizes 1080p --modes torch,onnxruntime,torch@4,torch@8 --repeats 5
    python benchmarks/speed.py --sizes 12mp --threads 2 --modes fast,sci,zero-dce++ --background-load 1

This is a script, not a test: timings depend on the machine and its load (printed with the results).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

from scl_lle import DCENet, Enhancer, WeightsError, load_dcenet  # noqa: E402
from scl_lle.defaults import BACKENDS, DEFAULT_TILE, FAST_SCALE  # noqa: E402
from scl_lle.engine.fused_pass import NUMBA_ENV, NUMBA_MIN_PIXELS, numba_available  # noqa: E402
from scl_lle.models.hub import resolve_weights  # noqa: E402

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840), "12mp": (3000, 4000)}
DEFAULT_SIZES = {"cpu": "1080p,12mp", "cuda": "1080p,4k"}
DEFAULT_MODES = "torch,torch:compile,onnxruntime,fast,onnxruntime@8,torch:compile@8"


# --------------------------------------------------------------------------------------------------- peers


def sci_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """SCI's inference network (self-calibrated illumination, one block of 3 channels) on the whole image."""

    def conv(name: str, inp: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    fea = torch.relu(conv("in_conv", x))
    fea = torch.relu(F.batch_norm(conv("block", fea), state["bn.mean"], state["bn.var"], state["bn.weight"],
                                  state["bn.bias"]))  # fmt: skip
    illumination = (torch.sigmoid(conv("out_conv", fea)) + x).clamp(0.0001, 1.0)
    return (x / illumination).clamp(0.0, 1.0)


def zero_dce_pp_forward(state: dict[str, torch.Tensor], x: torch.Tensor, scale: int = 12) -> torch.Tensor:
    """Zero-DCE++ at ``scale``: depthwise-separable DCE-Net on the shrunk image, one curve map applied 8 times."""

    def conv(name: str, inp: torch.Tensor) -> torch.Tensor:
        depthwise = F.conv2d(inp, state[f"{name}.dw"], state[f"{name}.dw_bias"], padding=1, groups=inp.shape[1])
        return F.conv2d(depthwise, state[f"{name}.pw"], state[f"{name}.pw_bias"])

    small = F.interpolate(x, scale_factor=1 / scale, mode="bilinear")
    x1 = torch.relu(conv("c1", small))
    x2 = torch.relu(conv("c2", x1))
    x3 = torch.relu(conv("c3", x2))
    x4 = torch.relu(conv("c4", x3))
    x5 = torch.relu(conv("c5", torch.cat([x3, x4], 1)))
    x6 = torch.relu(conv("c6", torch.cat([x2, x5], 1)))
    r = torch.tanh(conv("c7", torch.cat([x1, x6], 1)))
    r = F.interpolate(r, size=x.shape[-2:], mode="bilinear", align_corners=True)
    for _ in range(8):
        x = x + r * (torch.pow(x, 2) - x)
    return x


def peer_state(name: str, device: torch.device) -> dict[str, torch.Tensor]:
    """Seeded random weights of the published layer shapes of ``sci`` or ``zero-dce++`` (timing only)."""
    generator = torch.Generator().manual_seed(0)

    def weight(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * 0.1).to(device)

    if name == "sci":
        state = {f"{n}.{kind}": weight(3, 3, 3, 3) if kind == "weight" else weight(3)
                 for n in ("in_conv", "block", "out_conv") for kind in ("weight", "bias")}  # fmt: skip
        state.update({"bn.mean": weight(3), "bn.var": weight(3).abs() + 1, "bn.weight": weight(3) + 1,
                      "bn.bias": weight(3)})  # fmt: skip
        return state
    channels = {"c1": (3, 32), "c2": (32, 32), "c3": (32, 32), "c4": (32, 32), "c5": (64, 32), "c6": (64, 32),
                "c7": (64, 3)}  # fmt: skip
    state = {}
    for n, (cin, cout) in channels.items():
        state.update({f"{n}.dw": weight(cin, 1, 3, 3), f"{n}.dw_bias": weight(cin), f"{n}.pw": weight(cout, cin, 1, 1),
                      f"{n}.pw_bias": weight(cout)})  # fmt: skip
    return state


PEERS = {"sci": sci_forward, "zero-dce++": zero_dce_pp_forward}


# --------------------------------------------------------------------------------------------- background load

_BUSY = """
import os, sys, time
parent, end = os.getppid(), time.monotonic() + float(sys.argv[1])
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


class BackgroundLoad:
    """``count`` busy processes (a Python loop each, one core) while the block runs; each also stops on its own
    after ``limit`` seconds or when this process is gone."""

    def __init__(self, count: int, limit: float = 3600.0) -> None:
        self.count, self.limit = count, limit
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BackgroundLoad:
        for _ in range(self.count):
            self.processes.append(subprocess.Popen([sys.executable, "-c", _BUSY, str(self.limit)]))
        time.sleep(0.5)  # let them reach their loop
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ------------------------------------------------------------------------------------------------- memory


class PeakMemory:
    """Peak memory of a block above the level before it: CUDA allocator statistics, or the process's RSS.

    On Linux the RSS high-water mark is reset through ``/proc/self/clear_refs`` and read from ``VmHWM``; where
    that is not possible a thread samples ``VmRSS`` every millisecond.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = self._status("VmRSS")
        self._sampler = None
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset VmHWM to the current RSS
        except OSError:
            self._samples = [self._base]
            self._stop = threading.Event()

            def sample() -> None:
                while not self._stop.wait(0.001):
                    self._samples.append(self._status("VmRSS"))

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self.peak_bytes = max(self._samples) - self._base
        else:
            self.peak_bytes = self._status("VmHWM") - self._base


# -------------------------------------------------------------------------------------------------- modes


@dataclass
class Mode:
    label: str
    backend: str  # "torch", "onnxruntime", "onnxruntime-int8", or a peer's name (PEERS)
    scale: int | str = 1  # or "auto"
    compile: bool = False
    finish: bool = False
    exposure: str = "off"
    eager: bool = False  # the fast path without the numba kernels (SCL_LLE_NUMBA=0)

    @contextlib.contextmanager
    def kernels(self) -> Iterator[None]:
        """Within: the fast path's kernels this mode asks for (``+eager``: no numba)."""
        before = os.environ.get(NUMBA_ENV)
        if self.eager:
            os.environ[NUMBA_ENV] = "0"
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(NUMBA_ENV, None)
            else:
                os.environ[NUMBA_ENV] = before


def parse_sizes(text: str) -> list[tuple[str, tuple[int, int]]]:
    """``"1080p,375x500"`` -> ``[(name, (height, width)), ...]``: the names of :data:`SIZES` or ``HxW``."""
    sizes = []
    for name in filter(None, (part.strip().lower() for part in text.split(","))):
        height, _, width = name.partition("x")
        if name not in SIZES and not (height.isdigit() and width.isdigit() and int(height) and int(width)):
            raise SystemExit(f"unknown size {name!r}: use {', '.join(SIZES)} or HxW")
        sizes.append((name, SIZES.get(name) or (int(height), int(width))))
    if not sizes:
        raise SystemExit(f"no size in {text!r}: use {', '.join(SIZES)} or HxW")
    return sizes


def parse_modes(text: str) -> list[Mode]:
    modes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item in PEERS:
            modes.append(Mode(f"{item} (peer, random weights)", item))
            continue
        spec, *extras = item.split("+")
        if any(extra not in ("finish", "auto", "eager") for extra in extras) or len(set(extras)) != len(extras):
            raise SystemExit(f"unknown mode {item!r}: the suffixes are +finish, +auto and +eager")
        fast = spec == "fast"
        head, _, scale = (f"torch@{FAST_SCALE}" if fast else spec).partition("@")
        backend, _, option = head.partition(":")
        if backend not in BACKENDS or backend == "auto" or option not in ("", "compile"):
            raise SystemExit(
                f"unknown mode {item!r}: use BACKEND[:compile][@SCALE][+finish][+auto] with a backend of "
                f"{', '.join(b for b in BACKENDS if b != 'auto')}, or a peer: {', '.join(PEERS)}"
            )
        suffix = "".join("+" + extra for extra in extras)
        label = f"fast (scale {FAST_SCALE}, torch){suffix}" if fast else item
        exposure = "auto" if "auto" in extras else "off"
        finish, eager = "finish" in extras, "eager" in extras
        factor = scale if scale == "auto" else int(scale or 1)
        modes.append(Mode(label, backend, factor, option == "compile", finish, exposure, eager))
    return modes


@dataclass
class Row:
    size: str
    mode: str
    median_s: float
    min_s: float
    ratio: float  # reference median / this median: > 1 is faster
    peak_mib: float
    psnr_db: float | None
    niqe: float | None
    setup_s: float  # building the enhancer + warm-up (includes compilation)
    note: str = ""


def timed(run: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[list[float], float]:
    """Seconds of each of ``repeats`` runs after the warm-up run, and the peak memory of the last run."""
    times = []
    peak = 0
    for _ in range(repeats):
        with PeakMemory(device) as memory:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            out = run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            del out
        peak = max(peak, memory.peak_bytes)
    return times, peak


# ------------------------------------------------------------------------------------------------- inputs


def find_shared() -> Path | None:
    env = os.environ.get("SCL_LLE_SHARED")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate if candidate.is_dir() else None


def load_input(path: Path | None, size: tuple[int, int]) -> tuple[torch.Tensor, str]:
    height, width = size
    if path is not None:
        from PIL import Image

        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()
        return x, f"{path.name} resized to {width}x{height}"
    generator = torch.Generator().manual_seed(0)
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    tint = torch.stack([torch.ones(height, width), torch.full((height, width), 0.8), (0.6 + ys).expand(height, width)])
    base = 0.05 + 0.15 * (0.5 + 0.5 * torch.sin(6 * xs + 4 * ys)) * tint
    x = (base + 0.02 * torch.randn(3, height, width, generator=generator)).clamp(0, 1)[None].contiguous()
    return x, f"synthetic dark gradient {width}x{height}"


def niqe_or_none(image: torch.Tensor) -> float | None:
    from scl_lle.evaluation.niqe import niqe

    try:
        return float(niqe(image.cpu())[0])
    except FileNotFoundError:
        return None


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.cpu().double() - b.cpu().double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


# --------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--sizes", help="comma-separated: 720p, 1080p, 4k, 12mp or HxW (default: per device)")
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"engine modes (default: {DEFAULT_MODES})")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode after one warm-up (default 3)")
    parser.add_argument(
        "--weights",
        help="weights: a file, a pretrained name, or 'release' for the authors' checkpoint in the shared folder "
        "(default: the packaged default model, which scl-lle enhance uses)",
    )
    parser.add_argument("--image", help="input photo, resized to each size (default: a DICM photo, or synthetic)")
    parser.add_argument("--threads", type=int, help="torch / onnxruntime CPU threads (default: torch's)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"engine tile size (default {DEFAULT_TILE})")
    parser.add_argument("--half", action="store_true", help="engine in float16 (CUDA); the reference stays fp32")
    parser.add_argument("--channels-last", action="store_true", help="force channels-last in the engine (CUDA)")
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="let cuDNN time its convolution algorithms per input shape"
    )
    parser.add_argument("--no-niqe", action="store_true", help="skip NIQE")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument(
        "--background-load",
        type=int,
        default=0,
        metavar="N",
        help="measure every row again with N busy processes beside the benchmark (default: 0, quiet only)",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.threads:
        torch.set_num_threads(args.threads)
    notes: list[str] = []
    shared = find_shared()
    if shared is not None and "SCL_LLE_SHARED" not in os.environ:
        os.environ["SCL_LLE_SHARED"] = str(shared)  # for the NIQE parameters
    weights_path: Path | None = None
    if args.weights == "release":
        if shared is None:
            parser.error("--weights release needs the shared folder (set SCL_LLE_SHARED)")
        weights_path = shared / "weights" / "upstream" / "scl-lle_official.pth"
    elif args.weights is not None:
        try:
            weights_path = resolve_weights(args.weights)
        except WeightsError as error:
            parser.error(str(error))
    else:
        with contextlib.suppress(WeightsError):  # no packaged model in this checkout: random weights below
            weights_path = resolve_weights(None)
    if weights_path is not None:
        model = load_dcenet(weights_path)
        weights_note = str(weights_path.name) + (" (packaged default)" if args.weights is None else "")
    else:
        torch.manual_seed(0)
        model = DCENet()
        weights_note = "random weights (seed 0)"
        notes.append("no packaged model and no weights given: random weights, so NIQE/PSNR say little")
    reference_model = copy.deepcopy(model).to(device=device, dtype=torch.float32).eval()
    image_path = Path(args.image) if args.image else None
    if image_path is None and shared is not None:
        candidate = shared / "data" / "eval_noref_DICM" / "images" / "01.jpg"
        image_path = candidate if candidate.is_file() else None
    sizes = parse_sizes(args.sizes or DEFAULT_SIZES.get(device.type, "1080p"))
    modes = parse_modes(args.modes)
    dtype = torch.float16 if args.half else torch.float32

    with contextlib.suppress(OSError):
        notes.append(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"device: {device_description(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"fast path: {fused_kernel_description()}")
    print(f"weights: {weights_note}; repeats: {args.repeats} after 1 warm-up; engine tile {args.tile}")
    if device.type == "cuda":
        print(f"engine dtype {dtype}; cudnn.benchmark {args.cudnn_benchmark}; TF32 convolutions "
              f"{torch.backends.cudnn.allow_tf32} (the fp32 reference uses them too)")  # fmt: skip

    def measure() -> list[Row]:
        rows: list[Row] = []
        for size_name, size in sizes:
            rows += run_size(size_name, size, image_path, reference_model, model, modes, device, dtype, args, notes)
        return rows

    rows = measure()
    loaded: list[Row] = []
    if args.background_load > 0:
        print(f"\nagain with {args.background_load} busy background process(es)", flush=True)
        with BackgroundLoad(args.background_load):
            loaded = measure()
            with contextlib.suppress(OSError):
                notes.append(f"load average under load: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with contextlib.suppress(OSError):
        notes.append(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print()
    print(markdown_table(rows))
    if loaded:
        print(f"\nWith {args.background_load} busy background process(es):\n")
        print(markdown_table(loaded))
        print("\nSlow-down under load (median with load / median without):\n")
        print(slowdown_table(rows, loaded))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        payload = {"rows": [asdict(r) for r in rows], "loaded": [asdict(r) for r in loaded], "notes": notes}
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


def run_size(
    size_name: str,
    size: tuple[int, int],
    image_path: Path | None,
    reference_model: DCENet,
    model: DCENet,
    modes: list[Mode],
    device: torch.device,
    dtype: torch.dtype,
    args: argparse.Namespace,
    notes: list[str],
) -> list[Row]:
    x, input_note = load_input(image_path, size)
    print(f"\n{size_name}: {input_note}", flush=True)
    x = x.to(device)

    def reference() -> torch.Tensor:
        return reference_model(x)

    with torch.inference_mode():
        start = time.perf_counter()
        full = reference().clamp(0, 1)
        setup = time.perf_counter() - start
        times, peak = timed(reference, device, args.repeats)
    ref_median = statistics.median(times)
    quality = None if args.no_niqe else niqe_or_none(full)
    if quality is None and not args.no_niqe and not any("NIQE" in n for n in notes):
        notes.append("NIQE skipped: set SCL_LLE_SHARED or SCL_LLE_NIQE_PARAMS to the NIQE parameters")
    rows = [Row(size_name, "reference (eager fp32)", ref_median, min(times), 1.0, peak / 2**20, None, quality, setup)]
    print_row(rows[-1])
    for mode in modes:
        rows.append(run_mode(mode, model, x, full, device, dtype, args, size_name, ref_median))
        print_row(rows[-1])
    return rows


def run_mode(
    mode: Mode,
    model: DCENet,
    x: torch.Tensor,
    full: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    args: argparse.Namespace,
    size_name: str,
    ref_median: float,
) -> Row:
    if mode.backend in PEERS:
        forward, peer = PEERS[mode.backend], peer_state(mode.backend, device)
        with torch.inference_mode():
            start = time.perf_counter()
            forward(peer, x)
            setup = time.perf_counter() - start
            times, peak = timed(lambda: forward(peer, x), device, args.repeats)
        median = statistics.median(times)
        return Row(size_name, mode.label, median, min(times), ref_median / median, peak / 2**20, None, None, setup,
                   "timing only")  # fmt: skip
    with mode.kernels():
        return _time_engine_mode(mode, size_name, x, full, model, device, dtype, ref_median, args)


def _time_engine_mode(
    mode: Mode,
    size_name: str,
    x: torch.Tensor,
    full: torch.Tensor,
    model: DCENet,
    device: torch.device,
    dtype: torch.dtype,
    ref_median: float,
    args: argparse.Namespace,
) -> Row:
    start = time.perf_counter()
    try:
        enhancer = Enhancer(
            copy.deepcopy(model),  # the enhancer moves and converts its model in place
            device=device,
            scale=mode.scale,
            tile=args.tile,
            dtype=dtype if mode.backend == "torch" else torch.float32,
            backend=mode.backend,
            threads=args.threads,
            channels_last=True if args.channels_last else None,
            compile=mode.compile,
            finish=mode.finish,
            exposure=mode.exposure,
        )
        out = enhancer(x)  # warm-up (and compilation)
    except (ImportError, RuntimeError, ValueError) as error:
        return Row(size_name, mode.label, float("nan"), float("nan"), float("nan"), 0, None, None, 0, str(error))
    setup = time.perf_counter() - start
    times, peak = timed(lambda: enhancer(x), device, args.repeats)
    median = statistics.median(times)
    quality = None if args.no_niqe else niqe_or_none(out)
    note = "compiled in warm-up" if mode.compile else ""
    if mode.compile and not enhancer.compile:
        note = "compile failed: eager"
    return Row(size_name, mode.label, median, min(times), ref_median / median, peak / 2**20, psnr(out, full),
               quality, setup, note)  # fmt: skip


def fused_kernel_description() -> str:
    """Which kernels run the fast path's pass and shrink on large CPU pictures here (``scl_lle.engine.fused_pass``)."""
    if not numba_available():
        return "eager PyTorch (numba not installed or SCL_LLE_NUMBA=0)"
    from importlib.metadata import version

    return f"numba {version('numba')} kernels from {NUMBA_MIN_PIXELS / 1e6:g} MP (eager below, and in +eager modes)"


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"CPU {name}, {os.cpu_count()} logical cores"


def _fmt(value: float | None, spec: str) -> str:
    if value is None or value != value:
        return "–"
    return "inf" if value == float("inf") else format(value, spec)


def print_row(row: Row) -> None:
    print(
        f"  {row.mode:28s} median {_fmt(row.median_s, '.3f')} s  x{_fmt(row.ratio, '.2f')}  "
        f"peak {row.peak_mib:.0f} MiB  PSNR {_fmt(row.psnr_db, '.2f')}  NIQE {_fmt(row.niqe, '.3f')}  "
        f"setup {row.setup_s:.1f} s {row.note}",
        flush=True,
    )


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| size | mode | median s | min s | speed-up vs reference | peak memory MiB | PSNR vs full-res dB | NIQE |"
        " warm-up s | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.mode} | {_fmt(r.median_s, '.3f')} | {_fmt(r.min_s, '.3f')} | {_fmt(r.ratio, '.2f')}x"
            f" | {r.peak_mib:.0f} | {_fmt(r.psnr_db, '.2f')} | {_fmt(r.niqe, '.3f')} | {r.setup_s:.1f} | {r.note} |"
        )
    return "\n".join(lines)


def slowdown_table(quiet: list[Row], loaded: list[Row]) -> str:
    lines = ["| size | mode | quiet s | loaded s | slow-down |", "|---|---|---:|---:|---:|"]
    for a, b in zip(quiet, loaded, strict=True):
        ratio = b.median_s / a.median_s if a.median_s == a.median_s and a.median_s > 0 else float("nan")
        lines.append(
            f"| {a.size} | {a.mode} | {_fmt(a.median_s, '.3f')} | {_fmt(b.median_s, '.3f')} | {_fmt(ratio, '.2f')}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
