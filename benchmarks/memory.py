"""Memory benchmark: the peak RSS of ``scl-lle enhance`` by photo size (and on a video), one fresh process each.

Each case writes a synthetic dark photo (a smooth gradient with texture and noise, JPEG) of the given size into a
temporary folder, runs the real command line on it in a child process (``python -m scl_lle enhance IN -o OUT
...``) and reads the child's own peak resident set size from ``os.wait4``: what a user's process would need,
the interpreter, PyTorch and the model included. ``--video`` adds a synthetic clip (needs PyAV).

    python benchmarks/memory.py                                  # 5, 20 and 40 MP photos, default settings
    python benchmarks/memory.py --sizes 40 --args "--tile 512"   # one size, other flags
    python benchmarks/memory.py --sizes 5,20,40 --video 1080p    # photos and a 1080p clip
    python benchmarks/memory.py --sizes "" --serve 3             # the web server: 3 uploads of a 7300x5466 PNG

``--serve N`` starts ``scl-lle serve`` in a child process, posts a flat 7300x5466 PNG (130 KB, 39.9 MP: the
largest picture the server takes by default) N times, one after another, and reads the server's peak and current
RSS from ``/proc`` (Linux).

This is a script, not a test: the figures depend on the machine, the allocator and the installed packages
(printed with the results).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
VIDEO_SIZES = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}


def synthetic_photo(megapixels: float, seed: int = 0) -> Image.Image:
    """A dark 4:3 RGB photo of about ``megapixels`` MP: gradients, stripes and noise (not flat, not random)."""
    height = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = round(height * 4 / 3)
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.02, 0.25, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for channel, phase in enumerate((0.0, 1.0, 2.0)):
        band = rows * (0.6 + 0.4 * np.sin(cols * 40 + phase)) + rng.normal(0, 0.01, (height, width)).astype(np.float32)
        pixels[..., channel] = np.clip(band * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def synthetic_clip(path: Path, size: tuple[int, int], frames: int, fps: int = 24) -> None:
    """A dark clip: a gradient that drifts sideways, H.264 in MP4 (needs PyAV)."""
    import av

    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
        y = np.linspace(0.03, 0.2, height, dtype=np.float32)[:, None]
        for index in range(frames):
            luma = y * (0.6 + 0.4 * np.sin(x * 30 + index / 5))
            rgb = np.clip(np.stack([luma, luma * 0.9, luma * 1.1], axis=2) * 255, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def peak_rss_of(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; its own peak RSS in MiB (``os.wait4``), wall seconds, exit status."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if child.stderr is not None:
        error = child.stderr.read().decode(errors="replace").strip()
        if os.waitstatus_to_exitcode(status) != 0:
            print(error, file=sys.stderr)
    return usage.ru_maxrss / 1024, seconds, os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5,20,40", help="photo sizes in megapixels, comma-separated")
    parser.add_argument("--video", default="", help=f"also a clip of this size: {', '.join(VIDEO_SIZES)}")
    parser.add_argument("--video-frames", type=int, default=48, help="frames of the clip")
    parser.add_argument("--serve", type=int, default=0, help="also: uploads of a 7300x5466 PNG to scl-lle serve")
    parser.add_argument("--args", default="", help="extra flags for scl-lle enhance, e.g. '--tile 512'")
    options = parser.parse_args(argv)

    import torch

    print(f"# {platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}")
    print(f"# scl-lle enhance IN -o OUT {options.args}".rstrip())
    print("| input | pixels | peak RSS MiB | seconds | exit |")
    print("|---|---|---|---|---|")
    extra = shlex.split(options.args)
    base = [sys.executable, "-m", "scl_lle", "enhance"]
    with tempfile.TemporaryDirectory(prefix="scl-lle-memory-") as folder:
        work = Path(folder)
        for size in options.sizes.split(","):
            if not size.strip():
                continue
            photo = synthetic_photo(float(size))
            source = work / f"photo-{size}mp.jpg"
            photo.save(source, quality=90)
            pixels = photo.width * photo.height
            del photo
            rss, seconds, code = peak_rss_of([*base, str(source), "-o", str(work / "out"), "--overwrite", *extra])
            print(f"| {size} MP photo ({pixels // 1000} kpx) | {pixels:,} | {rss:.0f} | {seconds:.1f} | {code} |")
        if options.video:
            height, width = VIDEO_SIZES[options.video]
            clip = work / f"clip-{options.video}.mp4"
            synthetic_clip(clip, (height, width), options.video_frames)
            rss, seconds, code = peak_rss_of([*base, str(clip), "-o", str(work / "out"), "--overwrite", *extra])
            label = f"{options.video} video, {options.video_frames} frames"
            print(f"| {label} | {height * width:,} per frame | {rss:.0f} | {seconds:.1f} | {code} |")
        if options.serve:
            serve_uploads(work, options.serve, extra)
    return 0


def _proc_status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_uploads(work: Path, count: int, extra: list[str]) -> None:
    """Post a flat 7300x5466 PNG ``count`` times to a fresh ``scl-lle serve``; print its RSS after each."""
    import http.client
    import socket

    source = work / "flat.png"
    Image.new("RGB", (7300, 5466), (20, 24, 30)).save(source)
    body = source.read_bytes()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "scl_lle", "serve", "--port", str(port), *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                connection.request("GET", "/")
                connection.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        for index in range(count):
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            connection.request("POST", "/api/enhance?name=flat.png", body=body)
            response = connection.getresponse()
            response.read()
            seconds = time.perf_counter() - started
            peak, now = _proc_status(server.pid, "VmHWM"), _proc_status(server.pid, "VmRSS")
            print(
                f"| serve upload {index + 1}: flat PNG {len(body) // 1024} KB | 39,901,800 | {peak:.0f} "
                f"(RSS after: {now:.0f}) | {seconds:.1f} | HTTP {response.status} |"
            )
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
