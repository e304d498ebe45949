"""The SCL-LLE training objective: a weighted sum of the terms of :mod:`scl_lle.train.terms`.

One source of truth: the ``loss`` section of :data:`scl_lle.train.config.DEFAULTS` (the YAML-facing config) holds
every setting and its default. :class:`LossWeights` and :class:`LossSettings` are its typed form (their defaults
are read from it), :data:`TERMS` maps each term's config name (``loss.weights.<name>``) to its function and to the
config settings it takes, and :class:`SCLObjective` is built from the section in one call::

    objective = SCLObjective(LossSettings.from_config(config["loss"]), vgg=vgg, segmenter=segmenter, void_index=11)

With the released weights (the defaults)::

    total = 200 tv + 8 colour + semantic + 10 contrastive + 5 texture + feature + segmentation
            (+ 0 exposure + 0 keep + 0 tone)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..models.segmenter import Segmenter
from ..models.vgg import VGG16Features
from .config import DEFAULTS
from .terms import (
    TEXTURE_LAYERS,
    GreyDistance,
    SemanticVariant,
    _check_images,
    colour_constancy_loss,
    contrastive_grey_loss,
    contrastive_texture_loss,
    curve_smoothness_loss,
    exposure_control_loss,
    feature_preservation_loss,
    keep_well_lit_loss,
    segmentation_loss,
    semantic_brightness_loss,
    tone_prior_loss,
)

__all__ = ["TERMS", "TERM_NAMES", "LossSettings", "LossWeights", "SCLObjective", "Term"]

_LOSS: dict[str, Any] = DEFAULTS["loss"]
_WEIGHTS: dict[str, float] = _LOSS["weights"]


class Term(NamedTuple):
    """A term of the objective: its function and the names of its positional arguments, in order.

    The names are those of :meth:`SCLObjective.forward`'s tensors (``low``, ``enhanced``, ``curve_maps``,
    ``positives``, ``negatives``, ``labels``), of the ``loss`` config settings (``keep_above``, ...), of the
    objective's ``num_classes``, ``void_index``, ``segmenter``, ``texture_layers``, ``feature_layer``, and of VGG16
    features (``output_feats`` of ``enhanced``, ``input_feats`` of ``low``, ``positive_feats``, ``negative_feats``).
    """

    function: Callable[..., Tensor]
    inputs: tuple[str, ...]
    labelled: bool = False  # also takes ``labelled=`` (which images carry real labels)


#: The terms by config name, in the order they are computed, summed and reported.
TERMS: dict[str, Term] = {
    "tv": Term(curve_smoothness_loss, ("curve_maps",)),
    "colour": Term(colour_constancy_loss, ("enhanced",)),
    "semantic": Term(
        semantic_brightness_loss, ("enhanced", "labels", "num_classes", "void_index", "semantic_variant"), True
    ),
    "contrastive": Term(
        contrastive_grey_loss, ("enhanced", "positives", "negatives", "contrastive_margin", "grey_distance")
    ),
    "texture": Term(
        contrastive_texture_loss,
        ("output_feats", "positive_feats", "negative_feats", "texture_margin", "texture_layers"),
    ),
    "feature": Term(feature_preservation_loss, ("input_feats", "output_feats", "feature_layer")),
    "segmentation": Term(segmentation_loss, ("segmenter", "enhanced", "labels", "segmentation_detach"), True),
    "exposure": Term(exposure_control_loss, ("enhanced", "exposure_patch", "exposure_target")),
    "keep": Term(keep_well_lit_loss, ("low", "enhanced", "keep_above")),
    "tone": Term(tone_prior_loss, ("low", "enhanced", "tone_target")),
}
#: Names of the terms of :class:`SCLObjective` (the keys of ``loss.weights``), in the order of :data:`TERMS`.
TERM_NAMES: tuple[str, ...] = tuple(TERMS)


@dataclass
class LossWeights:
    """Weights of the terms (``loss.weights``; defaults from :data:`~scl_lle.train.config.DEFAULTS`, the released
    training script's). A term whose weight is 0 is not computed at all; weights must be finite and >= 0."""

    tv: float = _WEIGHTS["tv"]
    colour: float = _WEIGHTS["colour"]
    semantic: float = _WEIGHTS["semantic"]
    contrastive: float = _WEIGHTS["contrastive"]
    texture: float = _WEIGHTS["texture"]
    feature: float = _WEIGHTS["feature"]
    segmentation: float = _WEIGHTS["segmentation"]
    exposure: float = _WEIGHTS["exposure"]
    keep: float = _WEIGHTS["keep"]
    tone: float = _WEIGHTS["tone"]

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"loss weight {name!r} must be finite and >= 0, got {value}")


