"""The finishing stage: detail at unit gain, black-point anchoring, and how the enhancer applies them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scl_lle.engine.enhancer import Enhancer
from scl_lle.engine.finishing import (
    NOISE_BLOCK,
    box_filter,
    estimate_noise,
    guided_filter,
    noise_band_rows,
    noise_of_bands,
    split_detail,
)
from scl_lle.models.dcenet import DCENet


def _ramp(height: int = 64, width: int = 96, low: float = 0.02, high: float = 0.3) -> torch.Tensor:
    """A smooth dark RGB ramp ``(1, 3, H, W)`` with slightly different channels."""
    x = torch.linspace(low, high, width).expand(height, width)
    return torch.stack([x, 0.9 * x, 0.8 * x])[None].contiguous()


def test_box_filter_keeps_constants_and_averages_windows() -> None:
    flat = torch.full((1, 2, 9, 7), 0.3)
    assert torch.allclose(box_filter(flat, 2), flat)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 9.0
    out = box_filter(impulse, 1)
    assert out.shape == impulse.shape
    assert torch.allclose(out[..., 3:6, 3:6], torch.ones(3, 3))
    assert float(out.sum()) == pytest.approx(9.0 * 9.0 / 9.0 * 1.0 * 9.0 / 9.0)


def test_guided_filter_keeps_strong_edges_and_flattens_weak_texture() -> None:
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    kept = guided_filter(step, step, 1, 1e-4)
    assert torch.allclose(kept, step, atol=1e-3)  # variance 0.25 >> eps: the edge stays
    weak = 0.5 + 0.01 * (torch.arange(16.0) % 2).expand(1, 1, 16, 16)
    smoothed = guided_filter(weak, weak, 1, 1e-2)  # variance 2.5e-5 << eps: averaged (two 3x3 box passes)
    assert float(smoothed.std()) < 0.2 * float(weak.std())
    kept_texture = guided_filter(weak, weak, 1, 1e-7)  # variance >> eps: the texture stays
    assert float(kept_texture.std()) > 0.9 * float(weak.std())


def test_split_detail_is_exact_and_moves_noise_into_detail() -> None:
    torch.manual_seed(0)
    clean = _ramp()
    noisy = clean + 0.01 * torch.randn_like(clean)
    base, detail = split_detail(noisy)
    assert torch.allclose(base + detail, noisy, atol=1e-6)
    assert float((base - clean).std()) < 0.5 * float((noisy - clean).std())
    assert abs(float(detail.mean())) < 1e-3


def test_tiny_images_are_finished_without_error() -> None:
    for height, width in ((1, 1), (1, 7), (2, 2), (5, 1)):
        image = torch.rand(1, 3, height, width) * 0.2
        assert float(estimate_noise(image)[0]) == 0.0
        out = Enhancer(_model(), device="cpu")(image)
        assert out.shape == image.shape and bool(torch.isfinite(out).all())


def test_estimate_noise_recovers_the_added_sigma() -> None:
    torch.manual_seed(1)
    clean = _ramp(128, 128)
    assert float(estimate_noise(clean)[0]) < 1e-3
    for sigma in (0.005, 0.02):
        grey_noise = sigma * torch.randn(1, 1, 128, 128)
        estimate = float(estimate_noise(clean + grey_noise)[0])
        assert estimate == pytest.approx(sigma, rel=0.3)
    # a tall image is sampled in bands of rows; two images in a batch keep their own estimates
    tall = torch.cat([_ramp(2400, 40) + 0.01 * torch.randn(1, 1, 2400, 40), _ramp(2400, 40)])
    estimates = estimate_noise(tall)
    assert float(estimates[0]) == pytest.approx(0.01, rel=0.3)
    assert float(estimates[1]) < 1e-3


def test_noise_read_in_bands_equals_the_estimate_over_every_block_of_the_whole_image() -> None:
    # the engine reads the bands one at a time; up to 64 bands they must cover every 16x16 block of the image
    torch.manual_seed(2)
    image = torch.rand(2, 3, 150, 61) * 0.2
    rows = noise_band_rows(150)
    banded = noise_of_bands(image[..., top : top + NOISE_BLOCK + 2, :] for top in rows)
    luma = 0.299 * image[:, :1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:]
    laplace = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]]).view(1, 1, 3, 3)
    blocks = F.avg_pool2d(F.conv2d(luma, laplace).abs(), NOISE_BLOCK).flatten(1)  # all (150-2)//16 x (61-2)//16
    assert blocks.shape[1] == 9 * 3
    expected = torch.quantile(blocks, 0.1, dim=1) * (torch.pi / 2) ** 0.5 / 6.0
    assert torch.allclose(banded, expected, atol=1e-7)
    assert torch.allclose(estimate_noise(image), expected, atol=1e-7)


def test_half_precision_enhancer_finishes_like_float32() -> None:
    torch.manual_seed(6)
    image = torch.rand(1, 3, 40, 30) * 0.1
    model = _model()
    half = Enhancer(model, device="cpu", dtype=torch.bfloat16, backend="torch")(image.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    full = Enhancer(model, device="cpu", backend="torch")(image.to(torch.bfloat16).float())
    assert torch.allclose(half.float(), full, atol=2e-2)


def _model() -> DCENet:
    torch.manual_seed(3)
    return DCENet().eval()


def test_finished_enhancer_amplifies_noise_less_than_the_curves_alone() -> None:
    torch.manual_seed(4)
    clean = torch.full((1, 3, 96, 96), 0.06)
    noisy = (clean + 0.004 * torch.randn(1, 1, 96, 96)).clamp(0, 1)
    curves_only = Enhancer(device="cpu", finish=False)(noisy)  # the embedded default model
    finished = Enhancer(device="cpu")(noisy)
    gain_curves = float(curves_only.std()) / float(noisy.std())
    gain_finished = float(finished.std()) / float(noisy.std())
    assert (
        gain_curves > 3.0
    )  # the default model brightens 0.06 about six-fold: the curves lift the noise with the signal
    assert gain_finished < 0.75 * gain_curves
    assert float(finished.mean()) == pytest.approx(float(curves_only.mean()), abs=0.02)


def test_finished_enhancer_tiles_exactly_and_a_reached_exposure_is_identity() -> None:
    torch.manual_seed(5)
    image = torch.rand(1, 3, 70, 45) * 0.3
    model = _model()
    whole = Enhancer(model, device="cpu", tile=None)(image)
    tiled = Enhancer(model, device="cpu", tile=32)(image)
    assert torch.allclose(whole, tiled, atol=1e-5)
    assert torch.allclose(Enhancer(model, device="cpu")(image, exposure=float(image.mean())), image, atol=1e-6)
    enhancer = Enhancer(model, device="cpu", tile=None)
    maps = enhancer.curve_maps(image)
    assert torch.allclose(enhancer.apply_curve_maps(image, maps), whole, atol=1e-5)
