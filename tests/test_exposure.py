"""Exposure control (scl_lle.engine.exposure): the gain solve, the auto policy, and the setting from API to CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scl_lle import DCENet, Enhancer
from scl_lle.cli import build_parser, main
from scl_lle.core.colour import mean_brightness
from scl_lle.core.curves import apply_curves
from scl_lle.engine.exposure import (
    AUTO_LEVEL,
    LOCAL_GRID,
    MAX_GAIN,
    auto_target,
    exposure_features,
    local_weights,
    parse_exposure,
    scale_maps,
    solve_gain,
)
from scl_lle.evaluation.datasets import UnknownNameError
from scl_lle.evaluation.methods import get_method


@pytest.fixture(scope="module")
def brightening() -> DCENet:
    """A seeded network whose curves brighten, with content-dependent maps."""
    torch.manual_seed(11)
    model = DCENet()
    with torch.no_grad():
        model.e_conv7.weight.mul_(0.1)
        model.e_conv7.bias.fill_(-0.3)
    return model.eval()


def _dark_scene(seed: int, size: tuple[int, int] = (96, 128), level: float = 0.12) -> torch.Tensor:
    """A smooth scene with texture, ``(1, 3, H, W)`` with mean about ``level``."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=generator)
    scene = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    scene = scene + 0.1 * torch.rand(1, 3, *size, generator=generator)
    return (scene / scene.mean() * level).clamp(0, 1)


def test_parse_exposure_accepts_the_three_forms_and_refuses_the_rest() -> None:
    assert parse_exposure(None) == "auto"
    assert parse_exposure(" Auto ") == "auto" and parse_exposure("off") == "off"
    assert parse_exposure("0.45") == 0.45 and parse_exposure(0.3) == 0.3
    for number in (np.float32(0.25), np.float64(0.25), torch.tensor(0.25), torch.tensor([0.25]), np.array(0.25)):
        assert parse_exposure(number) == 0.25  # np.float32 and tensors were refused
    bad_numbers = (np.bool_(True), torch.tensor([0.2, 0.3]), np.array([0.2, 0.3]), torch.tensor(True), np.float32(1.5))
    for bad in ("0", "1", 1.2, -0.1, "nan", "inf", "bright", True, [0.3], *bad_numbers):
        with pytest.raises(ValueError, match="exposure must be"):
            parse_exposure(bad)


def test_solve_reaches_the_target_on_the_images_it_is_given(brightening: DCENet) -> None:
    images = torch.cat([_dark_scene(seed, level=level) for seed, level in ((0, 0.05), (1, 0.1), (2, 0.2))])
    with torch.no_grad():
        maps = brightening.curve_maps(images)
    for target in (0.3, 0.45):
        gain = solve_gain(images, maps, target)
        reached = mean_brightness(apply_curves(images, scale_maps(maps, gain)))
        torch.testing.assert_close(reached, torch.full((3,), target), atol=1e-3, rtol=0)
    per_image = torch.tensor([0.25, 0.35, 0.5])
    reached = mean_brightness(apply_curves(images, scale_maps(maps, solve_gain(images, maps, per_image))))
    torch.testing.assert_close(reached, per_image, atol=1e-3, rtol=0)


def test_solve_leaves_bright_images_alone_and_stops_where_the_curves_end() -> None:
    bright = torch.full((1, 3, 8, 8), 0.6)
    maps = torch.full((1, 24, 8, 8), -0.5)
    assert solve_gain(bright, maps, 0.4).item() == 0.0  # at or above the target: gain 0, the identity
    dark = torch.full((1, 3, 8, 8), 0.1)
    weak = torch.full((1, 24, 8, 8), -1e-3)  # even MAX_GAIN times these cannot reach 0.9
    assert solve_gain(dark, weak, 0.9).item() == MAX_GAIN
    flat = torch.zeros(1, 24, 8, 8)  # maps that do nothing: nothing to gain
    assert mean_brightness(apply_curves(dark, scale_maps(flat, solve_gain(dark, flat, 0.5)))).item() == pytest.approx(
        0.1
    )
    darkening = torch.full((1, 24, 8, 8), 0.5)  # curves that only darken: gain 0, never darker than the input
    assert solve_gain(dark, darkening, 0.5).item() == 0.0