@dataclass(frozen=True)
class LossSettings:
    """The ``loss`` section of a training config, typed; each default is :data:`~scl_lle.train.config.DEFAULTS`'.

    ``semantic_variant``: ``"class"`` or ``"upstream"`` (:func:`~scl_lle.train.terms.semantic_brightness_loss`);
    ``grey_distance``: ``"pixel"`` or ``"sorted"`` (:func:`~scl_lle.train.terms.grey_distance`); the others are
    the arguments of the terms of the same name (:data:`TERMS`); ``num_classes`` (``None``: the segmenter's, else
    ``void_index + 1``) and ``pseudo_labels`` (used by the trainer) are documented in the config.
    """

    weights: LossWeights = field(default_factory=LossWeights)
    semantic_variant: SemanticVariant = _LOSS["semantic_variant"]
    segmentation_detach: bool = _LOSS["segmentation_detach"]
    contrastive_margin: float = _LOSS["contrastive_margin"]
    grey_distance: GreyDistance = _LOSS["grey_distance"]
    texture_margin: float = _LOSS["texture_margin"]
    exposure_patch: int = _LOSS["exposure_patch"]
    exposure_target: float = _LOSS["exposure_target"]
    keep_above: float = _LOSS["keep_above"]
    tone_target: float = _LOSS["tone_target"]
    num_classes: int | None = _LOSS["num_classes"]
    pseudo_labels: bool = _LOSS["pseudo_labels"]

    def __post_init__(self) -> None:
        if self.semantic_variant not in ("class", "upstream"):
            raise ValueError(f"semantic_variant must be 'class' or 'upstream', got {self.semantic_variant!r}")
        if self.grey_distance not in ("pixel", "sorted"):
            raise ValueError(f"grey_distance must be 'pixel' or 'sorted', got {self.grey_distance!r}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> LossSettings:
        """From a config's ``loss`` mapping (keys left out take their defaults)."""
        weights = dict(section.get("weights", {}))
        known = {f.name for f in dataclasses.fields(LossWeights)}
        if unknown := set(weights) - known:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(known)}")
        return cls(weights=LossWeights(**weights), **{k: v for k, v in section.items() if k != "weights"})


