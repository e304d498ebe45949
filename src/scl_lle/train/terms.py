"""The terms of the SCL-LLE training objective (Liang et al., AAAI 2022) as pure functions.

Each returns a scalar; images are RGB ``(B, 3, H, W)`` in [0, 1] unless stated; all vectorised, device/dtype
agnostic. In brackets: the term's config name (``loss.weights.<name>``, :data:`scl_lle.train.objective.TERMS`).

* [contrastive] :func:`contrastive_grey_loss` -- the output's grey image should be nearer the normal-light pool
  (positives) than the low-light pool (negatives), by a margin; [texture] :func:`contrastive_texture_loss` -- the
  same hinge on VGG16 Gram matrices (relu1_2, relu2_2).
* [semantic] :func:`semantic_brightness_loss` -- brightness should be consistent inside each semantic class;
  [segmentation] :func:`segmentation_loss` -- cross-entropy of a frozen segmenter on the enhanced image.
* [feature] :func:`feature_preservation_loss` -- VGG16 relu4_3 features of input and output should agree.
* [colour] :func:`colour_constancy_loss`, [tv] :func:`curve_smoothness_loss`, [exposure]
  :func:`exposure_control_loss` -- Zero-DCE's colour-constancy, illumination-smoothness and exposure losses.
* [keep] :func:`keep_well_lit_loss`, [tone] :func:`tone_prior_loss` -- not in the paper, off by default: leave
  well-lit inputs alone; stay near an exposure-adaptive gamma curve of the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.colour import gamma_correction
from ..models.segmenter import Segmenter
from ..models.vgg import gram_matrix

__all__ = [
    "TEXTURE_LAYERS",
    "GreyDistance",
    "SemanticVariant",
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

#: The VGG16 layers whose Gram matrices the texture term compares (the release's).
TEXTURE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2")


def _check_images(name: str, x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must be an RGB batch of shape (B, 3, H, W), got {tuple(x.shape)}")


def _stat_dtype(x: Tensor) -> torch.dtype:
    """At least float32 for accumulations (half-precision sums over many pixels lose precision or overflow)."""
    return torch.promote_types(x.dtype, torch.float32)


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

    Relation to the release: the authors drew as many pool images as outputs (2) and paired them elementwise,
    computing one hinge on the batch-averaged distances, ``max(0, mean_b d(Y_b, P_b) - mean_b d(Y_b, N_b) +
    margin)``. Here every output is compared with every pool sample (distances averaged over the pool) and the
    hinge is applied per output image, then averaged over the batch, so the loss does not depend on the order of
    the pool and one image that is already well separated does not mask another that is not. For
    ``B = P = N = 1`` both are identical.
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
        Scalar >= 0. As for :func:`contrastive_grey_loss`, the release paired outputs and pool images elementwise
        (and, with ``reduction='sum'``, summed the pair distances); here each output meets the whole pool.
    """
    d_pos = texture_distance(output_feats, positive_feats, layers)
    d_neg = texture_distance(output_feats, negative_feats, layers)
    return F.relu(d_pos - d_neg + margin).mean()


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
    void_index: int | None = None,
    variant: SemanticVariant = "class",
    *,
    labelled: Tensor | None = None,
) -> Tensor:
    """Semantic brightness consistency: brightness should vary little inside each semantic class.
    (Long because: two variants of one formula, each in one vectorised pass, documented in full.)

    Brightness is the channel mean of ``output``. Pixels whose label is ``void_index`` or outside
    ``[0, num_classes)`` never contribute, nor do images with ``labelled[b] == False``.

    Args:
        output: ``(B, 3, H, W)`` enhanced images in [0, 1].
        labels: ``(B, H, W)`` integer class ids.
        num_classes: number of class ids ``K``.
        void_index: the void class id, left out (``None``: every class counts).
        variant: ``"class"`` (default, the paper's intent): for every image ``b`` and class ``k`` present, the
            variance (around its own mean) of the brightness of the class's pixels; the loss is the mean over all
            present ``(b, k)`` pairs, 0 when there are none.
            ``"upstream"``: the released formula, for ``k = 0..K-1``: ``a = where(label == k, y, 0)``,
            ``m = mean(a)`` over the whole batch tensor (zeros included), ``a = where(a == 0, m, a)`` (so
            pixels of class ``k`` that are exactly black count as background), ``term_k = mean((a - m)^2)``;
            the loss is ``sum_k term_k``. The release included the void class (pass ``void_index=None`` to
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
    if void_index is not None:
        valid &= lab != void_index
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
        segmenter: a frozen :class:`~scl_lle.models.segmenter.Segmenter`; ``segmenter.spec.void_index`` is ignored.
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
    void_index = segmenter.spec.void_index
    lab = labels.to(torch.int64)
    if labelled is not None:
        lab = torch.where(labelled.to(device=lab.device, dtype=torch.bool)[:, None, None], lab, void_index)
    logits = segmenter(output.detach() if detach else output)
    ce = F.cross_entropy(logits.float(), lab, ignore_index=void_index, reduction="none")  # (B, H, W), 0 at void
    count = (lab != void_index).sum().to(ce.dtype)
    return ce.sum() / count.clamp_min(1)


def feature_preservation_loss(
    input_feats: Mapping[str, Tensor], output_feats: Mapping[str, Tensor], layer: str = "relu4_3"
) -> Tensor:
    """Mean squared error between the VGG16 ``layer`` features ``(B, C, h, w)`` of the input and the output."""
    return F.mse_loss(output_feats[layer], input_feats[layer])


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


def _check_input_output_fraction(low: Tensor, enhanced: Tensor, name: str, value: float) -> None:
    """Check an input/output image pair and a level strictly inside (0, 1)."""
    _check_images("low", low)
    _check_images("enhanced", enhanced)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be within (0, 1), got {value}")


def keep_well_lit_loss(low: Tensor, enhanced: Tensor, keep_above: float = 0.3) -> Tensor:
    """Leave well-lit inputs alone: ``mean_b s_b * mean |enhanced_b - low_b|``.

    ``s_b = clamp((m_b - keep_above) / keep_above, 0, 1)`` with ``m_b`` the mean grey level of input ``b``: 0 for
    inputs at or below ``keep_above`` (dark ones: free to brighten), rising to 1 at twice that level.

    Args:
        low: ``(B, 3, H, W)`` inputs in [0, 1].
        enhanced: ``(B, 3, H, W)`` outputs in [0, 1].
        keep_above: mean input brightness above which changes are penalised (in (0, 1)).

    Returns:
        Scalar >= 0.
    """
    _check_input_output_fraction(low, enhanced, "keep_above", keep_above)
    lit = ((low.detach().mean(dim=(1, 2, 3)) - keep_above) / keep_above).clamp(0.0, 1.0)  # (B,)
    return (lit * (enhanced - low).abs().mean(dim=(1, 2, 3))).mean()


def tone_prior_loss(low: Tensor, enhanced: Tensor, target: float = 0.45) -> Tensor:
    """Stay near an exposure-adaptive gamma curve: ``mean |enhanced - low ** e_b|``.

    ``e_b = log(target) / log(m_b)``, clamped to [0.1, 1], maps the mean luminance ``m_b`` of input ``b`` to
    ``target`` (:func:`scl_lle.core.colour.gamma_correction`); inputs brighter than ``target`` get
    ``e_b = 1`` (left alone). DCE-Net's quadratic curves are near-linear at black, so without this prior they lift a
    dark photo's noise as much as its mean; ``x ** e`` lifts a pixel by ``y / x`` with a slope (noise gain) of only
    ``e * y / x``. In 600-step runs the network matched the curve's brightness but not its shape, and NIQE did
    not improve (docs/MODEL_CARD.md).

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
