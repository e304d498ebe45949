"""SCL-LLE losses: hand-worked values on tiny tensors, the released semantic formula against a loop reference,
gradient routing of the segmentation term, and the combined objective's bookkeeping."""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from scl_lle.core.colour import luminance
from scl_lle.models.dcenet import DCENet
from scl_lle.models.segmenter import SEGMENTERS, Segmenter
from scl_lle.models.vgg import VGG16Features
from scl_lle.train.config import DEFAULTS
from scl_lle.train.losses import (
    ColourConstancyLoss,
    ContrastiveGreyLoss,
    ContrastiveTextureLoss,
    CurveSmoothnessLoss,
    ExposureControlLoss,
    FeaturePreservationLoss,
    SegmentationLoss,
    SemanticBrightnessLoss,
)
from scl_lle.train.objective import TERM_NAMES, TERMS, LossSettings, LossWeights, SCLObjective
from scl_lle.train.terms import (
    colour_constancy_loss,
    contrastive_grey_loss,
    contrastive_texture_loss,
    curve_smoothness_loss,
    exposure_control_loss,
    feature_preservation_loss,
    grey_distance,
    keep_well_lit_loss,
    segmentation_loss,
    semantic_brightness_loss,
    texture_distance,
    tone_prior_loss,
)


def const(value: float, n: int = 1, h: int = 4, w: int = 4) -> torch.Tensor:
    return torch.full((n, 3, h, w), value)


def grey(values: list[list[float]]) -> torch.Tensor:
    """A (1, 3, H, W) image whose three channels all equal ``values`` (so brightness == values)."""
    return torch.tensor(values).expand(1, 3, -1, -1).clone()


@pytest.fixture(scope="module")
def vgg() -> VGG16Features:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random init warns when no weights are installed
        return VGG16Features(allow_random_init=True)


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    spec = SEGMENTERS["espnet-camvid"]
    return Segmenter(spec.build(), spec)


class FixedLogits(nn.Module):
    """A stand-in segmenter returning uniform logits (cross-entropy = log C everywhere) that depend on the input."""

    def __init__(self, num_classes: int, void_index: int) -> None:
        super().__init__()
        self.spec = SimpleNamespace(void_index=void_index, num_classes=num_classes)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        b, _, h, w = rgb.shape
        return rgb.mean(1, keepdim=True).expand(b, self.spec.num_classes, h, w) * 0  # uniform, yet in the graph


# --- contrastive grey ----------------------------------------------------------------------------------------


