"""Tests for scl_lle.evaluation.baselines: the classical enhancement methods on tiny synthetic images."""

from __future__ import annotations

import pytest
import torch

from scl_lle.evaluation import baselines as B


def _rand(*shape: int, seed: int = 0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(*shape, generator=g)


def _grey(h: int, w: int, low: float, high: float, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) grey noise in [low, high], on the 8-bit grid."""
    x = _rand(1, 1, h, w, seed=seed, low=low, high=high).expand(1, 3, h, w).contiguous()
    return torch.round(x * 255) / 255


def _scene(h: int = 96, w: int = 128) -> torch.Tensor:
    """A smooth colour scene with a few edges, (1, 3, h, w) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    r = 0.3 + 0.6 * xx
    g = 0.2 + 0.5 * yy
    b = 0.4 + 0.4 * ((xx > 0.5) ^ (yy > 0.5)).float()
    return torch.stack([r, g, b]).unsqueeze(0).clamp(0, 1)


@pytest.mark.parametrize("name", list(B.BASELINES))
def test_shape_range_dtype(name: str) -> None:
    fn = B.BASELINES[name]
    x = _rand(2, 3, 40, 56, low=0.0, high=0.3)
    y = fn(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    y64 = fn(x.double())
    assert y64.dtype == torch.float64
    assert torch.allclose(y64.float(), y, atol=2e-3)


@pytest.mark.parametrize("name", list(B.BASELINES))
def test_rejects_bad_input(name: str) -> None:
    with pytest.raises(ValueError):
        B.BASELINES[name](torch.rand(3, 8, 8))
    with pytest.raises(TypeError):
        B.BASELINES[name](torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_per_image_in_batch() -> None:
    a, b = _rand(1, 3, 48, 64, seed=1, high=0.2), _rand(1, 3, 48, 64, seed=2, low=0.5)
    for fn in B.BASELINES.values():
        both = fn(torch.cat([a, b]))
        assert torch.allclose(both[0:1], fn(a), atol=1e-5)
        assert torch.allclose(both[1:2], fn(b), atol=1e-5)


def test_identity_exact() -> None:
    x = _rand(1, 3, 17, 23)
    y = B.identity(x)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


def test_gamma_brightens_dark_and_keeps_bright() -> None:
    dark = _rand(1, 3, 32, 32, low=0.02, high=0.2)
    y = B.gamma_correction(dark)
    assert (y >= dark).all() and y.mean() > 2 * dark.mean()
    # adaptive: the mean luminance maps to 0.45, i.e. mean(Y) ** e = 0.45 for the exponent used
    mean_y = B.luminance(dark).mean()
    exponent = torch.log(torch.tensor(0.45)) / torch.log(mean_y)
    assert torch.allclose(y, dark**exponent, atol=1e-5)
    bright = _rand(1, 3, 32, 32, low=0.6, high=1.0)
    assert torch.allclose(B.gamma_correction(bright), bright)  # never darkens
    assert torch.allclose(B.gamma_correction(dark, gamma=2.2), dark ** (1 / 2.2))


def test_histeq_flattens_histogram() -> None:
    x = _grey(64, 64, 0.05, 0.25)
    y = B.histeq(x)[:, 0]
    hist = torch.histc(y, bins=8, min=0, max=1) / y.numel()
    assert (hist - 1 / 8).abs().max() < 0.04, hist
    before = torch.histc(x[:, 0], bins=8, min=0, max=1) / y.numel()
    assert before.max() > 0.5
    # grey stays grey; order of values is kept
    out = B.histeq(x)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    xs, ys = x[0, 0].flatten(), y[0].flatten()
    order = torch.argsort(xs)
    assert (ys[order].diff() >= -1e-6).all()


def test_colour_kept_by_ratio() -> None:
    x = _scene() * 0.2
    for fn in (B.histeq, B.clahe):
        y = fn(x)
        unclipped = y.amax(dim=1) < 0.999
        ratio = y / x.clamp_min(1e-6)
        spread = (ratio.amax(dim=1) - ratio.amin(dim=1))[unclipped]
        assert spread.max() < 1e-3


def test_clahe_limits_contrast_amplification() -> None:
    x = _grey(128, 192, 0.40, 0.44)  # a narrow band of 11 grey levels
    levels = len(torch.unique(x))
    he = B.histeq(x)
    assert he.max() - he.min() > 0.99  # global equalisation stretches it over the whole range
    ranges = []
    for clip in (1.0, 2.0, 4.0):
        y = B.clahe(x, clip_limit=clip)
        spread = float(y.max() - y.min())
        # each tile mapping rises at most (clip + 1) / 256 per grey level
        assert spread <= (clip + 1) * levels / 256 + 1e-3
        ranges.append(spread)
    assert ranges[0] < ranges[1] < ranges[2] < 0.3
    assert B.clahe(x).std() < he.std() / 4


def test_clahe_local_and_odd_sizes() -> None:
    # left half dark, right half bright: CLAHE brings out the texture of both halves
    left = _grey(60, 50, 0.05, 0.10, seed=1)
    right = _grey(60, 50, 0.80, 0.85, seed=2)
    x = torch.cat([left, right], dim=-1)
    y = B.clahe(x)
    assert y.shape == x.shape
    assert y[..., :, :40].std() > 1.5 * x[..., :, :40].std()
    assert B.clahe(_rand(1, 3, 5, 7)).shape == (1, 3, 5, 7)  # fewer pixels than tiles


def test_lime_brightens_dark_keeps_bright() -> None:
    scene = _scene()
    dark = scene * 0.15
    y = B.lime(dark)
    assert y.mean() > 2.5 * dark.mean()
    assert (y >= dark - 1e-6).all()
    # structure is kept: the enhanced image correlates strongly with the scene
    corr = torch.corrcoef(torch.stack([y.flatten(), scene.flatten()]))[0, 1]
    assert corr > 0.9
    bright = scene.clone()
    bright = bright / bright.amax(dim=1, keepdim=True)  # max over RGB = 1 everywhere
    assert (B.lime(bright) - bright).abs().max() < 0.02


def test_lime_refinement_is_edge_aware() -> None:
    # a step illumination with noise: the refined map is smoother than the initial one but keeps the step
    g = torch.Generator().manual_seed(0)
    t0 = torch.full((1, 1, 64, 64), 0.1)
    t0[..., 32:] = 0.6
    t0 = (t0 + 0.02 * torch.randn(t0.shape, generator=g)).clamp(0, 1)
    t = B._refine_illumination(t0, alpha=0.15, sigma=2.0, eps=1e-3, iterations=60, tol=1e-4)
    assert t[..., :, 4:28].std() < 0.5 * t0[..., :, 4:28].std()
    assert t[..., :, 36:].mean() - t[..., :, :28].mean() > 0.4