def test_scaled_curves_stay_monotone_and_in_range() -> None:
    torch.manual_seed(0)
    maps = (torch.rand(4, 24, 1, 1) * 2 - 1).expand(4, 24, 1, 256)  # one curve per image and channel
    ramp = torch.linspace(0, 1, 256).view(1, 1, 1, 256).expand(4, 3, 1, 256)
    for gain in (0.0, 0.5, 3.0, 40.0):
        scaled = scale_maps(maps, torch.full((4,), gain))
        assert scaled.abs().max() <= 1.0
        out = apply_curves(ramp, scaled)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert (out.diff(dim=-1) >= -1e-6).all()  # each curve is non-decreasing in the input
    assert torch.equal(apply_curves(ramp, scale_maps(maps, torch.zeros(4))), ramp)


@pytest.mark.parametrize("scale", [1, 4])
def test_enhancer_reaches_the_exposure_and_never_darkens(brightening: DCENet, scale: int) -> None:
    enhancer = Enhancer(brightening, device="cpu", scale=scale, exposure=0.35, backend="torch")
    images = torch.cat([_dark_scene(seed, (120, 200), level) for seed, level in ((3, 0.06), (4, 0.15))])
    out = enhancer(images)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.full((2,), 0.35), atol=0.02, rtol=0)
    bright = _dark_scene(5, (120, 200), 0.5)
    assert torch.equal(enhancer(bright), bright)  # above the target: unchanged, bit for bit
    for exposure in ("auto", 0.2, 0.6):
        result = enhancer(images, exposure=exposure)
        assert (result.mean(dim=(1, 2, 3)) >= images.mean(dim=(1, 2, 3)) - 1e-6).all()


def test_exposure_is_reached_with_the_finishing_on_a_noisy_photo(brightening: DCENet) -> None:
    # The finishing applies the curves to a denoised base layer, which the (concave) curves lift more than the
    # noisy pixels: a solve that ignored it overshot by 0.01-0.03 on this photo (LOL eval15 low at auto: 0.506 for
    # a target of 0.500).
    generator = torch.Generator().manual_seed(8)
    noisy = (_dark_scene(8, (160, 200), 0.08) + 0.04 * torch.randn(1, 3, 160, 200, generator=generator)).clamp(0, 1)
    for scale in (1, 4):
        enhancer = Enhancer(brightening, device="cpu", scale=scale, backend="torch", finish=True)
        for target in (0.3, 0.45):
            assert enhancer(noisy, exposure=target).mean().item() == pytest.approx(target, abs=0.003)


