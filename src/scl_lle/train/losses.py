"""Thin ``nn.Module`` forms of the loss terms of :mod:`scl_lle.train.terms` (each holds a term's settings).

The combined training objective is :class:`scl_lle.train.objective.SCLObjective`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from ..models.segmenter import Segmenter
from . import terms
from .terms import TEXTURE_LAYERS, GreyDistance, SemanticVariant

__all__ = [
    "ColourConstancyLoss",
    "ContrastiveGreyLoss",
    "ContrastiveTextureLoss",
    "CurveSmoothnessLoss",
    "ExposureControlLoss",
    "FeaturePreservationLoss",
    "SegmentationLoss",
    "SemanticBrightnessLoss",
]


class ContrastiveGreyLoss(nn.Module):
    """Module form of :func:`contrastive_grey_loss`: ``forward(output, positives, negatives)``."""

    def __init__(self, margin: float = 0.3, mode: GreyDistance = "pixel") -> None:
        super().__init__()
        self.margin = margin
        self.mode: GreyDistance = mode

    def forward(self, output: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        return terms.contrastive_grey_loss(output, positives, negatives, self.margin, self.mode)

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
        return terms.contrastive_texture_loss(output_feats, positive_feats, negative_feats, self.margin, self.layers)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, layers={self.layers}"


class SemanticBrightnessLoss(nn.Module):
    """Module form of :func:`semantic_brightness_loss`: ``forward(output, labels, labelled=None)``."""

    def __init__(self, num_classes: int, void_index: int | None = None, variant: SemanticVariant = "class") -> None:
        super().__init__()
        if variant not in ("class", "upstream"):
            raise ValueError(f"variant must be 'class' or 'upstream', got {variant!r}")
        self.num_classes = num_classes
        self.void_index = void_index
        self.variant: SemanticVariant = variant

    def forward(self, output: Tensor, labels: Tensor, labelled: Tensor | None = None) -> Tensor:
        return terms.semantic_brightness_loss(
            output, labels, self.num_classes, self.void_index, self.variant, labelled=labelled
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, void_index={self.void_index}, variant={self.variant!r}"


class SegmentationLoss(nn.Module):
    """Module form of :func:`segmentation_loss`, holding the frozen segmenter."""

    def __init__(self, segmenter: Segmenter, detach: bool = False) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.detach = detach

    def forward(self, output: Tensor, labels: Tensor, labelled: Tensor | None = None) -> Tensor:
        return terms.segmentation_loss(self.segmenter, output, labels, self.detach, labelled=labelled)

    def extra_repr(self) -> str:
        return f"detach={self.detach}"


class FeaturePreservationLoss(nn.Module):
    """Module form of :func:`feature_preservation_loss`: ``forward(input_feats, output_feats)``."""

    def __init__(self, layer: str = "relu4_3") -> None:
        super().__init__()
        self.layer = layer

    def forward(self, input_feats: Mapping[str, Tensor], output_feats: Mapping[str, Tensor]) -> Tensor:
        return terms.feature_preservation_loss(input_feats, output_feats, self.layer)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}"


class ColourConstancyLoss(nn.Module):
    """Module form of :func:`colour_constancy_loss`: ``forward(output)``."""

    def forward(self, output: Tensor) -> Tensor:
        return terms.colour_constancy_loss(output)


class CurveSmoothnessLoss(nn.Module):
    """Module form of :func:`curve_smoothness_loss`: ``forward(curve_maps)``."""

    def forward(self, curve_maps: Tensor) -> Tensor:
        return terms.curve_smoothness_loss(curve_maps)


class ExposureControlLoss(nn.Module):
    """Module form of :func:`exposure_control_loss`: ``forward(output)``."""

    def __init__(self, patch_size: int = 16, target: float = 0.6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.target = target

    def forward(self, output: Tensor) -> Tensor:
        return terms.exposure_control_loss(output, self.patch_size, self.target)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, target={self.target}"