def test_grey_distance_of_constant_images() -> None:
    # |0.2 - 0.5| = 0.3 against one pool image; against a pool {0.5, 0.0}: (0.3 + 0.2) / 2 = 0.25
    x = torch.cat([const(0.2), const(0.6)])
    d = grey_distance(x, torch.cat([const(0.5), const(0.0)]))
    assert d.shape == (2,)
    torch.testing.assert_close(d, torch.tensor([0.25, 0.35]))  # image 2: (0.1 + 0.6) / 2
    # grey image = channel mean: (0.3, 0.6, 0.9) averages to 0.6
    rgb = torch.tensor([0.3, 0.6, 0.9]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    torch.testing.assert_close(grey_distance(rgb, const(0.6)), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="size"):
        grey_distance(const(0.1), const(0.1, h=5))


def test_sorted_grey_distance_compares_brightness_distributions() -> None:
    # a half-black, half-white positive and the same scene mirrored: pixelwise 1.0 apart, same histogram
    left = torch.zeros(1, 3, 4, 4)
    left[..., :2] = 1.0
    mirrored = left.flip(-1)
    torch.testing.assert_close(grey_distance(mirrored, left), torch.tensor([1.0]))
    torch.testing.assert_close(grey_distance(mirrored, left, mode="sorted"), torch.tensor([0.0]))
    # the pixelwise distance prefers a flat mid grey to the mirrored scene; the sorted one does not
    grey = const(0.5)
    assert grey_distance(grey, left) < grey_distance(mirrored, left)
    torch.testing.assert_close(grey_distance(grey, left, mode="sorted"), torch.tensor([0.5]))
    # sorted values: (0.1, 0.3) against (0.2, 0.6) in either order -> (0.1 + 0.3) / 2
    a = torch.tensor([0.3, 0.1]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    b = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    torch.testing.assert_close(grey_distance(a, b, mode="sorted"), torch.tensor([0.2]))
    # the loss and the module pass the mode through: sorted, the mirrored output is at its positive
    loss = contrastive_grey_loss(mirrored, left, const(0.0), margin=0.3, mode="sorted")
    torch.testing.assert_close(loss, torch.tensor(0.0))  # 0 - 0.5 + 0.3 < 0
    torch.testing.assert_close(ContrastiveGreyLoss(mode="sorted")(mirrored, left, const(0.0)), loss)
    with pytest.raises(ValueError, match="mode"):
        grey_distance(a, b, mode="histogram")  # type: ignore[arg-type]


def test_contrastive_grey_hinge_active_and_inactive() -> None:
    y = const(0.2)
    # d(Y,P) = |0.2-0.5| = 0.3, d(Y,N) = |0.2-0.1| = 0.1: 0.3 - 0.1 + 0.3 = 0.5 (active)
    torch.testing.assert_close(contrastive_grey_loss(y, const(0.5), const(0.1)), torch.tensor(0.5))
    # d(Y,P) = 0, d(Y,N) = 0.6: 0 - 0.6 + 0.3 < 0 -> 0 (inactive)
    torch.testing.assert_close(contrastive_grey_loss(y, const(0.2), const(0.8)), torch.tensor(0.0))
    # per-image hinge, batch mean: (0.5 + 0) / 2 with P = 0.5, N = 0.1 for outputs 0.2 and 0.5 (0 - 0.4 + 0.3 < 0)
    out = torch.cat([const(0.2), const(0.5)])
    torch.testing.assert_close(contrastive_grey_loss(out, const(0.5), const(0.1)), torch.tensor(0.25))
    torch.testing.assert_close(ContrastiveGreyLoss(margin=0.0)(y, const(0.5), const(0.1)), torch.tensor(0.2))


# --- contrastive texture -------------------------------------------------------------------------------------


def feats(a: list[float], b: list[float]) -> dict[str, torch.Tensor]:
    """Two one-channel 1x2 feature maps; Gram = (v0^2 + v1^2) / 2."""
    return {"relu1_2": torch.tensor(a).view(1, 1, 1, 2), "relu2_2": torch.tensor(b).view(1, 1, 1, 2)}


def test_texture_distance_and_hinge() -> None:
    y = feats([1, 1], [2, 0])  # Grams 1, 2
    p = feats([1, 1], [0, 0])  # Grams 1, 0: d = 0^2 + 2^2 = 4
    n = feats([2, 0], [2, 0])  # Grams 2, 2: d = 1^2 + 0^2 = 1
    torch.testing.assert_close(texture_distance(y, p), torch.tensor([4.0]))
    torch.testing.assert_close(texture_distance(y, n), torch.tensor([1.0]))
    # 4 - 1 + 0.04
    torch.testing.assert_close(contrastive_texture_loss(y, p, n), torch.tensor(3.04))
    # swapped roles: 1 - 4 + 0.04 < 0
    torch.testing.assert_close(contrastive_texture_loss(y, n, p), torch.tensor(0.0))
    # a pool of two positives {p, y}: distances 4 and 0 average to 2 -> 2 - 1 + 0.04
    pool = {k: torch.cat([p[k], y[k]]) for k in p}
    torch.testing.assert_close(ContrastiveTextureLoss()(y, pool, n), torch.tensor(1.04))
    # one layer only: 0 - 1 + 0.5 < 0
    assert contrastive_texture_loss(y, p, n, margin=0.5, layers=("relu1_2",)).item() == 0.0


# --- semantic ------------------------------------------------------------------------------------------------


def test_semantic_class_variant_by_hand() -> None:
    out = grey([[0.2, 0.4], [0.9, 0.5]])
    labels = torch.tensor([[[0, 0], [1, 1]]])
    # class 0: {0.2, 0.4}, mean 0.3, variance 0.01; class 1: {0.9, 0.5}, mean 0.7, variance 0.04 -> 0.025
    torch.testing.assert_close(semantic_brightness_loss(out, labels, 2), torch.tensor(0.025))
    torch.testing.assert_close(SemanticBrightnessLoss(2)(out, labels), torch.tensor(0.025))
    # uniform class -> 0
    assert semantic_brightness_loss(const(0.3, h=2, w=2), labels, 2).item() == 0.0


def test_semantic_class_variant_ignores_void() -> None:
    out = grey([[0.2, 0.4], [0.9, 0.5]])
    labels = torch.tensor([[[0, 0], [1, 2]]])
    # void (2) left out: class 0 variance 0.01, class 1 a single pixel (0) -> 0.005
    torch.testing.assert_close(semantic_brightness_loss(out, labels, 3, void_index=2), torch.tensor(0.005))
    # void counted: three pairs (0.01 + 0 + 0) / 3
    torch.testing.assert_close(semantic_brightness_loss(out, labels, 3), torch.tensor(0.01 / 3))
    # the void pixel's brightness does not matter when ignored
    out2 = out.clone()
    out2[..., 1, 1] = 0.0
    torch.testing.assert_close(semantic_brightness_loss(out2, labels, 3, void_index=2), torch.tensor(0.005))
    # everything void -> 0, still differentiable
    x = out.clone().requires_grad_(True)
    loss = semantic_brightness_loss(x, torch.full_like(labels, 2), 3, void_index=2)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.all(x.grad == 0)


def test_semantic_class_variant_is_per_image_and_labelled_mask() -> None:
    torch.manual_seed(1)
    out = torch.rand(3, 3, 5, 6)
    labels = torch.randint(0, 4, (3, 5, 6))
    per_image = [semantic_brightness_loss(out[i : i + 1], labels[i : i + 1], 4) for i in range(3)]
    pairs = [len(labels[i].unique()) for i in range(3)]
    expected = sum(v * k for v, k in zip(per_image, pairs, strict=True)) / sum(pairs)
    torch.testing.assert_close(semantic_brightness_loss(out, labels, 4), expected)
    # the (image, class) variance matches torch.var(unbiased=False) directly
    mask = labels[0] == 2
    torch.testing.assert_close(
        semantic_brightness_loss(out[:1], torch.where(mask, 2, -1)[None], 4), out[0].mean(0)[mask].var(unbiased=False)
    )
    labelled = torch.tensor([True, False, True])
    torch.testing.assert_close(
        semantic_brightness_loss(out, labels, 4, labelled=labelled),
        semantic_brightness_loss(out[labelled], labels[labelled], 4),
    )
    assert semantic_brightness_loss(out, labels, 4, labelled=torch.zeros(3, dtype=torch.bool)).item() == 0.0


def upstream_reference(output: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The released semantic loss, written as a plain loop over class ids."""
    y = output.mean(1, keepdim=True)  # (B, 1, H, W)
    lab = labels.unsqueeze(1)
    total = torch.zeros(())
    for i in range(num_classes):
        a = torch.where(lab == i, y, torch.zeros_like(y))
        m = torch.mean(a)
        a = torch.where(a == 0, m, a)
        total = total + torch.mean((a - m) ** 2)
    return total


def test_semantic_upstream_by_hand() -> None:
    out = grey([[0.2, 0.4], [0.0, 0.6]])
    labels = torch.tensor([[[0, 0], [1, 1]]])
    # class 0: m = 0.6 / 4 = 0.15, term = (0.05^2 + 0.25^2) / 4 = 0.01625
    # class 1: m = 0.6 / 4 = 0.15, the black pixel counts as background: term = 0.45^2 / 4 = 0.050625
    expected = torch.tensor(0.01625 + 0.050625)
    torch.testing.assert_close(semantic_brightness_loss(out, labels, 2, variant="upstream"), expected)
    torch.testing.assert_close(upstream_reference(out, labels, 2), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_upstream_matches_loop_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    out = torch.rand(2, 3, 7, 9, generator=g)
    out[torch.rand(2, 1, 7, 9, generator=g).expand(2, 3, 7, 9) < 0.3] = 0.0  # genuinely black pixels
    labels = torch.randint(0, 6, (2, 7, 9), generator=g)
    x = out.clone().requires_grad_(True)
    ours = semantic_brightness_loss(x, labels, 6, variant="upstream")
    torch.testing.assert_close(ours, upstream_reference(out, labels, 6))
    # fewer class ids than labels present: only ids 0..3 are summed, as in the loop
    torch.testing.assert_close(
        semantic_brightness_loss(out, labels, 4, variant="upstream"), upstream_reference(out, labels, 4)
    )
    # gradients agree too
    ours.backward()
    y = out.clone().requires_grad_(True)
    upstream_reference(y, labels, 6).backward()
    torch.testing.assert_close(x.grad, y.grad)


def test_semantic_upstream_labelled_subset_and_bad_variant() -> None:
    torch.manual_seed(3)
    out, labels = torch.rand(3, 3, 4, 4), torch.randint(0, 3, (3, 4, 4))
    labelled = torch.tensor([False, True, True])
    torch.testing.assert_close(
        semantic_brightness_loss(out, labels, 3, variant="upstream", labelled=labelled),
        upstream_reference(out[1:], labels[1:], 3),
    )
    with pytest.raises(ValueError, match="variant"):
        semantic_brightness_loss(out, labels, 3, variant="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        semantic_brightness_loss(out, labels[:, :2], 3)


# --- feature preservation, Zero-DCE terms --------------------------------------------------------------------


def test_feature_preservation() -> None:
    a = {"relu4_3": torch.zeros(1, 2, 2, 2)}
    b = {"relu4_3": torch.full((1, 2, 2, 2), 2.0)}
    torch.testing.assert_close(feature_preservation_loss(a, b), torch.tensor(4.0))  # (2 - 0)^2
    torch.testing.assert_close(FeaturePreservationLoss()(a, a), torch.tensor(0.0))


def test_colour_constancy() -> None:
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    # Drg = 1, Drb = 1, Dgb = 0 -> sqrt(1 + 1 + 0)
    torch.testing.assert_close(colour_constancy_loss(red), torch.tensor(math.sqrt(2)))
    # batch mean with a grey image (0): sqrt(2) / 2
    torch.testing.assert_close(ColourConstancyLoss()(torch.cat([red, const(0.4, h=2, w=2)])), torch.tensor(0.5**0.5))
    x = const(0.4, h=2, w=2).requires_grad_(True)
    colour_constancy_loss(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()  # no NaN at the non-differentiable point


def test_curve_smoothness_of_a_ramp() -> None:
    ramp = (0.1 * torch.arange(3.0)).expand(1, 1, 2, 3)  # H=2, W=3, columns 0, 0.1, 0.2
    # horizontal: 4 differences of 0.1 -> 0.04 / (H (W-1) = 4) = 0.01; vertical: 0 -> 2 * 0.01 / B = 0.02
    torch.testing.assert_close(curve_smoothness_loss(ramp), torch.tensor(0.02))
    # transposed ramp: the same value from the vertical term
    torch.testing.assert_close(CurveSmoothnessLoss()(ramp.transpose(-1, -2)), torch.tensor(0.02))
    # two identical images with 24 channels: sums double over batch and x24 over channels, / B = 2
    maps = ramp.expand(2, 24, 2, 3)
    torch.testing.assert_close(curve_smoothness_loss(maps), torch.tensor(0.02 * 24))
    assert curve_smoothness_loss(torch.ones(1, 3, 1, 1)).item() == 0.0  # no neighbours: 0, not NaN


def test_exposure_control() -> None:
    # (0.5 - 0.6)^2 = 0.01 for every patch
    torch.testing.assert_close(exposure_control_loss(const(0.5, h=32, w=32)), torch.tensor(0.01))
    # incomplete patches are dropped: a 20x20 image gives one 16x16 patch
    img = torch.ones(1, 3, 20, 20)
    img[..., :16, :16] = 0.5
    torch.testing.assert_close(ExposureControlLoss()(img), torch.tensor(0.01))
    # two 2x2 patches of means 0.6 and 0.2 with target 0.6: (0 + 0.16) / 2
    two = torch.cat([const(0.6, h=2, w=2), const(0.2, h=2, w=2)], dim=3)
    torch.testing.assert_close(exposure_control_loss(two, patch_size=2), torch.tensor(0.08))
    with pytest.raises(ValueError, match="smaller"):
        exposure_control_loss(const(0.5, h=8, w=8))


# --- segmentation --------------------------------------------------------------------------------------------


def test_segmentation_loss_value_and_all_ignored() -> None:
    seg = FixedLogits(num_classes=4, void_index=3)
    out = torch.rand(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 4, 4))
    labels[0, 0, 0] = 0  # at least one non-void pixel
    # uniform logits over 4 classes: cross-entropy log 4 on every counted pixel
    torch.testing.assert_close(segmentation_loss(seg, out, labels), torch.tensor(math.log(4)))
    torch.testing.assert_close(SegmentationLoss(seg)(out, labels), torch.tensor(math.log(4)))  # type: ignore[arg-type]
    loss = segmentation_loss(seg, out, torch.full_like(labels, 3))  # type: ignore[arg-type]
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()  # the graph is intact
    none = segmentation_loss(seg, out, labels, labelled=torch.zeros(2, dtype=torch.bool))  # type: ignore[arg-type]
    assert none.item() == 0.0


def test_segmentation_gradient_reaches_enhancer_only_without_detach(segmenter: Segmenter) -> None:
    torch.manual_seed(0)
    enhancer = DCENet(channels=4, iterations=2)
    low = torch.rand(1, 3, 16, 16) * 0.3
    labels = torch.randint(0, segmenter.num_classes - 1, (1, 16, 16))

    enhanced, _ = enhancer.forward_with_maps(low)
    segmentation_loss(segmenter, enhanced, labels, detach=False).backward()
    grads = [p.grad for p in enhancer.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads if g is not None) > 0
    assert all(p.grad is None for p in segmenter.parameters())  # the segmenter stays frozen

    enhancer.zero_grad(set_to_none=True)
    enhanced, _ = enhancer.forward_with_maps(low)
    loss = segmentation_loss(segmenter, enhanced, labels, detach=True)
    assert not loss.requires_grad
    (loss + 0 * enhanced.sum()).backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in enhancer.parameters())


# --- combined objective --------------------------------------------------------------------------------------


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(2, 3, 16, 16, generator=g) * 0.3
    enhancer = DCENet(channels=4, iterations=2)
    enhanced, maps = enhancer.forward_with_maps(low)
    return {
        "low": low,
        "enhanced": enhanced,
        "curve_maps": maps,
        "positives": torch.rand(3, 3, 16, 16, generator=g),
        "negatives": torch.rand(2, 3, 16, 16, generator=g) * 0.2,
        "labels": torch.randint(0, 12, (2, 16, 16), generator=g),
    }


def test_objective_total_is_the_weighted_sum(vgg: VGG16Features, segmenter: Segmenter) -> None:
    weights = LossWeights(exposure=3.0, keep=2.0, tone=4.0)
    obj = SCLObjective(
        weights, vgg=vgg, segmenter=segmenter, void_index=segmenter.spec.void_index, keep_above=0.1, tone_target=0.4
    )
    assert obj.num_classes == 12
    inputs = batch()
    total, terms = obj(**inputs)
    assert set(terms) == set(TERM_NAMES)
    assert all(not t.requires_grad and t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    expected = sum(getattr(weights, k) * v for k, v in terms.items())
    torch.testing.assert_close(total.detach(), expected)
    # terms agree with the functional core
    torch.testing.assert_close(terms["colour"], colour_constancy_loss(inputs["enhanced"]).detach())
    torch.testing.assert_close(terms["tv"], curve_smoothness_loss(inputs["curve_maps"]).detach())
    keep = keep_well_lit_loss(inputs["low"], inputs["enhanced"], 0.1).detach()
    assert keep > 0
    torch.testing.assert_close(terms["keep"], keep)
    torch.testing.assert_close(terms["tone"], tone_prior_loss(inputs["low"], inputs["enhanced"], 0.4).detach())
    feats_low, feats_out = vgg(inputs["low"]), vgg(inputs["enhanced"])
    torch.testing.assert_close(terms["feature"], feature_preservation_loss(feats_low, feats_out).detach())
    texture = contrastive_texture_loss(feats_out, vgg(inputs["positives"]), vgg(inputs["negatives"]))
    torch.testing.assert_close(terms["texture"], texture.detach(), rtol=1e-4, atol=1e-6)
    total.backward()


def test_objective_skips_zero_weights_and_uses_labelled() -> None:
    weights = LossWeights(semantic=2.0, texture=0.0, feature=0.0, segmentation=0.0)
    obj = SCLObjective(weights, num_classes=12)  # no networks needed
    inputs = batch(1)
    total, terms = obj(**inputs)
    assert set(terms) == {"tv", "colour", "semantic", "contrastive"}
    torch.testing.assert_close(total.detach(), sum(getattr(weights, k) * v for k, v in terms.items()))
    _, none = obj(**inputs, labelled=torch.zeros(2, dtype=torch.bool))
    assert none["semantic"].item() == 0.0
    # contrastive terms off: the pools may be omitted
    only = SCLObjective(LossWeights(0, 1, 0, 0, 0, 0, 0, 0))
    total, terms = only(**{**inputs, "positives": None, "negatives": None})
    assert set(terms) == {"colour"}
    with pytest.raises(ValueError, match="labels"):
        obj(**{**inputs, "labels": None})
    # the contrastive term's distance is configurable; the objective computes it with that distance
    contrast = LossWeights(0, 0, 0, 1, 0, 0, 0, 0)
    sorted_obj = SCLObjective(contrast, grey_distance="sorted")
    _, by_sorted = sorted_obj(**inputs)
    expected = contrastive_grey_loss(inputs["enhanced"], inputs["positives"], inputs["negatives"], mode="sorted")
    torch.testing.assert_close(by_sorted["contrastive"], expected)
    assert not torch.allclose(by_sorted["contrastive"], SCLObjective(contrast)(**inputs)[1]["contrastive"])
    with pytest.raises(ValueError, match="grey_distance"):
        SCLObjective(contrast, grey_distance="histogram")  # type: ignore[arg-type]


def test_objective_missing_networks_raise(vgg: VGG16Features) -> None:
    with pytest.raises(ValueError, match="VGG16Features"):
        SCLObjective(LossWeights(segmentation=0.0), num_classes=12)
    with pytest.raises(ValueError, match="Segmenter"):
        SCLObjective(LossWeights(), vgg=vgg, num_classes=12)
    with pytest.raises(ValueError, match="num_classes"):
        SCLObjective(LossWeights(texture=0.0, feature=0.0, segmentation=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        shallow = VGG16Features(layers=("relu1_2", "relu2_2"), allow_random_init=True)
    with pytest.raises(ValueError, match="relu4_3"):
        SCLObjective(LossWeights(segmentation=0.0, semantic=0.0), vgg=shallow)
    with pytest.raises(ValueError, match="finite"):
        SCLObjective(LossWeights(tv=-1.0))


def test_tone_prior_pulls_dark_inputs_to_a_gamma_curve_and_leaves_bright_ones():
    g = torch.Generator().manual_seed(0)
    dark = torch.rand(1, 3, 16, 16, generator=g) * 0.1  # mean luminance about 0.05
    e = math.log(0.45) / math.log(float(luminance(dark).mean()))
    curve = dark**e  # the adaptive gamma curve the prior pulls towards
    assert tone_prior_loss(dark, curve) < 1e-6
    linear = dark * (float(curve.mean()) / float(dark.mean()))  # same mean brightness, a linear gain
    assert tone_prior_loss(dark, linear) > 0.05  # the prior tells the concave curve from a linear gain
    bright = 0.5 + torch.rand(1, 3, 16, 16, generator=g) * 0.4  # brighter than the target: left as it is
    out = (bright + 0.05).requires_grad_(True)
    loss = tone_prior_loss(bright, out)
    assert torch.isclose(loss, torch.tensor(0.05))
    loss.backward()
    assert out.grad is not None and (out.grad > 0).all()
    both = tone_prior_loss(torch.cat([dark, bright]), torch.cat([curve, bright + 0.05]))
    assert torch.isclose(both, torch.tensor(0.025), atol=1e-6)  # mean over the batch
    with pytest.raises(ValueError, match="target"):
        tone_prior_loss(dark, dark, target=1.0)


def test_keep_well_lit_ignores_dark_inputs_and_penalises_changes_to_bright_ones():
    dark = torch.full((1, 3, 8, 8), 0.1)
    bright = torch.full((1, 3, 8, 8), 0.7)
    brighter = torch.full((1, 3, 8, 8), 0.9, requires_grad=True)
    assert keep_well_lit_loss(dark, dark + 0.5) == 0  # dark inputs may brighten freely
    assert keep_well_lit_loss(bright, bright) == 0
    loss = keep_well_lit_loss(bright, brighter)
    assert torch.isclose(loss, torch.tensor(0.2))  # weight 1 at twice keep_above, |0.9 - 0.7|
    loss.backward()
    assert brighter.grad is not None and (brighter.grad > 0).all()
    half = keep_well_lit_loss(torch.full((1, 3, 8, 8), 0.45), torch.full((1, 3, 8, 8), 0.65))
    assert torch.isclose(half, torch.tensor(0.1))  # halfway up the ramp: weight 0.5
    both = keep_well_lit_loss(torch.cat([dark, bright]), torch.cat([dark + 0.5, brighter.detach()]))
    assert torch.isclose(both, torch.tensor(0.1))  # batch mean; the dark image adds nothing
    with pytest.raises(ValueError, match="keep_above"):
        keep_well_lit_loss(dark, dark, keep_above=0)


def test_config_defaults_are_the_one_source_of_the_loss_settings() -> None:
    """DEFAULTS["loss"] (the YAML-facing config) gives the term names, their order and every default."""
    loss = DEFAULTS["loss"]
    assert TERM_NAMES == tuple(TERMS) == tuple(loss["weights"])
    assert dataclasses.asdict(LossWeights()) == loss["weights"]
    settings = dataclasses.asdict(LossSettings())
    assert settings == loss and LossSettings.from_config(loss) == LossSettings()
    for term in TERMS.values():  # each function takes its inputs (and labelled=) as the registry says
        inspect.signature(term.function).bind(*term.inputs, **({"labelled": None} if term.labelled else {}))
    batch_and_networks = {"low", "enhanced", "curve_maps", "positives", "negatives", "labels", "segmenter"}
    batch_and_networks |= {"num_classes", "void_index", "texture_layers", "feature_layer"}
    batch_and_networks |= {"input_feats", "output_feats", "positive_feats", "negative_feats"}
    settings_used = {key for term in TERMS.values() for key in term.inputs} - batch_and_networks
    assert settings_used and settings_used <= set(loss)  # named by their config keys
    with pytest.raises(ValueError, match="unknown loss weights"):
        LossSettings.from_config({"weights": {"tvv": 1.0}})
    no_networks = {**loss, "weights": {**loss["weights"], "texture": 0, "feature": 0, "segmentation": 0}}
    objective = SCLObjective(LossSettings.from_config({**no_networks, "num_classes": 5}), void_index=4)
    assert objective.num_classes == 5 and objective.weights.tv == loss["weights"]["tv"]
    assert SCLObjective(LossWeights(segmentation=0, texture=0, feature=0), void_index=11).num_classes == 12