def test_off_is_the_network_at_full_strength(brightening: DCENet) -> None:
    images = _dark_scene(6, (40, 56))
    out = Enhancer(brightening, device="cpu", exposure="off", finish=False, backend="torch")(images)
    with torch.no_grad():
        expected = brightening(images)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_local_weights_fall_with_the_local_brightness() -> None:
    image = torch.zeros(1, 3, 32, 64)
    image[..., 32:] = 0.8  # a dark left half, a bright right half
    weights = local_weights(image, power=2)
    assert weights.shape == (1, 1, LOCAL_GRID // 2, LOCAL_GRID)  # LOCAL_GRID regions along the long side
    assert weights[..., :3].eq(1.0).all()  # dark: the full lift
    torch.testing.assert_close(weights[..., -3:], torch.full((1, 1, LOCAL_GRID // 2, 3), 0.2**2))  # (1 - 0.8)^2
    assert (weights[..., 1:] <= weights[..., :-1]).all()  # falling towards the bright side
    torch.testing.assert_close(local_weights(torch.full((2, 3, 5, 7), 0.5), 2), torch.full((2, 1, 5, 7), 0.25))
    torch.testing.assert_close(local_weights(image, power=1), weights.sqrt())
    assert local_weights(torch.rand(1, 3, 1, 1), 2).shape == (1, 1, 1, 1)


@pytest.mark.parametrize("scale", [1, 4])
def test_local_weighting_lifts_bright_regions_less_at_a_level(scale: int) -> None:
    # The same grey patch in a dark and in a bright part of a photo: at "off", and by default at any level, the
    # network's (here constant) curves lift both alike; with local weighting the maps are weighted region by region
    # at a level, so the patch in the dark part is lifted more, and the gain still brings the mean to the level.
    model = DCENet()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.e_conv7.bias.fill_(-0.7)  # every map tanh(-0.7): one brightening curve everywhere
    image = torch.full((1, 3, 64, 128), 0.05)
    image[..., 64:] = 0.4
    image[..., 24:40, 24:40] = 0.2
    image[..., 24:40, 88:104] = 0.2
    settings = {"device": "cpu", "backend": "torch", "finish": False, "scale": scale}
    plain = Enhancer(model.eval(), **settings)(image, exposure=0.45)  # the default: no local weighting
    torch.testing.assert_close(plain[..., 28:36, 28:36], plain[..., 28:36, 92:100])
    enhancer = Enhancer(model, local_weighting=True, **settings)
    off = enhancer(image, exposure="off")
    torch.testing.assert_close(off[..., 28:36, 28:36], off[..., 28:36, 92:100])
    out = enhancer(image, exposure=0.45)
    assert out.mean().item() == pytest.approx(0.45, abs=0.01)
    assert out[..., 28:36, 28:36].mean() > out[..., 28:36, 92:100].mean() + 0.05
    assert (out >= image - 1e-6).all()  # still never darker


@pytest.mark.parametrize("scale", [1, 4])
def test_local_weighting_keeps_tiling_and_the_level(brightening: DCENet, scale: int) -> None:
    images = _dark_scene(7, (150, 170), 0.08)
    settings = {"device": "cpu", "scale": scale, "exposure": 0.4, "local_weighting": True}
    whole = Enhancer(brightening, tile=None, **settings)(images)
    tiled = Enhancer(brightening, tile=64, **settings)(images)
    torch.testing.assert_close(whole, tiled, atol=1e-5, rtol=0)
    assert whole.mean().item() == pytest.approx(0.4, abs=0.01)


def test_local_weighting_keeps_tiling_in_bfloat16(brightening: DCENet) -> None:
    # Tiles far from the origin: bfloat16 cannot hold pixel positions above 256 exactly, so the weights are
    # upsampled in float32 (they were once upsampled in the maps' dtype: up to 0.016 apart across tiles, four
    # bfloat16 steps at 0.5; a few pixels may still round one or two steps apart).
    images = _dark_scene(9, (300, 700), 0.08)
    settings = {"device": "cpu", "backend": "torch", "dtype": torch.bfloat16, "exposure": 0.4, "local_weighting": True}
    whole = Enhancer(brightening, tile=None, **settings)(images)
    tiled = Enhancer(brightening, tile=128, **settings)(images)
    torch.testing.assert_close(whole, tiled, atol=2**-7, rtol=0)


def test_exposure_does_not_depend_on_tiling(brightening: DCENet) -> None:
    images = _dark_scene(7, (150, 170), 0.08)
    whole = Enhancer(brightening, device="cpu", tile=None, exposure=0.4)(images)
    tiled = Enhancer(brightening, device="cpu", tile=64, exposure=0.4)(images)
    torch.testing.assert_close(whole, tiled, atol=1e-5, rtol=0)


def test_auto_target_lifts_dark_photos_and_keeps_bright_ones() -> None:
    dark = _dark_scene(8, level=0.05)
    bright = _dark_scene(9, level=0.55)
    targets = auto_target(torch.cat((dark, bright)))
    assert 0.4 <= targets[0] <= AUTO_LEVEL  # a dark photo is lifted to a natural level
    assert targets[1] == pytest.approx(float(bright.mean()), abs=1e-4)  # a bright one keeps its own
    features = exposure_features(torch.cat((dark, bright)))
    assert features.shape == (2, 5) and torch.isfinite(features).all()
    black = torch.zeros(1, 3, 16, 16)
    assert torch.isfinite(auto_target(black)).all()


def test_default_model_keeps_well_exposed_photos(tmp_path: Path) -> None:
    """The packaged model under auto: a well-lit photo comes back (nearly) unchanged, a dark one is lifted."""
    well_lit = _dark_scene(10, (200, 300), 0.5)
    dark = _dark_scene(10, (200, 300), 0.05)
    enhancer = Enhancer(device="cpu")
    assert (enhancer(well_lit) - well_lit).abs().mean() < 0.01
    assert enhancer(dark).mean() > 0.25
    assert Enhancer(device="cpu", exposure="off")(well_lit).mean() > well_lit.mean() + 0.1  # what auto prevents


def test_cli_takes_exposure(tmp_path: Path, weights_file: Path) -> None:
    assert build_parser().parse_args(["enhance", "x.png", "-o", "out"]).exposure == "auto"
    assert build_parser().parse_args(["enhance", "x.png", "-o", "out", "--exposure", "0.3"]).exposure == 0.3
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["enhance", "x.png", "-o", "out", "--exposure", "1.5"])
    assert exit_info.value.code == 2
    from PIL import Image

    pixels = (_dark_scene(12, (48, 64), 0.08)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "night.png")
    code = main(["enhance", str(tmp_path / "night.png"), "-o", str(tmp_path / "out"), "--exposure", "0.3", "-q"])
    assert code == 0
    result = np.asarray(Image.open(tmp_path / "out" / "night.png"), dtype=np.float32) / 255
    assert result.mean() == pytest.approx(0.3, abs=0.02)


def test_evaluation_method_takes_exposure() -> None:
    image = _dark_scene(13, (64, 80), 0.06)
    lifted = get_method("scl-lle@0.3")(image)
    assert float(lifted.mean()) == pytest.approx(0.3, abs=0.02)
    assert not torch.equal(get_method("scl-lle@off")(image), get_method("scl-lle")(image))
    with pytest.raises(UnknownNameError, match="exposure"):
        get_method("scl-lle@1.5")


def _half_dark_photo(path: Path) -> torch.Tensor:
    """A photo with a dark left half and a brighter right half, saved as 8-bit PNG at ``path``; returned as read."""
    from PIL import Image

    image = _dark_scene(14, (64, 96), 0.03)
    image[..., 48:] = _dark_scene(15, (64, 48), 0.25)
    pixels = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255


def test_cli_and_api_take_local_weighting(tmp_path: Path) -> None:
    # One name from the flag to the API: --local-weighting lifts the dark half more and the bright half less than
    # the default, at the same mean brightness, and writes what enhance(..., local_weighting=True) writes.
    from PIL import Image

    from scl_lle import enhance

    assert build_parser().parse_args(["enhance", "x.png", "-o", "out"]).local_weighting is False
    _half_dark_photo(tmp_path / "scene.png")
    refused = ["enhance", str(tmp_path / "scene.png"), "-o", str(tmp_path / "off"), "--exposure", "off"]
    assert main([*refused, "--local-weighting"]) == 2 and not (tmp_path / "off").exists()  # it would do nothing
    with pytest.raises(ValueError, match="local_weighting acts at a level"):
        enhance(tmp_path / "scene.png", tmp_path / "off", exposure="off", local_weighting=True, progress=False)
    outputs = {}
    for name, flags in (("plain", []), ("local", ["--local-weighting"])):
        argv = ["enhance", str(tmp_path / "scene.png"), "-o", str(tmp_path / name), "--exposure", "0.4", "-q"]
        assert main(argv + flags) == 0
        outputs[name] = np.asarray(Image.open(tmp_path / name / "scene.png"), dtype=np.float32) / 255
    plain, local = outputs["plain"], outputs["local"]
    assert plain.mean() == pytest.approx(0.4, abs=0.02) and local.mean() == pytest.approx(0.4, abs=0.02)
    assert local[:, :40].mean() > plain[:, :40].mean() + 0.02  # the dark half lifted more
    assert local[:, 56:].mean() < plain[:, 56:].mean() - 0.02  # the bright half less
    assert enhance(tmp_path / "scene.png", tmp_path / "api", exposure=0.4, local_weighting=True, progress=False).ok
    api = np.asarray(Image.open(tmp_path / "api" / "scene.png"), dtype=np.float32) / 255
    np.testing.assert_array_equal(api, local)


def test_evaluation_method_takes_local_weighting(tmp_path: Path) -> None:
    from scl_lle.evaluation.methods import describe_method

    image = _half_dark_photo(tmp_path / "scene.png")
    local = get_method("local-weighting:scl-lle@0.4")(image)
    expected = Enhancer(device="cpu", backend="torch", exposure=0.4, local_weighting=True)(image)
    torch.testing.assert_close(local, expected, atol=0, rtol=0)
    assert (local - get_method("scl-lle@0.4")(image)).abs().max() > 0.05
    assert describe_method("local-weighting:scl-lle", None).endswith(", local weighting")
    with pytest.raises(UnknownNameError, match="at a level"):
        get_method("local-weighting:scl-lle@off")  # it would silently be scl-lle@off
    with pytest.raises(UnknownNameError, match="DCE-Net methods only"):
        get_method("local-weighting:gamma@0.4")
    # with the finishing, the prefixes in either order
    finished = Enhancer(device="cpu", backend="torch", exposure=0.4, local_weighting=True, finish=True)(image)
    for spec in ("finished:local-weighting:scl-lle@0.4", "local-weighting:finished:scl-lle@0.4"):
        torch.testing.assert_close(get_method(spec)(image), finished, atol=0, rtol=0)
        assert describe_method(spec, None).startswith("the project's default model")
