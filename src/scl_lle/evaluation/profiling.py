"""Measuring the methods: time, peak memory, and the machine they ran on.

:class:`PeakMemory` measures the peak memory of one call on the evaluation device; :class:`MethodStats` adds up a
method's time, megapixels and peak memory over its calls; :func:`device_name` and :func:`versions` describe the
machine and software for the report.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["MethodStats", "PeakMemory", "device_name", "timed_call", "versions"]


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block of code, in MiB, on the evaluation device.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the memory allocated
    before. CPU (Linux): peak resident set size (``VmHWM`` of ``/proc/self/status``, reset by writing 5 to
    ``/proc/self/clear_refs``) minus the RSS before; elsewhere the process's lifetime peak RSS
    (``ru_maxrss``), which only grows.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.method = "torch.cuda.max_memory_allocated (minus memory before)"
        self.resettable = False
        if not self.cuda:
            try:
                with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                    f.write("5")
                self.resettable = _rss_kib() is not None
            except OSError:
                self.resettable = False
            self.method = (
                "peak RSS during the call minus RSS before (Linux VmHWM, reset via /proc/self/clear_refs)"
                if self.resettable
                else "process peak RSS (ru_maxrss; not resettable here, an upper bound)"
            )

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif self.resettable:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self._before = _rss_kib() or 0

    def stop(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self._before) / 2**20
        if self.resettable:
            with open("/proc/self/status", encoding="ascii") as f:
                hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
            return max(0, hwm - self._before) / 1024
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def timed_call(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, memory: PeakMemory
) -> tuple[torch.Tensor, float, float]:
    """``fn(x)``, its wall time in seconds (CUDA-synchronised) and its peak memory in MiB (``memory``'s device)."""
    memory.start()
    start = time.perf_counter()
    out = fn(x)
    if memory.cuda:
        torch.cuda.synchronize(memory.device)
    seconds = time.perf_counter() - start
    return out, seconds, memory.stop()


@dataclass
class MethodStats:
    """A method's totals over the images it ran on (its failures counted apart)."""

    seconds: float = 0.0
    megapixels: float = 0.0
    peak_mib: float = 0.0
    images: int = 0
    failures: int = 0

    def add(self, seconds: float, megapixels: float, peak_mib: float) -> None:
        """Count one successful call: its time, the image's size, the peak memory of the call."""
        self.seconds += seconds
        self.megapixels += megapixels
        self.images += 1
        self.peak_mib = max(self.peak_mib, peak_mib)

    def summary(self) -> dict[str, Any]:
        """The ``results.json`` entry: totals, seconds per megapixel and peak memory (NaN without any image)."""
        return {
            "seconds": self.seconds,
            "megapixels": self.megapixels,
            "seconds_per_megapixel": self.seconds / self.megapixels if self.megapixels else float("nan"),
            "peak_memory_mib": self.peak_mib if self.images else float("nan"),
            "images": self.images,
            "failures": self.failures,
        }


def versions() -> dict[str, str]:
    """Versions of scl-lle, Python, torch, numpy, Pillow and the platform."""
    import PIL

    from .. import __version__

    return {
        "scl-lle": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(),
    }


def device_name(device: torch.device) -> str:
    """A readable name of ``device``: the GPU model, or the CPU model and its logical cores."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("model name"):
                        return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
        except OSError:
            pass
        return platform.processor() or "CPU"
    return device.type
