"""The enhancer's curve-map API (estimate, edit, apply) and the ``exposure`` setting built on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scl_lle import DCENet, Enhancer


@pytest.fixture(scope="module")
def brightening() -> DCENet:
    """A seeded network whose curves brighten everywhere (negative maps), with content-dependent variation."""
    torch.manual_seed(3)
    model = DCENet()
    with torch.no_grad():
        model.e_conv7.weight.mul_(0.1)
        model.e_conv7.bias.fill_(-0.6)  # x + r (x^2 - x) brightens for r < 0
    return model


@pytest.mark.parametrize("scale", [1, 4])
def test_maps_applied_separately_equal_the_one_step_result(brightening: DCENet, scale: int) -> None:
    enhancer = Enhancer(brightening, device="cpu", scale=scale, tile=16)
    images = torch.rand(2, 3, 40, 57) * 0.3  # exposure "auto": the gain is solved on the same thumbnail both ways
    maps = enhancer.curve_maps(images)
    assert maps.shape == (2, 24, -(-40 // scale), -(-57 // scale))
    torch.testing.assert_close(enhancer.apply_curve_maps(images, maps), enhancer(images), atol=1e-5, rtol=0)


def test_exposure_scales_the_curves(brightening: DCENet, weights_file: Path) -> None:
    enhancer = Enhancer(brightening, device="cpu", exposure="off")
    images = torch.rand(1, 3, 24, 32) * 0.3
    full = enhancer(images)
    assert torch.equal(enhancer(images, exposure="off"), full)
    torch.testing.assert_close(enhancer(images, exposure=0.05), images, atol=1e-7, rtol=0)  # already brighter
    means = [enhancer(images, exposure=e).mean().item() for e in (0.2, 0.3, 0.4, 0.5)]
    assert means == sorted(means) and means[0] < means[-1]  # brighter step by step
    torch.testing.assert_close(
        enhancer.apply_curve_maps(images, enhancer.curve_maps(images), exposure=0.3),
        enhancer(images, exposure=0.3),
        atol=1e-5,
        rtol=0,
    )
    pixels = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    half = Enhancer(weights_file, device="cpu").enhance_array(pixels, exposure=0.3)
    assert half.shape == pixels.shape and half.dtype == np.uint8
    for bad in (-0.1, 0.0, 1.0, 1.5, float("nan"), "bright"):
        with pytest.raises(ValueError, match="exposure"):
            enhancer(images, exposure=bad)
