"""The frozen segmentation guide of SCL-LLE's semantic losses: pretrained ESPNet variants, wrapper and loading.

- :class:`SegmenterSpec` and :data:`SEGMENTERS` -- the known pretrained variants by name, with their class names
  (:data:`CAMVID_CLASSES`, :data:`CITYSCAPES_CLASSES`), void index and input statistics.
- :class:`Segmenter` -- a frozen, differentiable wrapper around :class:`~scl_lle.models.espnet.ESPNet` taking RGB
  ``(B, 3, H, W)`` in [0, 1] and returning logits ``(B, C, H, W)``.
- :func:`load_segmenter` -- build a :class:`Segmenter` from a name and a weights file (read by
  :func:`scl_lle.models.hub.load_state_dict`, then checked key by key against the variant).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .espnet import ESPNet
from .hub import WeightsError, load_state_dict

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_VOID_INDEX",
    "CITYSCAPES_CLASSES",
    "SEGMENTERS",
    "Segmenter",
    "SegmenterSpec",
    "SegmenterWeightsError",
    "load_segmenter",
]

WEIGHTS_HINT = (
    "ESPNet (p=2, q=8) weights are not shipped with scl-lle. The Cityscapes model is the ESPNet "
    "authors' released decoder model (github.com/sacmehta/ESPNet, MIT licence, "
    "pretrained/decoder/espnet_p_2_q_8.pth); "
    "in the project's shared data folder both variants are at "
    "weights/segmentation/espnet_p2_q8_{cityscapes,camvid}.pth (see weights/README.md there)."
)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmenterSpec:
    """A pretrained ESPNet variant.

    Attributes:
        name: registry name.
        num_classes: number of logit channels (including the void/background class).
        void_index: index of the void/background class (left out of losses and scores: the ``ignore_index``).
        class_names: ``num_classes`` names, in logit order.
        mean_bgr, std_bgr: per-channel (B, G, R) statistics on the 0..255 scale.
        native_hw: (height, width) the model is meant to run at.
        decoder_level1_channels: see :class:`ESPNet`.
        weights_filename: the file name the weights are usually stored under.
        p, q: ESP block counts of levels 2 and 3.
    """

    name: str
    num_classes: int
    void_index: int
    class_names: tuple[str, ...]
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]
    native_hw: tuple[int, int]
    decoder_level1_channels: int
    weights_filename: str
    p: int = 2
    q: int = 8

    def build(self) -> ESPNet:
        """A randomly initialised :class:`ESPNet` with this variant's layout."""
        return ESPNet(self.num_classes, self.p, self.q, self.decoder_level1_channels)


#: The 19 Cityscapes train ids (0 road .. 18 bicycle) and background/void, index 19, in logit order.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle", "background",
)  # fmt: skip

#: CamVid's 11 classes in label order (the SegNet convention of ``seg_CamVid_SegNet_subset``: 0 sky .. 10
#: bicyclist; "sign symbol" is SegNet's SignSymbol) and void (Unlabelled) at :data:`CAMVID_VOID_INDEX`, in the
#: logit order of the CamVid ESPNet. The 11 real classes are ``CAMVID_CLASSES[:CAMVID_VOID_INDEX]``.
CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian",
    "bicyclist", "void",
)  # fmt: skip
#: The label (and logit) index of CamVid's void class.
CAMVID_VOID_INDEX = 11

SEGMENTERS: dict[str, SegmenterSpec] = {
    "espnet-cityscapes": SegmenterSpec(
        name="espnet-cityscapes",
        num_classes=len(CITYSCAPES_CLASSES),
        void_index=len(CITYSCAPES_CLASSES) - 1,
        class_names=CITYSCAPES_CLASSES,
        mean_bgr=(72.3923, 82.9089, 73.1584),
        std_bgr=(45.3192, 46.1529, 44.9148),
        native_hw=(512, 1024),
        decoder_level1_channels=16,
        weights_filename="espnet_p2_q8_cityscapes.pth",
    ),
    "espnet-camvid": SegmenterSpec(
        name="espnet-camvid",
        num_classes=len(CAMVID_CLASSES),
        void_index=CAMVID_VOID_INDEX,
        class_names=CAMVID_CLASSES,
        mean_bgr=(96.2715, 93.9255, 88.6756),
        std_bgr=(67.4584, 67.0997, 62.8423),
        native_hw=(360, 480),
        decoder_level1_channels=19,
        weights_filename="espnet_p2_q8_camvid.pth",
    ),
}


# --------------------------------------------------------------------------------------------------
# Wrapper
# --------------------------------------------------------------------------------------------------


