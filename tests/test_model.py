"""DCE-Net: layout, curve equations, reduced-resolution curves, and agreement with the released checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scl_lle import DCENet, Enhancer, apply_curves, load_dcenet
from scl_lle.core import curves
from scl_lle.core.curves import apply_upsampled_curves, sample_maps, upsample_maps, upsampled_curves_band


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """DCE-Net written out from the published equations, independent of the package."""

    def conv(name: str, inp: torch.Tensor) -> torch.Tensor:
        return F.conv2d(inp, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    x1 = torch.relu(conv("e_conv1", x))
    x2 = torch.relu(conv("e_conv2", x1))
    x3 = torch.relu(conv("e_conv3", x2))
    x4 = torch.relu(conv("e_conv4", x3))
    x5 = torch.relu(conv("e_conv5", torch.cat([x3, x4], 1)))
    x6 = torch.relu(conv("e_conv6", torch.cat([x2, x5], 1)))
    r = torch.tanh(conv("e_conv7", torch.cat([x1, x6], 1)))
    for i in range(8):
        ri = r[:, 3 * i : 3 * i + 3]
        x = x + ri * (torch.pow(x, 2) - x)
    return x


def test_layout_matches_the_release():
    model = DCENet()
    assert sum(p.numel() for p in model.parameters()) == 79_416
    assert sorted({k.split(".")[0] for k in model.state_dict()}) == [f"e_conv{i}" for i in range(1, 8)]
    maps = model.curve_maps(torch.rand(2, 3, 20, 24))
    assert maps.shape == (2, 24, 20, 24)
    assert maps.abs().max() <= 1


def test_apply_curves_values_by_hand():
    x = torch.full((1, 3, 1, 1), 0.5)
    one = torch.ones(1, 3, 1, 1)
    # r = 1: 0.5 + (0.25 - 0.5) = 0.25; r = -1: 0.5 - (0.25 - 0.5) = 0.75; zero maps leave x as it is.
    assert apply_curves(x, one).unique().item() == pytest.approx(0.25)
    assert apply_curves(x, -one).unique().item() == pytest.approx(0.75)
    assert apply_curves(x, torch.zeros(1, 24, 1, 1)).unique().item() == pytest.approx(0.5)
    # two curves in turn: 0.5 -> 0.75 (r=-1) -> 0.75 + 0.5 * (0.5625 - 0.75) = 0.65625 (r=0.5)
    maps = torch.cat([-one, 0.5 * one], 1)
    assert apply_curves(x, maps).unique().item() == pytest.approx(0.65625)
    with pytest.raises(ValueError):
        apply_curves(x, torch.zeros(1, 4, 1, 1))


def test_apply_curves_gives_the_same_values_with_and_without_a_graph():
    # Without a graph to keep, apply_curves works in place on one temporary: the same values to the bit, the
    # input untouched; with one, autograd sees the out-of-place form.
    torch.manual_seed(2)
    x, maps = torch.rand(2, 3, 9, 11), torch.rand(2, 24, 9, 11) * 2 - 1
    kept = x.clone()
    fast = apply_curves(x, maps)
    leaf = maps.clone().requires_grad_()
    traced = apply_curves(x, leaf)
    assert traced.grad_fn is not None and torch.equal(fast, traced.detach())
    traced.sum().backward()
    assert leaf.grad is not None and torch.equal(x, kept)
    assert torch.equal(apply_curves(x, maps[:1]), apply_curves(x, maps[:1].expand(2, -1, -1, -1).clone()))
    assert apply_curves(x.half(), maps).dtype == torch.float32  # promoted as the paper's form promotes


def test_curves_keep_the_unit_range():
    x = torch.rand(1, 3, 16, 16)
    maps = torch.rand(1, 24, 16, 16) * 2 - 1
    y = apply_curves(x, maps)
    assert y.min() >= 0 and y.max() <= 1


def test_scale_estimates_on_a_smaller_image():
    torch.manual_seed(0)
    model = DCENet()
    x = torch.rand(1, 3, 30, 41)
    out, maps = model.forward_with_maps(x, scale=4)
    assert out.shape == x.shape and maps.shape == (1, 24, 30, 41)
    small = F.interpolate(x, size=(8, 11), mode="area")
    expected = F.interpolate(model.curve_maps(small), size=(30, 41), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError):
        model(x, scale=0)


def test_upsample_maps_by_region_equals_whole():
    maps = torch.rand(2, 6, 7, 9)
    whole = upsample_maps(maps, (27, 35))
    part = upsample_maps(maps, (27, 35), region=(5, 11, 19, 30))
    torch.testing.assert_close(part, whole[..., 5:19, 11:30], atol=1e-6, rtol=0)


@pytest.mark.parametrize("step", [1, 7, 16])
def test_sampled_maps_are_the_upsampled_maps_at_the_samples(step: int):
    # The exposure solve of the fast path sees the curve maps the fused pass applies at the sampled pixels.
    torch.manual_seed(4)
    small = torch.rand(2, 24, 13, 17) * 2 - 1
    size = (101, 133)
    sampled = sample_maps(small, size, step)
    assert torch.allclose(sampled, upsample_maps(small, size)[..., ::step, ::step], atol=1e-5)


@pytest.mark.parametrize("band", [None, 1, 5, 64])
def test_fused_upsampled_curves_equal_upsample_then_apply(band: int):
    torch.manual_seed(3)
    small = torch.rand(2, 24, 7, 9) * 2 - 1
    x = torch.rand(2, 3, 27, 35)
    expected = apply_curves(x, upsample_maps(small, (27, 35)))
    whole = apply_upsampled_curves(x, small, (27, 35), band=band)
    torch.testing.assert_close(whole, expected, atol=1e-5, rtol=0)
    region = (5, 11, 19, 30)
    part = apply_upsampled_curves(x[..., 5:19, 11:30], small, (27, 35), region, band=band)
    assert torch.equal(part, whole[..., 5:19, 11:30])  # any region gives exactly its values in the whole
    pure = apply_upsampled_curves(x, small, (27, 35), band=band, band_kernel=upsampled_curves_band)
    torch.testing.assert_close(pure, whole, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        apply_upsampled_curves(x[..., :5, :], small, (27, 35))


def test_fused_upsampled_curves_give_the_same_values_whatever_the_blocks(monkeypatch: pytest.MonkeyPatch):
    # On the CPU the eager pass works in blocks: the output rows between the same two low-resolution rows, cut
    # into column pieces of about BLOCK_PIXELS pixels. Blocks of any size (down to single pixels, where each
    # piece of a row is its own block) must give exactly the values of a block that is the whole picture.
    torch.manual_seed(5)
    small = torch.rand(1, 24, 6, 8) * 2 - 1
    x = torch.rand(1, 3, 45, 61)
    whole = apply_upsampled_curves(x, small, (45, 61), band=45)  # one block, maps gathered for every row
    for pixels in (1, 7, 100, 10**6):
        monkeypatch.setattr(curves, "BLOCK_PIXELS", pixels)
        assert torch.equal(apply_upsampled_curves(x, small, (45, 61)), whole)
    torch.testing.assert_close(whole, apply_curves(x, upsample_maps(small, (45, 61))), atol=1e-5, rtol=0)
    assert apply_upsampled_curves(x[..., :0, :], small, (45, 61), (7, 0, 7, 61)).shape == (1, 3, 0, 61)  # empty


def test_off_the_cpu_a_block_is_full_rows_within_the_device_budget(monkeypatch: pytest.MonkeyPatch):
    # A GPU would pay a kernel launch per operation and block: whole rows, as many as DEVICE_BLOCK_VALUES of
    # maps allow, so that the memory stays bounded whatever the region's size.
    monkeypatch.setattr(curves, "DEVICE_BLOCK_VALUES", 24 * 4000 * 7)
    rows = torch.arange(100)
    taps = curves.CurveTaps(torch.empty(1, 24, 30, 4000, device="meta"), rows // 4, rows // 4 + 1, rows / 100)
    blocks = list(curves._blocks(taps, None))
    assert [(b.start, b.stop) for b, _ in blocks] == [(i, min(i + 7, 100)) for i in range(0, 100, 7)]
    assert all(c == slice(0, 4000) for _, c in blocks)


def _real_images(shared: Path) -> list[Path]:
    data = shared / "data"
    return [
        data / "eval_noref_LIME" / "images" / "3.bmp",
        data / "eval_noref_DICM" / "images" / "01.jpg",
        data / "eval_LOLv1_eval15_low" / "images_cut600x396_SGZ" / "1.png",
    ]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])  # the float32 backends (int8: test_quantize.py)
@pytest.mark.parametrize("checkpoint", ["scl-lle_official.pth", "zero-dce_official_epoch99.pth"])
def test_released_checkpoints_match_the_reference_forward(shared: Path, checkpoint: str, backend: str):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs onnxruntime")
        pytest.importorskip("onnx", reason="the onnxruntime backend needs onnx")
    path = shared / "weights" / "upstream" / checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)
    enhancer = Enhancer(
        path, exposure="off", device="cpu", tile=None, finish=False, backend=backend
    )  # curves alone, as released
    for image_path in _real_images(shared):
        rgb = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        expected = reference_forward(state, x)
        got = enhancer(x)
        assert got.shape == x.shape and got.dtype == torch.float32
        assert (got - expected).abs().max().item() < 1e-5, image_path.name
        # the released model does brighten these dark images
        assert got.mean() > x.mean() + 0.05


def test_load_dcenet_reads_release_unchanged(official_weights: Path):
    model = load_dcenet(official_weights)
    state = torch.load(official_weights, map_location="cpu", weights_only=True)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)
