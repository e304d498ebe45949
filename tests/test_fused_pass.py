"""The fast path's fused pass: the numba loop gives the eager pass's result, and is used only where it fits."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import scl_lle.engine.fused_pass as fused_pass
from scl_lle import Enhancer
from scl_lle.core.curves import apply_upsampled_curves, bilinear_taps
from scl_lle.engine.fused_pass import NUMBA_ENV, curves_rows, numba_available, upsampled_curves

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed (pip install 'scl-lle[fast]')")


def _case(scale: int, height: int = 21, low_width: int = 5, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(scale)
    image = torch.rand(batch, 3, height, scale * low_width, generator=generator)
    maps = torch.rand(batch, 24, -(-height // scale), low_width, generator=generator) * 2 - 1
    return image, maps


def _fresh_kernel_with(monkeypatch: pytest.MonkeyPatch, numba_module: object) -> None:
    """The kernel not loaded yet, ``numba_module`` importable as numba, and every picture large enough for it."""
    monkeypatch.setitem(sys.modules, "numba", numba_module)
    monkeypatch.setattr(fused_pass, "_numba_rows", None)
    monkeypatch.setattr(fused_pass, "_numba_failed", False)
    monkeypatch.setattr(fused_pass, "numba_available", lambda: True)
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)


@pytest.mark.parametrize("scale", [2, 3, 8])
@pytest.mark.parametrize("rows", [(0, 21), (4, 17)])
def test_the_kernel_loop_equals_the_eager_pass(scale: int, rows: tuple[int, int]):
    # The loop numba compiles, run as plain Python: every phase of the column period, the clamped edges, odd and
    # even scales, and a band of rows inside the picture (y taps of absolute rows).
    image, maps = _case(scale)
    height, width = image.shape[-2:]
    top, bottom = rows
    expected = apply_upsampled_curves(image[..., top:bottom, :], maps, (height, width), (top, 0, bottom, width))
    taps = bilinear_taps(torch.arange(top, bottom), height, maps.shape[-2], image.device, image.dtype)
    out = np.empty((3, bottom - top, width), dtype=np.float32)
    x = image[0, :, top:bottom].contiguous().numpy()
    curves_rows(x, maps[0].numpy(), *(t.numpy() for t in taps), scale, out)
    assert np.abs(out - expected[0].numpy()).max() < 2e-6


@needs_numba
@pytest.mark.parametrize("scale", [3, 8])
def test_the_numba_kernel_equals_the_eager_pass(monkeypatch: pytest.MonkeyPatch, scale: int):
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    image, maps = _case(scale, height=40, low_width=7, batch=2)
    size = tuple(image.shape[-2:])
    region = (9, 0, 33, size[1])
    part = image[..., 9:33, :].contiguous()
    kernel = upsampled_curves(part, maps, size, region)
    eager = apply_upsampled_curves(part, maps, size, region)
    assert (kernel - eager).abs().max().item() < 2e-6
    assert fused_pass._numba_rows is not None  # the kernel did run


def test_the_eager_pass_serves_where_the_kernel_does_not_fit(monkeypatch: pytest.MonkeyPatch):
    # Small pictures, widths that are no multiple of the scale, other dtypes and SCL_LLE_NUMBA=0 keep the eager
    # pass: the numba kernel must not even be loaded for them.
    def no_kernel() -> None:
        raise AssertionError("the numba kernel was used")

    monkeypatch.setattr(fused_pass, "_numba_kernel", no_kernel)
    image, maps = _case(8)
    size = tuple(image.shape[-2:])
    upsampled_curves(image, maps, size, (0, 0, *size))  # below NUMBA_MIN_PIXELS
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    uneven = torch.rand(1, 3, 16, 41)
    upsampled_curves(uneven, torch.rand(1, 24, 2, 6) - 0.5, (16, 41), (0, 0, 16, 41))  # 41 = 6 * 8 - 7
    upsampled_curves(image.double(), maps.double(), size, (0, 0, *size))
    monkeypatch.setenv(NUMBA_ENV, "0")
    assert not numba_available()
    upsampled_curves(image, maps, size, (0, 0, *size))


@needs_numba
def test_the_fast_path_gives_the_same_picture_with_and_without_numba(
    monkeypatch: pytest.MonkeyPatch, weights_file: Path
):
    torch.manual_seed(3)
    x = torch.rand(2, 3, 96, 160) * 0.4
    enhancer = Enhancer(weights_file, exposure="off", device="cpu", scale=8, tile=48, finish=False)
    monkeypatch.setenv(NUMBA_ENV, "0")
    eager = enhancer(x)
    monkeypatch.delenv(NUMBA_ENV)
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    kernel = enhancer(x)
    assert (kernel - eager).abs().max().item() < 1e-5
    assert not torch.equal(kernel, x)


def test_a_numba_that_cannot_compile_warns_once_and_leaves_the_eager_pass(monkeypatch: pytest.MonkeyPatch):
    # A numba that does not fit this numpy or platform must not break enhancement: one warning, then eager.
    class BrokenNumba:
        @staticmethod
        def njit(**options: object) -> object:
            raise RuntimeError("no LLVM here")

    _fresh_kernel_with(monkeypatch, BrokenNumba)
    image, maps = _case(8)
    size = tuple(image.shape[-2:])
    with pytest.warns(UserWarning, match="numba kernel unavailable"):
        first = upsampled_curves(image, maps, size, (0, 0, *size))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = upsampled_curves(image, maps, size, (0, 0, *size))
    expected = apply_upsampled_curves(image, maps, size)
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_without_a_place_for_numbas_cache_the_kernel_is_compiled_per_process(monkeypatch: pytest.MonkeyPatch):
    # numba refuses cache=True where it can write no cache (read-only install, no home): the kernel must still run.
    class NumbaWithoutCache:
        @staticmethod
        def njit(cache: bool, **options: object) -> object:
            if cache:
                raise RuntimeError("cannot cache function 'curves_rows': no locator available")
            return lambda function: function  # the loop as plain Python: same result, slowly

    _fresh_kernel_with(monkeypatch, NumbaWithoutCache)
    image, maps = _case(3)
    size = tuple(image.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upsampled_curves(image, maps, size, (0, 0, *size))
    assert fused_pass._numba_rows is curves_rows
    assert (out - apply_upsampled_curves(image, maps, size)).abs().max().item() < 2e-6