class Segmenter(nn.Module):
    """A frozen ESPNet that takes the enhancer's RGB output and stays differentiable w.r.t. it.

    Preprocessing (the ESPNet authors' convention, done on the tensor so gradients flow to the image):
    RGB -> BGR, x255, subtract ``mean_bgr``, divide by ``std_bgr``, divide by 255.

    Sizes: inputs whose height or width is not a multiple of 8 are padded at the bottom/right by edge
    replication up to the next multiple of 8 and the logits are cropped back. Padding (rather than
    resizing) keeps the image scale and the pixel grid unchanged, so logits align exactly with the input
    and with per-pixel labels; at most 7 rows/columns are added. The input is NOT resized to the model's
    native size (``spec.native_hw``); callers that want that resize themselves.

    The network is always in eval mode (BatchNorm uses running statistics, even when a parent module is
    put in training mode) and its parameters have ``requires_grad=False``.
    """

    def __init__(self, net: ESPNet, spec: SegmenterSpec) -> None:
        super().__init__()
        if net.num_classes != spec.num_classes:
            raise ValueError(f"network has {net.num_classes} classes, spec {spec.name!r} {spec.num_classes}")
        self.spec = spec
        self.net = net
        mean = torch.tensor(spec.mean_bgr, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std_bgr, dtype=torch.float32).view(1, 3, 1, 1)
        # (bgr*255 - mean) / std / 255 == bgr * scale + shift
        self.register_buffer("_scale", 1.0 / std, persistent=False)
        self.register_buffer("_shift", -mean / (std * 255.0), persistent=False)
        self.net.requires_grad_(False)
        self.train(False)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def train(self, mode: bool = True) -> Segmenter:
        """Keeps the wrapped network in eval mode whatever ``mode`` is (it is a frozen loss network)."""
        super().train(mode)
        self.net.eval()
        return self

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB ``(B, 3, H, W)`` in ``[0, 1]`` -> normalised BGR ``(B, 3, H, W)`` as the network expects."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected an RGB tensor of shape (B, 3, H, W), got {tuple(rgb.shape)}")
        bgr = rgb.flip(1)
        return bgr * self._scale.to(rgb.dtype) + self._shift.to(rgb.dtype)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB ``(B, 3, H, W)`` float in ``[0, 1]`` (any ``H``, ``W``) -> logits ``(B, C, H, W)``.

        Differentiable with respect to ``rgb``.
        """
        x = self.normalize(rgb)
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % 8, -w % 8
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logits = self.net(x)
        return logits[..., :h, :w]

    @torch.no_grad()
    def predict(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB ``(B, 3, H, W)`` in ``[0, 1]`` -> class labels ``(B, H, W)`` int64 (argmax of the logits)."""
        return self.forward(rgb).argmax(1)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


class SegmenterWeightsError(WeightsError):
    """The weights file cannot be read or does not match the requested ESPNet variant."""


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ESPNet state dict in ``path`` (:func:`~scl_lle.models.hub.load_state_dict`), without the BatchNorm
    ``num_batches_tracked`` counters (the authors' files predate them; this ESPNet has none)."""
    try:
        state = load_state_dict(path)
    except WeightsError as error:
        raise SegmenterWeightsError(f"cannot read ESPNet weights: {error}\n{WEIGHTS_HINT}") from None
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _check_state_dict(net: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or wrong):
        return

    def _few(items: list[str]) -> str:
        more = f", ... ({len(items) - 5} more)" if len(items) > 5 else ""
        return ", ".join(items[:5]) + more

    lines = [f"ESPNet weights {path} do not match segmenter {name!r}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_few(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_few(unexpected)}")
    if wrong:
        lines.append(f"  shape mismatches ({len(wrong)}): {_few(wrong)}")
    others = [s.name for s in SEGMENTERS.values() if s.name != name]
    lines.append(f"Is this the right file for {name!r} (other variants: {', '.join(others)})?")
    lines.append(WEIGHTS_HINT)
    raise SegmenterWeightsError("\n".join(lines))


def load_segmenter(name: str, weights: str | os.PathLike[str], device: str | torch.device = "cpu") -> Segmenter:
    """Build the registered ESPNet variant ``name`` and load its weights from the file ``weights``.

    Returns a frozen :class:`Segmenter` (eval mode, ``requires_grad=False``) on ``device``.

    Raises:
        KeyError: ``name`` is not in :data:`SEGMENTERS`.
        FileNotFoundError: ``weights`` does not exist.
        SegmenterWeightsError: the file cannot be read or its keys/shapes do not match the variant.
    """
    if name not in SEGMENTERS:
        raise KeyError(f"unknown segmenter {name!r}; known: {', '.join(SEGMENTERS)}")
    spec = SEGMENTERS[name]
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ESPNet weights for {name!r} not found: {path} (expected a file like {spec.weights_filename})\n"
            f"{WEIGHTS_HINT}"
        )
    state = _read_state_dict(path)
    net = spec.build()
    _check_state_dict(net, state, path, name)
    net.load_state_dict(state, strict=True)
    return Segmenter(net, spec).to(device)
