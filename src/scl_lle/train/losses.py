"""The SCL-LLE training objective (Liang et al., AAAI 2022): a functional core and thin ``nn.Module`` wrappers.

Terms (all return a scalar tensor; images are RGB ``(B, 3, H, W)`` in [0, 1] unless stated):

* :func:`contrastive_grey_loss` -- brightness contrast: the output's grey image should be nearer the
  normal-light pool (positives) than the low-light pool (negatives), by a margin.
* :func:`contrastive_texture_loss` -- the same hinge on VGG16 Gram matrices (relu1_2, relu2_2).
* :func:`semantic_brightness_loss` -- brightness should be consistent inside each semantic class.
* :func:`feature_preservation_loss` -- VGG16 relu4_3 features of input and output should agree.
* :func:`colour_constancy_loss`, :func:`curve_smoothness_loss`, :func:`exposure_control_loss` -- Zero-DCE's
  colour-constancy, illumination-smoothness (TV of the curve maps) and exposure-control losses.
* :func:`segmentation_loss` -- cross-entropy of a frozen segmenter on the enhanced image.
* :func:`keep_well_lit_loss` -- (not in the paper, off by default) inputs that are already well lit should
  come out unchanged.
* :func:`tone_prior_loss` -- (not in the paper, off by default) the output should stay near an
  exposure-adaptive gamma curve of the input: a concave tone curve lifts dark pixels with little noise gain.

:class:`SCLObjective` combines them with :class:`LossWeights` (the released weights by default)::

    total = 200 TV + 8 colour + semantic + 10 contrastive + 5 texture + feature + segmentation
            (+ 0 exposure + 0 keep + 0 tone)

Everything is vectorised (no per-class Python loops, no host synchronisation) and device/dtype agnostic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..evaluation.baselines import gamma_correction
from ..models.espnet import Segmenter
from ..models.vgg import VGG16Features, gram_matrix

__all__ = [
    "TERM_NAMES",
    "ColourConstancyLoss",
    "ContrastiveGreyLoss",
    "ContrastiveTextureLoss",
    "CurveSmoothnessLoss",
    "ExposureControlLoss",
    "FeaturePreservationLoss",
    "LossWeights",
    "SCLObjective",
    "SegmentationLoss",
    "SemanticBrightnessLoss",
    "colour_constancy_loss",
    "contrastive_grey_loss",
    "contrastive_texture_loss",
    "curve_smoothness_loss",
    "exposure_control_loss",
    "feature_preservation_loss",
    "grey_distance",
    "keep_well_lit_loss",
    "segmentation_loss",
    "semantic_brightness_loss",
    "texture_distance",
    "tone_prior_loss",
]

SemanticVariant = Literal["class", "upstream"]
GreyDistance = Literal["pixel", "sorted"]

#: Names of the terms of :class:`SCLObjective`, in the order they are computed and reported.
TERM_NAMES: tuple[str, ...] = (
    "tv",
    "colour",
    "semantic",
    "contrastive",
    "texture",
    "feature",
    "segmentation",
    "exposure",
    "keep",
    "tone",
)

TEXTURE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2")


def _check_images(name: str, x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be an RGB batch of shape (B, 3, H, W), got {tuple(x.shape)}")


def _stat_dtype(x: Tensor) -> torch.dtype:
    """At least float32 for accumulations (half-precision sums over many pixels lose precision or overflow)."""
    return torch.promote_types(x.dtype, torch.float32)


# --------------------------------------------------------------------------------------------------
# Contrastive terms
# --------------------------------------------------------------------------------------------------


def grey_distance(x: Tensor, y: Tensor, mode: GreyDistance = "pixel") -> Tensor:
    """Mean absolute difference of grey (channel-mean) images, averaged over a pool.

    Args:
        x: ``(B, 3, H, W)`` images in [0, 1] (the enhanced outputs).
        y: ``(N, 3, H, W)`` pool images in [0, 1], the same ``H, W`` as ``x``.
        mode: ``"pixel"`` (the paper's): pixel ``i`` of ``x`` is compared with pixel ``i`` of each pool image,
            although they show different scenes; ``"sorted"``: the grey values of each image are sorted first,
            so ``d`` is the 1-D Wasserstein-1 distance between the two brightness distributions.

    Returns:
        ``(B,)``: ``d[b] = mean_n mean_hw |g(x[b]) - g(y[n])|`` with ``g`` the channel mean (sorted for
        ``"sorted"``), in [0, 1].

    Why ``"sorted"``: between unrelated scenes the pixelwise distance is smallest for an output that is the
    same mid grey everywhere (the per-pixel median of the pool), so in principle it rewards flat, low-contrast
    images. Comparing sorted values asks only that the output's histogram of brightness look like a
    normal-light photo's, dark and bright parts included. (Tried for the default model: no measurable
    difference at the CPU budget; docs/MODEL_CARD.md.)
    """
    _check_images("x", x)
    _check_images("y", y)
    if mode not in ("pixel", "sorted"):
        raise ValueError(f"mode must be 'pixel' or 'sorted', got {mode!r}")
    if x.shape[-2:] != y.shape[-2:]:
        raise ValueError(f"pool images {tuple(y.shape)} must have the size of the outputs {tuple(x.shape)}")
    gx = x.mean(1).flatten(1)  # (B, H*W)
    gy = y.mean(1).flatten(1)  # (N, H*W)
    if mode == "sorted":
        gx, gy = gx.sort(dim=1).values, gy.sort(dim=1).values
    return (gx[:, None] - gy[None]).abs().mean(dim=(1, 2))


def contrastive_grey_loss(
    output: Tensor, positives: Tensor, negatives: Tensor, margin: float = 0.3, mode: GreyDistance = "pixel"
) -> Tensor:
    """Brightness contrastive loss ``mean_b max(0, d(Y_b, P) - d(Y_b, N) + margin)``, ``d`` = :func:`grey_distance`.

    Args:
        output: ``(B, 3, H, W)`` enhanced images in [0, 1].
        positives: ``(P, 3, H, W)`` normal-light pool in [0, 1].
        negatives: ``(N, 3, H, W)`` low-light pool in [0, 1].
        margin: hinge margin (0.3 in the release).
        mode: ``"pixel"`` (the paper's) or ``"sorted"`` (brightness distributions), see :func:`grey_distance`.

    Returns:
        Scalar >= 0.

    Relation to the release: the authors drew as many pool images as outputs (2) and paired them
    elementwise, computing one hinge on the batch-averaged distances, ``max(0, mean_b d(Y_b, P_b) -
    mean_b d(Y_b, N_b) + margin)``. Here every output is compared with every pool sample (distances
    averaged over the pool) and the hinge is applied per output image, then averaged over the batch, so
    the loss does not depend on the order of the pool and one image that is already well separated does
    not mask another that is not. For ``B = P = N = 1`` both are identical.
    """
    d_pos = grey_distance(output, positives, mode)
    d_neg = grey_distance(output, negatives, mode)
    return F.relu(d_pos - d_neg + margin).mean()


def texture_distance(
    x_feats: Mapping[str, Tensor],
    y_feats: Mapping[str, Tensor],
    layers: Sequence[str] = TEXTURE_LAYERS,
) -> Tensor:
    """Gram-matrix distance between ``B`` outputs and a pool of ``N`` images, averaged over the pool.

    Args:
        x_feats: ``{layer: (B, C, h, w)}`` VGG16 features of the outputs (see :class:`VGG16Features`).
        y_feats: ``{layer: (N, C, h', w')}`` features of the pool (sizes may differ from the outputs').
        layers: the layers to use.

    Returns:
        ``(B,)``: ``d[b] = mean_n sum_layers sum_ij (G(x_b) - G(y_n))_ij^2`` with ``G`` = :func:`gram_matrix`
        (the release's ``MSELoss(reduction='sum')`` summed over layers).
    """
    if not layers:
        raise ValueError("layers must name at least one layer")
    total: Tensor | None = None
    for layer in layers:
        gx = gram_matrix(x_feats[layer])  # (B, C, C)
        gy = gram_matrix(y_feats[layer])  # (N, C, C)
        d = (gx[:, None] - gy[None]).square().sum(dim=(-2, -1))  # (B, N)
        total = d if total is None else total + d
    assert total is not None
    return total.mean(1)


def contrastive_texture_loss(
    output_feats: Mapping[str, Tensor],
    positive_feats: Mapping[str, Tensor],
    negative_feats: Mapping[str, Tensor],
    margin: float = 0.04,
    layers: Sequence[str] = TEXTURE_LAYERS,
) -> Tensor:
    """Texture contrastive loss ``mean_b max(0, d(Y_b, P) - d(Y_b, N) + margin)``, ``d`` = :func:`texture_distance`.

    Args:
        output_feats: ``{layer: (B, C, h, w)}`` VGG16 features of the enhanced images.
        positive_feats: ``{layer: (P, C, h, w)}`` features of the normal-light pool.
        negative_feats: ``{layer: (N, C, h, w)}`` features of the low-light pool.
        margin: hinge margin (0.04 in the release).
        layers: layers whose Gram matrices are compared (relu1_2 and relu2_2 in the release).

    Returns:
        Scalar >= 0. As for :func:`contrastive_grey_loss`, the release paired outputs and pool images
        elementwise (and, with ``reduction='sum'``, summed rather than averaged the pair distances); here
        each output is compared with the whole pool and hinged individually.
    """
    d_pos = texture_distance(output_feats, positive_feats, layers)
    d_neg = texture_distance(output_feats, negative_feats, layers)
    return F.relu(d_pos - d_neg + margin).mean()


# --------------------------------------------------------------------------------------------------
# Semantic terms
# --------------------------------------------------------------------------------------------------


def _check_labels(output: Tensor, labels: Tensor, labelled: Tensor | None) -> None:
    _check_images("output", output)
    if labels.shape != (output.shape[0], *output.shape[-2:]):
        raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(output.shape)}; expected (B, H, W)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    if labelled is not None and labelled.shape != (output.shape[0],):
        raise ValueError(f"labelled must have shape (B,) = ({output.shape[0]},), got {tuple(labelled.shape)}")


def semantic_brightness_loss(
    output: Tensor,
    labels: Tensor,
    num_classes: int,
    ignore_index: int | None = None,
    variant: SemanticVariant = "class",
    *,
    labelled: Tensor | None = None,
) -> Tensor:
    """Semantic brightness consistency: brightness should vary little inside each semantic class.

    Brightness is the channel mean of ``output``. Pixels whose label is ``ignore_index`` or outside
    ``[0, num_classes)`` never contribute, nor do images with ``labelled[b] == False``.

    Args:
        output: ``(B, 3, H, W)`` enhanced images in [0, 1].
        labels: ``(B, H, W)`` integer class ids.
        num_classes: number of class ids ``K``.
        ignore_index: a class id to leave out (e.g. the void class), or ``None``.
        variant:
            ``"class"`` (default, the paper's intent): for every image ``b`` and class ``k`` present, the
            variance (around its own mean) of the brightness of the class's pixels; the loss is the mean over
            all present ``(b, k)`` pairs, 0 when there are none.

            ``"upstream"``: the released formula, for ``k = 0..K-1``: ``a = where(label == k, y, 0)``,
            ``m = mean(a)`` over the whole batch tensor (zeros included), ``a = where(a == 0, m, a)`` (so
            pixels of class ``k`` that are exactly black count as background), ``term_k = mean((a - m)^2)``;
            the loss is ``sum_k term_k``. The release included the void class (pass ``ignore_index=None`` to
            reproduce it). With ``labelled``, the means run over the labelled images only.
        labelled: optional ``(B,)`` bool, which images have real labels.

    Returns:
        Scalar >= 0 (float32 or wider).
    """
    _check_labels(output, labels, labelled)
    if variant not in ("class", "upstream"):
        raise ValueError(f"variant must be 'class' or 'upstream', got {variant!r}")
    b, _, h, w = output.shape
    y = output.to(_stat_dtype(output)).mean(1).reshape(-1)  # (B*H*W,) brightness
    lab = labels.to(torch.int64)
    valid = (lab >= 0) & (lab < num_classes)
    if ignore_index is not None:
        valid &= lab != ignore_index
    if labelled is not None:
        valid &= labelled.to(device=lab.device, dtype=torch.bool)[:, None, None]
    valid = valid.reshape(-1)

    if variant == "class":
        image = torch.arange(b, device=lab.device).repeat_interleave(h * w)
        pair = torch.where(valid, image * num_classes + lab.reshape(-1), b * num_classes)  # dump bin for invalid
        bins = b * num_classes + 1
        count = torch.zeros(bins, dtype=y.dtype, device=y.device).index_add_(0, pair, torch.ones_like(y))
        total = torch.zeros(bins, dtype=y.dtype, device=y.device).index_add_(0, pair, y)
        mean = total / count.clamp_min(1)
        dev = torch.where(valid, y - mean[pair], torch.zeros_like(y)).square()
        var = torch.zeros(bins, dtype=y.dtype, device=y.device).index_add_(0, pair, dev)[:-1] / count[:-1].clamp_min(1)
        present = (count[:-1] > 0).to(y.dtype)
        return (var * present).sum() / present.sum().clamp_min(1)

    # upstream: term_k = sum_{label == k, y != 0} (y - m_k)^2 / n with m_k = sum_{label == k} y / n
    n = torch.tensor(float(b * h * w), dtype=y.dtype, device=y.device)
    if labelled is not None:
        n = labelled.to(device=y.device, dtype=y.dtype).sum() * (h * w)
    cls = torch.where(valid, lab.reshape(-1), num_classes)
    sums = torch.zeros(num_classes + 1, dtype=y.dtype, device=y.device).index_add_(0, cls, y)
    m = sums / n.clamp_min(1)
    keep = valid & (y != 0)
    return torch.where(keep, y - m[cls], torch.zeros_like(y)).square().sum() / n.clamp_min(1)


def segmentation_loss(
    segmenter: Segmenter,
    output: Tensor,
    labels: Tensor,
    detach: bool = False,
    *,
    labelled: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of a frozen segmenter's logits on the enhanced images against labels.

    Args:
        segmenter: a frozen :class:`~scl_lle.models.espnet.Segmenter`; ``segmenter.spec.void_index`` is ignored.
        output: ``(B, 3, H, W)`` enhanced images in [0, 1].
        labels: ``(B, H, W)`` integer class ids in ``[0, C)``.
        detach: detach ``output`` first (the released behaviour: the term then sends no gradient to the
            enhancer and only shifts the reported loss value).
        labelled: optional ``(B,)`` bool; images without real labels are ignored entirely.

    Returns:
        Scalar: mean cross-entropy over the non-ignored pixels, 0 (still part of the graph) when every pixel is
        ignored.
    """
    _check_labels(output, labels, labelled)
    void = segmenter.spec.void_index
    lab = labels.to(torch.int64)
    if labelled is not None:
        lab = torch.where(labelled.to(device=lab.device, dtype=torch.bool)[:, None, None], lab, void)
    logits = segmenter(output.detach() if detach else output)
    ce = F.cross_entropy(logits.float(), lab, ignore_index=void, reduction="none")  # (B, H, W), 0 where ignored
    count = (lab != void).sum().to(ce.dtype)
    return ce.sum() / count.clamp_min(1)


def feature_preservation_loss(
    input_feats: Mapping[str, Tensor], output_feats: Mapping[str, Tensor], layer: str = "relu4_3"
) -> Tensor:
    """Mean squared error between the VGG16 ``layer`` features ``(B, C, h, w)`` of the input and the output."""
    return F.mse_loss(output_feats[layer], input_feats[layer])


# --------------------------------------------------------------------------------------------------
# Zero-DCE terms
# --------------------------------------------------------------------------------------------------


def colour_constancy_loss(output: Tensor) -> Tensor:
    """Zero-DCE colour constancy: ``mean_b sqrt(Drg^2 + Drb^2 + Dgb^2)`` with ``Dxy = (mean x - mean y)^2``.

    Args:
        output: ``(B, 3, H, W)`` RGB in [0, 1].

    Returns:
        Scalar in [0, sqrt(2)]. The gradient is 0 (not NaN) for perfectly grey images.
    """
    _check_images("output", output)
    mr, mg, mb = output.mean(dim=(2, 3)).unbind(1)  # (B,) each
    d = torch.stack(((mr - mg).square(), (mr - mb).square(), (mb - mg).square()), dim=1)
    return torch.linalg.vector_norm(d, dim=1).mean()


def curve_smoothness_loss(curve_maps: Tensor) -> Tensor:
    """Zero-DCE illumination smoothness (total variation) of the curve maps.

    Args:
        curve_maps: ``(B, C, H, W)`` (``C = 3 * iterations``), in [-1, 1].

    Returns:
        ``2 * (sum dy^2 / ((H-1) W) + sum dx^2 / (H (W-1))) / B``, the sums running over batch, channels and
        pixels; a direction with a single row/column contributes 0.
    """
    if curve_maps.ndim != 4:
        raise ValueError(f"curve maps must have shape (B, C, H, W), got {tuple(curve_maps.shape)}")
    b, _, h, w = curve_maps.shape
    zero = curve_maps.sum() * 0
    tv_h = (curve_maps[:, :, 1:] - curve_maps[:, :, :-1]).square().sum() / ((h - 1) * w) if h > 1 else zero
    tv_w = (curve_maps[..., 1:] - curve_maps[..., :-1]).square().sum() / (h * (w - 1)) if w > 1 else zero
    return 2 * (tv_h + tv_w) / b


def exposure_control_loss(output: Tensor, patch_size: int = 16, target: float = 0.6) -> Tensor:
    """Zero-DCE exposure control: mean over non-overlapping patches of ``(patch mean of grey - target)^2``.

    Args:
        output: ``(B, 3, H, W)`` in [0, 1], ``H, W >= patch_size``; incomplete patches at the bottom/right
            are dropped (as ``AvgPool2d`` does in the release).
        patch_size: patch side (16).
        target: well-exposedness level ``E`` (0.6).

    Returns:
        Scalar >= 0.
    """
    _check_images("output", output)
    if min(output.shape[-2:]) < patch_size:
        raise ValueError(f"images of size {tuple(output.shape[-2:])} are smaller than the {patch_size}px patches")
    patches = F.avg_pool2d(output.mean(1, keepdim=True), patch_size)
    return (patches - target).square().mean()


# --------------------------------------------------------------------------------------------------
# nn.Module wrappers
# --------------------------------------------------------------------------------------------------


class ContrastiveGreyLoss(nn.Module):
    """Module form of :func:`contrastive_grey_loss`: ``forward(output, positives, negatives)``."""

    def __init__(self, margin: float = 0.3, mode: GreyDistance = "pixel") -> None:
        super().__init__()
        self.margin = margin
        self.mode: GreyDistance = mode

    def forward(self, output: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        return contrastive_grey_loss(output, positives, negatives, self.margin, self.mode)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mode={self.mode!r}"


class ContrastiveTextureLoss(nn.Module):
    """Module form of :func:`contrastive_texture_loss` on feature dicts."""

    def __init__(self, margin: float = 0.04, layers: Sequence[str] = TEXTURE_LAYERS) -> None:
        super().__init__()
        self.margin = margin
        self.layers = tuple(layers)

    def forward(
        self,
        output_feats: Mapping[str, Tensor],
        positive_feats: Mapping[str, Tensor],
        negative_feats: Mapping[str, Tensor],
    ) -> Tensor:
        return contrastive_texture_loss(output_feats, positive_feats, negative_feats, self.margin, self.layers)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, layers={self.layers}"


class SemanticBrightnessLoss(nn.Module):
    """Module form of :func:`semantic_brightness_loss`: ``forward(output, labels, labelled=None)``."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, variant: SemanticVariant = "class") -> None:
        super().__init__()
        if variant not in ("class", "upstream"):
            raise ValueError(f"variant must be 'class' or 'upstream', got {variant!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.variant: SemanticVariant = variant

    def forward(self, output: Tensor, labels: Tensor, labelled: Tensor | None = None) -> Tensor:
        return semantic_brightness_loss(
            output, labels, self.num_classes, self.ignore_index, self.variant, labelled=labelled
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, variant={self.variant!r}"


class SegmentationLoss(nn.Module):
    """Module form of :func:`segmentation_loss`, holding the frozen segmenter."""

    def __init__(self, segmenter: Segmenter, detach: bool = False) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.detach = detach

    def forward(self, output: Tensor, labels: Tensor, labelled: Tensor | None = None) -> Tensor:
        return segmentation_loss(self.segmenter, output, labels, self.detach, labelled=labelled)

    def extra_repr(self) -> str:
        return f"detach={self.detach}"


class FeaturePreservationLoss(nn.Module):
    """Module form of :func:`feature_preservation_loss`: ``forward(input_feats, output_feats)``."""

    def __init__(self, layer: str = "relu4_3") -> None:
        super().__init__()
        self.layer = layer

    def forward(self, input_feats: Mapping[str, Tensor], output_feats: Mapping[str, Tensor]) -> Tensor:
        return feature_preservation_loss(input_feats, output_feats, self.layer)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}"


class ColourConstancyLoss(nn.Module):
    """Module form of :func:`colour_constancy_loss`: ``forward(output)``."""

    def forward(self, output: Tensor) -> Tensor:
        return colour_constancy_loss(output)


class CurveSmoothnessLoss(nn.Module):
    """Module form of :func:`curve_smoothness_loss`: ``forward(curve_maps)``."""

    def forward(self, curve_maps: Tensor) -> Tensor:
        return curve_smoothness_loss(curve_maps)


def _check_input_output_fraction(low: Tensor, enhanced: Tensor, name: str, value: float) -> None:
    """Check an input/output image pair and a level strictly inside (0, 1)."""
    _check_images("low", low)
    _check_images("enhanced", enhanced)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be within (0, 1), got {value}")


def keep_well_lit_loss(low: Tensor, enhanced: Tensor, threshold: float = 0.3) -> Tensor:
    """Leave well-lit inputs alone: ``mean_b s_b * mean |enhanced_b - low_b|``.

    ``s_b = clamp((m_b - threshold) / threshold, 0, 1)`` with ``m_b`` the mean grey level of input ``b``: 0 for
    inputs at or below ``threshold`` (dark ones: free to brighten), rising to 1 at twice the threshold.

    Args:
        low: ``(B, 3, H, W)`` inputs in [0, 1].
        enhanced: ``(B, 3, H, W)`` outputs in [0, 1].
        threshold: mean input brightness above which changes are penalised (in (0, 1)).

    Returns:
        Scalar >= 0.
    """
    _check_input_output_fraction(low, enhanced, "threshold", threshold)
    lit = ((low.detach().mean(dim=(1, 2, 3)) - threshold) / threshold).clamp(0.0, 1.0)  # (B,)
    return (lit * (enhanced - low).abs().mean(dim=(1, 2, 3))).mean()


def tone_prior_loss(low: Tensor, enhanced: Tensor, target: float = 0.45) -> Tensor:
    """Stay near an exposure-adaptive gamma curve: ``mean |enhanced - low ** e_b|``.

    ``e_b = log(target) / log(m_b)``, clamped to [0.1, 1], maps the mean luminance ``m_b`` of input ``b`` to
    ``target`` (:func:`scl_lle.evaluation.baselines.gamma_correction`); inputs brighter than ``target`` get ``e_b = 1``
    (left alone). DCE-Net's quadratic curves are near-linear at black, so without this prior they lift a dark
    photo's noise as much as its mean; ``x ** e`` lifts a pixel by ``y / x`` with a slope (noise gain) of only
    ``e * y / x``. In the project's 600-step runs the network matched the curve's
    brightness but not its shape, and NIQE did not improve (docs/MODEL_CARD.md).

    Args:
        low: ``(B, 3, H, W)`` inputs in [0, 1] (no gradient flows to them).
        enhanced: ``(B, 3, H, W)`` outputs in [0, 1].
        target: mean luminance the gamma curve maps a dark input to, in (0, 1).

    Returns:
        Scalar >= 0.
    """
    _check_input_output_fraction(low, enhanced, "target", target)
    with torch.no_grad():
        reference = gamma_correction(low.float(), target=target).to(enhanced.dtype)
    return (enhanced - reference).abs().mean()


class ExposureControlLoss(nn.Module):
    """Module form of :func:`exposure_control_loss`: ``forward(output)``."""

    def __init__(self, patch_size: int = 16, target: float = 0.6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.target = target

    def forward(self, output: Tensor) -> Tensor:
        return exposure_control_loss(output, self.patch_size, self.target)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, target={self.target}"


# --------------------------------------------------------------------------------------------------
# Combined objective
# --------------------------------------------------------------------------------------------------


@dataclass
class LossWeights:
    """Weights of the terms of :class:`SCLObjective` (defaults: the released training script).

    A term whose weight is 0 is not computed at all.
    """

    tv: float = 200.0
    colour: float = 8.0
    semantic: float = 1.0
    contrastive: float = 10.0
    texture: float = 5.0
    feature: float = 1.0
    segmentation: float = 1.0
    exposure: float = 0.0
    keep: float = 0.0
    tone: float = 0.0


class SCLObjective(nn.Module):
    """The SCL-LLE training loss: a weighted sum of the terms above.

    Args:
        weights: per-term weights; weights must be finite and >= 0, and terms weighted 0 are skipped.
        vgg: VGG16 features, needed when ``texture`` or ``feature`` is weighted; must provide
            ``texture_layers`` / ``feature_layer``.
        segmenter: frozen segmenter, needed when ``segmentation`` is weighted.
        num_classes: class count for the semantic term; defaults to ``segmenter.num_classes``.
        ignore_index: class id left out of the semantic term (``None``: none; pass the segmenter's
            ``spec.void_index`` to leave out void). The segmentation term always ignores the void index.
        semantic_variant: ``"class"`` or ``"upstream"`` (see :func:`semantic_brightness_loss`).
        segmentation_detach: detach the output before the segmentation term (the release's behaviour).
        contrastive_margin, texture_margin: hinge margins.
        grey_distance: ``"pixel"`` or ``"sorted"``, the contrastive term's distance (see :func:`grey_distance`).
        exposure_patch, exposure_target: see :func:`exposure_control_loss`.
        keep_above: threshold of :func:`keep_well_lit_loss` (the ``keep`` term).
        tone_target: target of :func:`tone_prior_loss` (the ``tone`` term).
        texture_layers, feature_layer: VGG16 layers of the texture and feature-preservation terms.

    Raises:
        ValueError: a network or ``num_classes`` needed by a weighted term is missing, or the VGG lacks a layer.
    """

    def __init__(
        self,
        weights: LossWeights | None = None,
        *,
        vgg: VGG16Features | None = None,
        segmenter: Segmenter | None = None,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        semantic_variant: SemanticVariant = "class",
        segmentation_detach: bool = False,
        contrastive_margin: float = 0.3,
        texture_margin: float = 0.04,
        grey_distance: GreyDistance = "pixel",
        exposure_patch: int = 16,
        exposure_target: float = 0.6,
        keep_above: float = 0.3,
        tone_target: float = 0.45,
        texture_layers: Sequence[str] = TEXTURE_LAYERS,
        feature_layer: str = "relu4_3",
    ) -> None:
        super().__init__()
        self.weights = weights if weights is not None else LossWeights()
        for name, value in asdict(self.weights).items():
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"loss weight {name!r} must be finite and >= 0, got {value}")
        if semantic_variant not in ("class", "upstream"):
            raise ValueError(f"semantic_variant must be 'class' or 'upstream', got {semantic_variant!r}")
        if grey_distance not in ("pixel", "sorted"):
            raise ValueError(f"grey_distance must be 'pixel' or 'sorted', got {grey_distance!r}")
        w = self.weights
        self.texture_layers = tuple(texture_layers)
        self.feature_layer = feature_layer
        needed: list[str] = []
        if w.texture > 0:
            needed += self.texture_layers
        if w.feature > 0:
            needed.append(feature_layer)
        if needed:
            if vgg is None:
                raise ValueError("the texture and feature terms need a VGG16Features network (vgg=...)")
            missing = [layer for layer in needed if layer not in vgg.layers]
            if missing:
                raise ValueError(f"the VGG16Features network does not return layer(s) {missing}; it has {vgg.layers}")
        if w.segmentation > 0 and segmenter is None:
            raise ValueError("the segmentation term needs a Segmenter (segmenter=...)")
        if num_classes is None and segmenter is not None:
            num_classes = segmenter.num_classes
        if w.semantic > 0 and num_classes is None:
            raise ValueError("the semantic term needs num_classes (or a segmenter to take it from)")
        self.vgg = vgg if needed else None
        self.segmenter = segmenter if w.segmentation > 0 else None
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.semantic_variant: SemanticVariant = semantic_variant
        self.segmentation_detach = segmentation_detach
        self.contrastive_margin = contrastive_margin
        self.texture_margin = texture_margin
        self.grey_distance: GreyDistance = grey_distance
        self.exposure_patch = exposure_patch
        self.exposure_target = exposure_target
        self.keep_above = keep_above
        self.tone_target = tone_target

    def extra_repr(self) -> str:
        return f"weights={self.weights}, semantic_variant={self.semantic_variant!r}"

    def forward(
        self,
        *,
        low: Tensor,
        enhanced: Tensor,
        curve_maps: Tensor,
        positives: Tensor | None,
        negatives: Tensor | None,
        labels: Tensor | None = None,
        labelled: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the objective.

        Args:
            low: ``(B, 3, H, W)`` low-light inputs in [0, 1].
            enhanced: ``(B, 3, H, W)`` enhancer outputs in [0, 1].
            curve_maps: ``(B, 3 * iterations, H, W)`` curve maps in [-1, 1].
            positives: ``(P, 3, H, W)`` normal-light pool in [0, 1] (unused, may be ``None``, when the
                contrastive and texture weights are 0).
            negatives: ``(N, 3, H, W)`` low-light pool in [0, 1] (idem).
            labels: ``(B, H, W)`` int64 class ids; required when the semantic or segmentation term is weighted.
            labelled: ``(B,)`` bool, which images carry real labels (default: all); the semantic and
                segmentation terms use only those and are 0 when there are none.

        Returns:
            ``(total, terms)``: the weighted sum (scalar, differentiable) and the unweighted, detached terms
            keyed by the names of :data:`TERM_NAMES` that were computed.
        """
        w = self.weights
        _check_images("low", low)
        _check_images("enhanced", enhanced)
        if low.shape != enhanced.shape:
            raise ValueError(f"low {tuple(low.shape)} and enhanced {tuple(enhanced.shape)} differ in shape")
        if (w.contrastive > 0 or w.texture > 0) and (positives is None or negatives is None):
            raise ValueError("the contrastive and texture terms need positives and negatives")
        if (w.semantic > 0 or w.segmentation > 0) and labels is None:
            raise ValueError("the semantic and segmentation terms need labels (set their weights to 0 otherwise)")

        terms: dict[str, Tensor] = {}
        if w.tv > 0:
            terms["tv"] = curve_smoothness_loss(curve_maps)
        if w.colour > 0:
            terms["colour"] = colour_constancy_loss(enhanced)
        if w.semantic > 0:
            assert labels is not None and self.num_classes is not None
            terms["semantic"] = semantic_brightness_loss(
                enhanced, labels, self.num_classes, self.ignore_index, self.semantic_variant, labelled=labelled
            )
        if w.contrastive > 0:
            assert positives is not None and negatives is not None
            terms["contrastive"] = contrastive_grey_loss(
                enhanced, positives, negatives, self.contrastive_margin, self.grey_distance
            )
        if w.texture > 0 or w.feature > 0:
            assert self.vgg is not None
            out_feats = self.vgg(enhanced)
            ref_feats = self._reference_features(low, positives, negatives)
            if w.texture > 0:
                terms["texture"] = contrastive_texture_loss(
                    out_feats, ref_feats["positives"], ref_feats["negatives"], self.texture_margin, self.texture_layers
                )
            if w.feature > 0:
                terms["feature"] = feature_preservation_loss(ref_feats["low"], out_feats, self.feature_layer)
        if w.segmentation > 0:
            assert self.segmenter is not None and labels is not None
            terms["segmentation"] = segmentation_loss(
                self.segmenter, enhanced, labels, self.segmentation_detach, labelled=labelled
            )
        if w.exposure > 0:
            terms["exposure"] = exposure_control_loss(enhanced, self.exposure_patch, self.exposure_target)
        if w.keep > 0:
            terms["keep"] = keep_well_lit_loss(low, enhanced, self.keep_above)
        if w.tone > 0:
            terms["tone"] = tone_prior_loss(low, enhanced, self.tone_target)

        total = enhanced.new_zeros(())
        for name, value in terms.items():
            total = total + getattr(w, name) * value
        return total, {name: value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def _reference_features(
        self, low: Tensor, positives: Tensor | None, negatives: Tensor | None
    ) -> dict[str, dict[str, Tensor]]:
        """VGG features (no grad) of the inputs (feature term) and of the pools (texture term), in one pass."""
        assert self.vgg is not None
        parts: dict[str, Tensor] = {}
        if self.weights.feature > 0:
            parts["low"] = low
        if self.weights.texture > 0:
            assert positives is not None and negatives is not None
            parts["positives"] = positives
            parts["negatives"] = negatives
        sizes = {tuple(x.shape[-2:]) for x in parts.values()}
        if len(sizes) == 1:
            feats = self.vgg(torch.cat(list(parts.values()), 0).to(low.dtype))
            chunks = [x.shape[0] for x in parts.values()]
            split = {layer: f.split(chunks, 0) for layer, f in feats.items()}
            return {name: {layer: split[layer][i] for layer in feats} for i, name in enumerate(parts)}
        return {name: self.vgg(x) for name, x in parts.items()}
