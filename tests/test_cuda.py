"""The engine and training on a CUDA device: same results as the CPU, half precision close to float32, tiles
bound GPU memory. Skipped without a GPU; ``benchmarks/gpu.sh`` runs them on a lent one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_training_config
from scl_lle import Enhancer
from scl_lle.models.hub import load_dcenet
from scl_lle.train.config import apply_overrides
from scl_lle.train.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# cuDNN runs float32 convolutions in TF32 by default (PyTorch's setting, which the engine leaves to the user);
# the float32 comparisons turn it off, so that only the order of summation differs from the CPU.
FP32_MAX, FP32_MEAN = 1e-4, 1e-5


@pytest.fixture
def strict_float32(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """A dark, noisy ``(1, 3, 300, 420)`` picture in [0, 1] with structure at several scales."""
    generator = torch.Generator().manual_seed(0)
    ys = torch.linspace(0, 1, 300)[:, None]
    xs = torch.linspace(0, 1, 420)[None, :]
    tint = torch.stack([torch.ones(300, 420), torch.full((300, 420), 0.8), (0.6 + ys).expand(300, 420)])
    base = 0.04 + 0.12 * (0.5 + 0.5 * torch.sin(9 * xs + 5 * ys)) * tint
    return (base + 0.01 * torch.randn(3, 300, 420, generator=generator)).clamp(0, 1)[None]


def _errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a.detach().cpu().float() - b.detach().cpu().float()).abs()
    return diff.max().item(), diff.mean().item()


@pytest.mark.parametrize("finish", [False, True])
@pytest.mark.parametrize("scale", [1, 4])
def test_cuda_matches_cpu(image: torch.Tensor, scale: int, finish: bool, strict_float32: None) -> None:
    cpu = Enhancer(None, device="cpu", scale=scale, tile=128, finish=finish)(image)
    gpu = Enhancer(None, device="cuda", scale=scale, tile=128, finish=finish)(image.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32 and gpu.shape == image.shape
    worst, mean = _errors(gpu, cpu)
    assert worst < FP32_MAX and mean < FP32_MEAN, (worst, mean)
    assert (cpu - image).abs().mean() > 0.05  # the enhancement itself is far larger than the tolerance


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1, 8])
def test_half_precision_is_close_to_float32(image: torch.Tensor, dtype: torch.dtype, scale: int) -> None:
    reference = Enhancer(None, device="cpu", scale=scale)(image)
    enhancer = Enhancer(None, device="cuda", scale=scale, dtype=dtype)
    assert enhancer.channels_last  # the default for half precision on CUDA
    out = enhancer(image.cuda())
    assert out.dtype == torch.float32  # back in the caller's dtype
    worst, mean = _errors(out, reference)
    limit = 1e-2 if dtype == torch.float16 else 4e-2  # bfloat16 keeps 8 bits of mantissa, float16 11
    assert worst < 5 * limit and mean < limit / 2, (worst, mean)


def test_tiles_equal_one_piece_on_cuda(image: torch.Tensor, strict_float32: None) -> None:
    x = image.cuda()
    whole = Enhancer(None, device="cuda", tile=None)(x)
    tiled = Enhancer(None, device="cuda", tile=64)(x)
    worst, mean = _errors(tiled, whole)
    assert worst < FP32_MAX and mean < FP32_MEAN, (worst, mean)  # only the convolution algorithms differ


def test_tiles_bound_gpu_memory() -> None:
    """Peak GPU memory of a 2048x2048 half-precision image: tiles of 512 need far less than one piece."""
    x = torch.rand(1, 3, 2048, 2048, device="cuda", dtype=torch.float16) * 0.2
    peaks = {}
    for tile in (None, 512):
        enhancer = Enhancer(None, device="cuda", dtype=torch.float16, tile=tile)
        enhancer(x[..., :256, :256])  # load kernels and handles outside the measurement
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = enhancer(x)
        torch.cuda.synchronize()
        peaks[tile] = torch.cuda.max_memory_allocated() - before
        del out
    one_plane = x.numel() * x.element_size()  # the image itself, 24 MiB
    assert peaks[512] < peaks[None] / 3, peaks
    assert peaks[512] < 40 * one_plane, peaks


def test_compiled_engine_on_cuda_matches_eager(image: torch.Tensor) -> None:
    x = image.cuda()
    eager = Enhancer(None, device="cuda", scale=4, dtype=torch.float16)(x)
    compiled = Enhancer(None, device="cuda", scale=4, dtype=torch.float16, compile=True)
    out = compiled(x)
    assert compiled.compile, "torch.compile fell back to eager"
    worst, mean = _errors(out, eager)
    assert worst < 2e-2 and mean < 2e-3, (worst, mean)


def test_training_steps_on_cuda(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SCL_LLE_CACHE", str(tmp_path / "empty-cache"))  # a random VGG16 guide, as in CPU tests
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    config = apply_overrides(
        tiny_training_config(tmp_path),
        ["device=cuda", "steps=4", "log_every=2", "validation.folder=null", "checkpoint_every=4"],
    )
    weights = train(config, progress=False)
    assert all(torch.isfinite(v).all() for v in load_dcenet(weights).state_dict().values())
    rows = [json.loads(line) for line in (weights.parent / "log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert [row["step"] for row in rows if "loss" in row] == [2, 4]
    assert all(math.isfinite(loss) for loss in losses), losses
