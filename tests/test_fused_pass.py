"""The fast path's numba loops (pass and shrink): the eager operations' results, used only where they fit."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import scl_lle.engine.fused_pass as fused_pass
from scl_lle import Enhancer
from scl_lle.core import curves
from scl_lle.core.curves import apply_upsampled_curves, bilinear_taps
from scl_lle.engine.fused_pass import (
    NUMBA_ENV,
    area_rows,
    curves_rows,
    numba_available,
    upsampled_curves,
    upsampled_curves_into,
)
from scl_lle.engine.tiling import TilePool, TileReader
from scl_lle.io.pixels import from_unit, peak_value, tensor_view, to_unit

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed (pip install 'scl-lle[fast]')")


def _case(scale: int, height: int = 21, width: int = 40, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(scale)
    image = torch.rand(batch, 3, height, width, generator=generator)
    maps = torch.rand(batch, 24, -(-height // scale), -(-width // scale), generator=generator) * 2 - 1
    return image, maps


def _fresh_kernel_with(monkeypatch: pytest.MonkeyPatch, numba_module: object) -> None:
    """The kernel not loaded yet, ``numba_module`` importable as numba, and every picture large enough for it."""
    monkeypatch.setitem(sys.modules, "numba", numba_module)
    monkeypatch.setattr(fused_pass, "_kernels", {})
    monkeypatch.setattr(fused_pass, "_numba_failed", False)
    monkeypatch.setattr(fused_pass, "numba_available", lambda: True)
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)


def _loop(
    source: np.ndarray, target: np.ndarray, maps: torch.Tensor, size: tuple[int, int], region: tuple[int, ...]
) -> None:
    """The loop numba compiles, run as plain Python on one image ``(3, h, w)`` of ``region``."""
    top, left, bottom, right = region
    cpu = torch.device("cpu")
    rows = bilinear_taps(torch.arange(top, bottom), size[0], maps.shape[-2], cpu, torch.float32)
    columns = bilinear_taps(torch.arange(left, right), size[1], maps.shape[-1], cpu, torch.float32)
    peaks = (np.float32(peak_value(source.dtype) or 1), np.float32(peak_value(target.dtype) or 1))
    taps = [t.numpy() for t in (*rows, *columns)]
    curves_rows(source, target, maps[0].numpy(), *taps, *peaks)


@pytest.mark.parametrize("scale", [2, 3, 8])
@pytest.mark.parametrize("width", [40, 37])
@pytest.mark.parametrize("region", [(0, 0, 21, None), (4, 0, 17, None), (3, 5, 19, 30)])
def test_the_kernel_loop_equals_the_eager_pass(scale: int, width: int, region: tuple):
    # Every column phase, the clamped edges, odd and even scales, widths that are and are not a multiple of the
    # scale, a band of rows inside the picture and a region inside it (taps of absolute rows and columns).
    image, maps = _case(scale, width=width)
    size = (21, width)
    top, left, bottom, right = (*region[:3], region[3] or width)
    box = (top, left, bottom, right)
    expected = apply_upsampled_curves(image[..., top:bottom, left:right], maps, size, box).clamp(0, 1)
    out = np.empty((3, bottom - top, right - left), dtype=np.float32)
    _loop(image[0, :, top:bottom, left:right].numpy(), out, maps, size, box)
    assert np.abs(out - expected[0].numpy()).max() < 2e-6


def test_the_kernel_loop_reads_and_writes_the_pictures_own_pixels():
    # Interleaved uint8 and uint16 in, the same type out: the engine's conversions (to_unit, from_unit) around
    # the eager pass, to one level of rounding; floats read as to_unit reads them (NaN 0, clipped).
    image, maps = _case(4, height=16, width=24)
    size, box = (16, 24), (0, 0, 16, 24)
    for dtype, peak in ((np.uint8, 255), (np.uint16, 65535)):
        pixels = (image[0].permute(1, 2, 0).numpy() * peak).round().astype(dtype)  # (H, W, 3)
        as_tensor = tensor_view(pixels)
        unit = to_unit(as_tensor.permute(2, 0, 1)[None], torch.float32)
        enhanced = apply_upsampled_curves(unit, maps, size).clamp(0, 1)
        expected = from_unit(enhanced, as_tensor.dtype)[0].to(torch.int32).numpy()
        out = np.empty_like(pixels)
        _loop(pixels.transpose(2, 0, 1), out.transpose(2, 0, 1), maps, size, box)
        assert np.abs(out.transpose(2, 0, 1).astype(np.int64) - expected).max() <= 1
        same = np.empty_like(pixels)  # identity curves give back every pixel exactly
        _loop(pixels.transpose(2, 0, 1), same.transpose(2, 0, 1), torch.zeros_like(maps), size, box)
        assert np.array_equal(same, pixels)
    odd = image[0].numpy().copy()
    odd[0, 0, :4] = [np.nan, np.inf, -np.inf, 3.0]
    odd[1, 2, 7] = -0.5
    out = np.empty_like(odd)
    _loop(odd, out, maps, size, box)
    expected = apply_upsampled_curves(to_unit(torch.from_numpy(odd))[None], maps, size).clamp(0, 1)[0].numpy()
    assert np.abs(out - expected).max() < 2e-6


@needs_numba
@pytest.mark.parametrize("scale", [3, 8])
def test_the_numba_kernel_equals_the_eager_pass(monkeypatch: pytest.MonkeyPatch, scale: int):
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    image, maps = _case(scale, height=40, width=7 * scale - 2, batch=2)
    size = tuple(image.shape[-2:])
    region = (9, 0, 33, size[1])
    part = image[..., 9:33, :].contiguous()
    kernel = upsampled_curves(part, maps, size, region)
    eager = apply_upsampled_curves(part, maps, size, region).clamp(0, 1)
    assert (kernel - eager).abs().max().item() < 2e-6
    assert "curves_rows" in fused_pass._kernels  # the kernel did run


def test_the_eager_pass_serves_where_the_kernel_does_not_fit(monkeypatch: pytest.MonkeyPatch):
    # Small pictures, other dtypes, pixels it cannot read or write and SCL_LLE_NUMBA=0 keep the eager pass: the
    # numba kernel must not even be loaded for them.
    def no_kernel(loop: object) -> None:
        raise AssertionError("the numba kernel was used")

    monkeypatch.setattr(fused_pass, "_numba_kernel", no_kernel)
    image, maps = _case(8)
    size = tuple(image.shape[-2:])
    region = (0, 0, *size)
    upsampled_curves(image, maps, size, region)  # below NUMBA_MIN_PIXELS
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    upsampled_curves(image.double(), maps.double(), size, region)
    target = np.empty((1, 3, *size), dtype=np.float32)
    assert not upsampled_curves_into(image.double().numpy(), target, maps, size, region)
    assert not upsampled_curves_into(None, target, maps, size, region)
    assert not upsampled_curves_into(image.numpy(), None, maps, size, region)
    monkeypatch.setenv(NUMBA_ENV, "0")
    assert not numba_available()
    upsampled_curves(image, maps, size, region)
    assert upsampled_curves_into(image.numpy(), target, maps, size, region)  # the eager operations wrote it
    assert np.array_equal(target, apply_upsampled_curves(image, maps, size).clamp(0, 1).numpy())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("region", [(0, 0, 21, 40), (3, 5, 19, 30)])
def test_without_numba_the_eager_pass_reads_and_writes_the_pictures_own_pixels(
    monkeypatch: pytest.MonkeyPatch, dtype: type, region: tuple[int, int, int, int]
):
    # Block by block, each converted as it is read and written: exactly what converting the whole region
    # (to_unit), the eager pass and converting back (from_unit) give. Interleaved pixels (H, W, 3), as decoded.
    monkeypatch.setenv(NUMBA_ENV, "0")
    monkeypatch.setattr(curves, "BLOCK_PIXELS", 50)  # many blocks, some cut across columns
    image, maps = _case(4)
    size, (top, left, bottom, right) = (21, 40), region
    peak = peak_value(np.dtype(dtype)) or 1
    pixels = (image[0].permute(1, 2, 0).numpy() * peak).round().astype(dtype)  # (H, W, 3)
    if dtype == np.float32:
        pixels[0, :4, 0] = [np.nan, np.inf, -np.inf, 3.0]
    source = pixels.transpose(2, 0, 1)[None, :, top:bottom, left:right]
    out = np.zeros((size[0], size[1], 3), dtype=dtype)
    assert upsampled_curves_into(source, out.transpose(2, 0, 1)[None, :, top:bottom, left:right], maps, size, region)
    unit = to_unit(torch.from_numpy(np.ascontiguousarray(source)), torch.float32)
    enhanced = apply_upsampled_curves(unit, maps, size, region).clamp(0, 1)
    expected = from_unit(enhanced, torch.from_numpy(out).dtype)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(out[top:bottom, left:right], expected, equal_nan=False)
    assert not out[:top].any() and not out[bottom:].any() and not out[:, :left].any() and not out[:, right:].any()
    read_only = np.broadcast_to(source, source.shape)  # e.g. a grey picture's channels: the other path serves it
    assert not upsampled_curves_into(read_only, out.transpose(2, 0, 1)[None], maps, size, region)
    elsewhere = maps.to("meta")  # maps on another device (a GPU): the engine's other path keeps them there
    assert not upsampled_curves_into(source, out.transpose(2, 0, 1)[None], elsewhere, size, region)


@needs_numba
def test_the_fast_path_gives_the_same_picture_with_and_without_numba(
    monkeypatch: pytest.MonkeyPatch, weights_file: Path
):
    # Tensors, and pictures the kernel reads and writes in their own type: interleaved uint8, uint16 and grey.
    torch.manual_seed(3)
    x = torch.rand(2, 3, 96, 157) * 0.4
    pictures = [
        (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
        (x[1].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16),
        (x[0, 0].numpy() * 255).round().astype(np.uint8),
    ]
    enhancer = Enhancer(weights_file, exposure="off", device="cpu", scale=8, tile=48, finish=False)
    monkeypatch.setenv(NUMBA_ENV, "0")
    eager = enhancer(x), [enhancer.enhance_array(p) for p in pictures]
    monkeypatch.delenv(NUMBA_ENV)
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    kernel = enhancer(x), [enhancer.enhance_array(p) for p in pictures]
    assert (kernel[0] - eager[0]).abs().max().item() < 1e-5
    assert not torch.equal(kernel[0], x)
    for picture, with_kernel, without in zip(pictures, kernel[1], eager[1], strict=True):
        assert with_kernel.dtype == picture.dtype and with_kernel.shape == picture.shape
        assert np.abs(with_kernel.astype(np.int64) - without.astype(np.int64)).max() <= 1
        assert not np.array_equal(with_kernel, picture)


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
    assert fused_pass._kernels["curves_rows"] is curves_rows
    assert (out - apply_upsampled_curves(image, maps, size).clamp(0, 1)).abs().max().item() < 2e-6


def test_a_kind_of_picture_the_kernel_fails_on_warns_and_leaves_the_eager_pass(monkeypatch: pytest.MonkeyPatch):
    # numba compiles the loop again for each kind of picture it meets (pixel type, strides); one it cannot
    # compile for must not break enhancement either.
    def failing(*args: object) -> None:
        raise TypeError("no implementation for this kind of array")

    _fresh_kernel_with(monkeypatch, None)
    monkeypatch.setitem(fused_pass._kernels, "curves_rows", failing)
    image, maps = _case(8)
    size = tuple(image.shape[-2:])
    with pytest.warns(UserWarning, match="numba kernel unavailable"):
        out = upsampled_curves(image, maps, size, (0, 0, *size))
    assert torch.equal(out, apply_upsampled_curves(image, maps, size))
    assert fused_pass._numba_failed and not fused_pass._kernels


@pytest.mark.parametrize("size", [(16, 24), (17, 23)])
def test_the_shrink_loop_equals_the_area_average(size: tuple[int, int]):
    # The loop numba compiles for the network's shrunk picture, as plain Python: the bins of adaptive average
    # pooling (exact cells and sizes that do not divide), a strip of output rows, pixels read as to_unit reads them.
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(3, *size, generator=generator)
    image[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -2.0])
    out_size = (-(-size[0] // 4), -(-size[1] // 4))
    expected = torch.nn.functional.adaptive_avg_pool2d(to_unit(image)[None], out_size)[0].numpy()
    columns = fused_pass._bins(size[1], out_size[1])
    starts, stops = fused_pass._bins(size[0], out_size[0])
    out = np.full((3, 2, out_size[1]), np.nan, dtype=np.float32)
    band = image[:, starts[1] : stops[2]].numpy()
    area_rows(band, out, starts[1:3], stops[1:3], *columns, np.float32(1))
    assert np.abs(out - expected[:, 1:3]).max() < 1e-6
    pixels = (np.clip(image.nan_to_num(0).numpy(), 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0).copy()
    unit = to_unit(torch.from_numpy(pixels).permute(2, 0, 1))[None]
    expected = torch.nn.functional.adaptive_avg_pool2d(unit, out_size)[0].numpy()
    out = np.empty((3, *out_size), dtype=np.float32)
    area_rows(pixels.transpose(2, 0, 1), out, starts, stops, *columns, np.float32(255))
    assert np.abs(out - expected).max() < 1e-6


@needs_numba
def test_the_reader_shrinks_by_the_kernel_as_it_does_without(monkeypatch: pytest.MonkeyPatch):
    pixels = np.random.default_rng(2).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    grey = pixels[..., 1].copy()
    monkeypatch.setenv(NUMBA_ENV, "0")
    pool = TilePool(2)
    eager = [TileReader(p, torch.device("cpu"), torch.float32).downsample(8, pool=pool) for p in (pixels, grey)]
    monkeypatch.delenv(NUMBA_ENV)
    monkeypatch.setattr(fused_pass, "NUMBA_MIN_PIXELS", 0)
    kernel = [TileReader(p, torch.device("cpu"), torch.float32).downsample(8, pool=pool) for p in (pixels, grey)]
    assert "area_rows" in fused_pass._kernels
    for with_kernel, without in zip(kernel, eager, strict=True):
        assert with_kernel.shape == without.shape == (1, 3, 6, 9)
        assert (with_kernel - without).abs().max().item() < 1e-6