class SCLObjective(nn.Module):
    """The SCL-LLE training loss: the weighted sum of the terms of :data:`TERMS`.

    Args:
        settings: the ``loss`` settings (:class:`LossSettings`), or only their weights (:class:`LossWeights`);
            ``None``: the defaults.
        vgg: VGG16 features, needed when ``texture`` or ``feature`` is weighted; must provide
            ``texture_layers`` / ``feature_layer``.
        segmenter: frozen segmenter, needed when ``segmentation`` is weighted.
        void_index: the void class id, left out of the semantic term (``None``: none). The segmentation term
            always leaves out the segmenter's ``spec.void_index``.
        texture_layers, feature_layer: VGG16 layers of the texture and feature-preservation terms.
        **overrides: :class:`LossSettings` fields to change (``keep_above=0.1``, ``num_classes=12``, ...).

    Raises:
        ValueError: a network or ``num_classes`` needed by a weighted term is missing, or the VGG lacks a layer.
    """

    def __init__(
        self,
        settings: LossSettings | LossWeights | None = None,
        *,
        vgg: VGG16Features | None = None,
        segmenter: Segmenter | None = None,
        void_index: int | None = None,
        texture_layers: Sequence[str] = TEXTURE_LAYERS,
        feature_layer: str = "relu4_3",
        **overrides: Any,
    ) -> None:
        super().__init__()
        if not isinstance(settings, LossSettings):
            settings = LossSettings(weights=settings if settings is not None else LossWeights())
        self.settings = dataclasses.replace(settings, **overrides)
        w = self.weights
        self.texture_layers = tuple(texture_layers)
        self.feature_layer = feature_layer
        needed = [*(self.texture_layers if w.texture > 0 else ()), *((feature_layer,) if w.feature > 0 else ())]
        if needed:
            if vgg is None:
                raise ValueError("the texture and feature terms need a VGG16Features network (vgg=...)")
            missing = [layer for layer in needed if layer not in vgg.layers]
            if missing:
                raise ValueError(f"the VGG16Features network does not return layer(s) {missing}; it has {vgg.layers}")
        if w.segmentation > 0 and segmenter is None:
            raise ValueError("the segmentation term needs a Segmenter (segmenter=...)")
        num_classes = self.settings.num_classes
        if num_classes is None:
            num_classes = segmenter.num_classes if segmenter is not None else None
        if num_classes is None and void_index is not None:
            num_classes = void_index + 1
        if w.semantic > 0 and num_classes is None:
            raise ValueError("the semantic term needs num_classes (or a segmenter to take it from)")
        self.vgg = vgg if needed else None
        self.segmenter = segmenter if w.segmentation > 0 else None
        self.num_classes = num_classes
        self.void_index = void_index

    @property
    def weights(self) -> LossWeights:
        """The weights of the terms."""
        return self.settings.weights

    def extra_repr(self) -> str:
        return f"weights={self.weights}, semantic_variant={self.settings.semantic_variant!r}"

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

        inputs: dict[str, Any] = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}
        inputs.update(low=low, enhanced=enhanced, curve_maps=curve_maps, positives=positives, negatives=negatives)
        inputs.update(labels=labels, num_classes=self.num_classes, void_index=self.void_index, segmenter=self.segmenter)
        inputs.update(texture_layers=self.texture_layers, feature_layer=self.feature_layer)
        if self.vgg is not None:
            inputs["output_feats"] = self.vgg(enhanced)
            inputs |= self._reference_features(low, positives, negatives)
        terms: dict[str, Tensor] = {}
        for name, term in TERMS.items():
            if getattr(w, name) > 0:
                extra = {"labelled": labelled} if term.labelled else {}
                terms[name] = term.function(*(inputs[key] for key in term.inputs), **extra)

        total = enhanced.new_zeros(())
        for name, value in terms.items():
            total = total + getattr(w, name) * value
        return total, {name: value.detach() for name, value in terms.items()}

    @torch.no_grad()
    def _reference_features(
        self, low: Tensor, positives: Tensor | None, negatives: Tensor | None
    ) -> dict[str, dict[str, Tensor]]:
        """VGG features (no grad) of the inputs (feature term) and of the pools (texture term), in one pass:
        ``{"input_feats": ..., "positive_feats": ..., "negative_feats": ...}`` as the weighted terms need."""
        assert self.vgg is not None
        parts: dict[str, Tensor] = {}
        if self.weights.feature > 0:
            parts["input_feats"] = low
        if self.weights.texture > 0:
            assert positives is not None and negatives is not None
            parts["positive_feats"] = positives
            parts["negative_feats"] = negatives
        sizes = {tuple(x.shape[-2:]) for x in parts.values()}
        if len(sizes) == 1:
            feats = self.vgg(torch.cat(list(parts.values()), 0).to(low.dtype))
            chunks = [x.shape[0] for x in parts.values()]
            split = {layer: f.split(chunks, 0) for layer, f in feats.items()}
            return {name: {layer: split[layer][i] for layer in feats} for i, name in enumerate(parts)}
        return {name: self.vgg(x) for name, x in parts.items()}
