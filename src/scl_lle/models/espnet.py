"""ESPNet semantic segmentation (Mehta et al., ECCV 2018), used by SCL-LLE's semantic losses.

The network here is the full "ESPNet" model (the ESPNet-C encoder plus the light decoder) with the
layer names of the authors' implementation, so their state dicts (``espnet_p2_q8_cityscapes.pth``,
``espnet_p2_q8_camvid.pth``) load strictly.

Public API
----------
- :class:`ESPNet` -- the bare network: normalised BGR input ``(B, 3, H, W)`` -> logits ``(B, C, H, W)``.
- :class:`SegmenterSpec` and :data:`SEGMENTERS` -- the known pretrained variants by name.
- :class:`Segmenter` -- a frozen, differentiable wrapper taking RGB in ``[0, 1]``.
- :func:`load_segmenter` -- build a :class:`Segmenter` from a name and a weights file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SEGMENTERS",
    "ESPNet",
    "Segmenter",
    "SegmenterSpec",
    "SegmenterWeightsError",
    "load_segmenter",
]

_BN_EPS = 1e-3

WEIGHTS_HINT = (
    "ESPNet (p=2, q=8) weights are not shipped with scl-lle. The Cityscapes model is the ESPNet "
    "authors' released decoder model (github.com/sacmehta/ESPNet, MIT licence, "
    "pretrained/decoder/espnet_p_2_q_8.pth); "
    "in the project's shared data folder both variants are at "
    "weights/segmentation/espnet_p2_q8_{cityscapes,camvid}.pth (see weights/README.md there)."
)


# --------------------------------------------------------------------------------------------------
# Building blocks (names of submodules follow the authors' code so state-dict keys match)
# --------------------------------------------------------------------------------------------------


class _Conv(nn.Module):
    """Bias-free ``k x k`` convolution with "same" padding (scaled by ``dilation``)."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = (k - 1) // 2 * dilation
        self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=pad, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d (eps 1e-3) without the ``num_batches_tracked`` buffer.

    The authors' weight files predate that buffer; leaving it out makes ``state_dict()`` keys identical
    to theirs. It is only used when ``momentum`` is None, which it never is here. A ``num_batches_tracked``
    entry in a loaded state dict (files saved by newer PyTorch) is ignored.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n, eps=_BN_EPS)
        self.num_batches_tracked = None

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        # skip _NormBase's hook, which would re-insert num_batches_tracked for old files
        nn.Module._load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _BR(nn.Module):
    """BatchNorm (eps 1e-3) followed by a per-channel PReLU."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.bn = _BatchNorm2d(n)
        self.act = nn.PReLU(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class _CBR(nn.Module):
    """Bias-free convolution, BatchNorm (eps 1e-3), PReLU."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=(k - 1) // 2, bias=False)
        self.bn = _BatchNorm2d(n_out)
        self.act = nn.PReLU(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _ESPBranches(nn.Module):
    """Reduce -> split -> transform -> hierarchical feature fusion (shared by both ESP block kinds).

    ``n_out`` is split as ``n1 + 4 n`` with ``n = n_out // 5``: one dilation-1 branch of ``n1`` channels
    and dilation-2/4/8/16 branches of ``n`` channels whose outputs are summed cumulatively (HFF) before
    concatenation, which removes the gridding artefacts of large dilations.
    """

    def __init__(self, n_in: int, n_out: int, reduce_k: int, reduce_stride: int) -> None:
        super().__init__()
        n = n_out // 5
        n1 = n_out - 4 * n
        self.c1 = _Conv(n_in, n, reduce_k, stride=reduce_stride)
        self.d1 = _Conv(n, n1, 3, dilation=1)
        self.d2 = _Conv(n, n, 3, dilation=2)
        self.d4 = _Conv(n, n, 3, dilation=4)
        self.d8 = _Conv(n, n, 3, dilation=8)
        self.d16 = _Conv(n, n, 3, dilation=16)

    def _fuse(self, x: torch.Tensor) -> torch.Tensor:
        r = self.c1(x)
        add1 = self.d2(r)
        add2 = add1 + self.d4(r)
        add3 = add2 + self.d8(r)
        add4 = add3 + self.d16(r)
        return torch.cat([self.d1(r), add1, add2, add3, add4], 1)


class _ESPDown(_ESPBranches):
    """Strided ESP block (halves H and W): 3x3 stride-2 reduction, branches, BatchNorm, PReLU."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_in, n_out, reduce_k=3, reduce_stride=2)
        self.bn = _BatchNorm2d(n_out)
        self.act = nn.PReLU(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self._fuse(x)))


class _ESPBlock(_ESPBranches):
    """ESP block at constant resolution: 1x1 reduction, branches, optional residual, BatchNorm + PReLU."""

    def __init__(self, n_in: int, n_out: int, residual: bool = True) -> None:
        super().__init__(n_in, n_out, reduce_k=1, reduce_stride=1)
        self.bn = _BR(n_out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._fuse(x)
        if self.residual:
            y = y + x
        return self.bn(y)


def _avg_down(x: torch.Tensor, times: int) -> torch.Tensor:
    """Input image projection: ``times`` average pools (3x3, stride 2, padding 1, zero pad counted)."""
    for _ in range(times):
        x = F.avg_pool2d(x, 3, stride=2, padding=1)
    return x


class _Encoder(nn.Module):
    """ESPNet-C: level 1 (stride 2), level 2 (stride 4, ``p`` ESP blocks), level 3 (stride 8, ``q``)."""

    def __init__(self, num_classes: int, p: int, q: int) -> None:
        super().__init__()
        self.level1 = _CBR(3, 16, 3, stride=2)
        self.b1 = _BR(16 + 3)
        self.level2_0 = _ESPDown(16 + 3, 64)
        self.level2 = nn.ModuleList([_ESPBlock(64, 64) for _ in range(p)])
        self.b2 = _BR(128 + 3)
        self.level3_0 = _ESPDown(128 + 3, 128)
        self.level3 = nn.ModuleList([_ESPBlock(128, 128) for _ in range(q)])
        self.b3 = _BR(256)
        self.classifier = _Conv(256, num_classes, 1)


# --------------------------------------------------------------------------------------------------
# ESPNet
# --------------------------------------------------------------------------------------------------


class ESPNet(nn.Module):
    """ESPNet = ESPNet-C encoder + light decoder.

    Args:
        num_classes: number of output classes ``C`` (20 for the Cityscapes model, 12 for CamVid).
        p: number of ESP blocks at level 2 (stride 4).
        q: number of ESP blocks at level 3 (stride 8).
        decoder_level1_channels: which level-1 features the decoder concatenates before its last
            3x3 conv: ``16`` = the level-1 conv output (the authors' released Cityscapes model),
            ``19`` = those 16 channels plus the 3 pooled image channels after BatchNorm/PReLU
            (the authors' training code; the CamVid model).

    ``forward(x)``: ``x`` is a normalised BGR image ``(B, 3, H, W)`` (see :class:`Segmenter` for the
    normalisation), ``H`` and ``W`` multiples of 8; returns logits ``(B, C, H, W)``.
    """

    def __init__(self, num_classes: int, p: int = 2, q: int = 8, decoder_level1_channels: int = 19) -> None:
        super().__init__()
        if decoder_level1_channels not in (16, 19):
            raise ValueError(f"decoder_level1_channels must be 16 or 19, got {decoder_level1_channels}")
        c = num_classes
        self.num_classes = c
        self.decoder_level1_channels = decoder_level1_channels
        self.encoder = _Encoder(c, p, q)
        self.level3_C = _Conv(128 + 3, c, 1)
        self.br = _BatchNorm2d(c)
        self.conv = _CBR(decoder_level1_channels + c, c, 3)
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False))
        self.combine_l2_l3 = nn.Sequential(_BR(2 * c), _ESPBlock(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False), _BR(c))
        self.classifier = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised BGR ``(B, 3, H, W)`` -> logits ``(B, C, H, W)``; ``H``, ``W`` multiples of 8."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ESPNet expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(
                f"ESPNet needs height and width that are multiples of 8, got {h}x{w} (HxW); "
                "pad or resize the input (Segmenter does this for you)"
            )
        enc = self.encoder
        # level 1: stride 2
        l1 = enc.level1(x)
        l1_cat = enc.b1(torch.cat([l1, _avg_down(x, 1)], 1))
        # level 2: stride 4
        l2_0 = enc.level2_0(l1_cat)
        l2 = l2_0
        for block in enc.level2:
            l2 = block(l2)
        l2_cat = enc.b2(torch.cat([l2, l2_0, _avg_down(x, 2)], 1))
        # level 3: stride 8
        l3_0 = enc.level3_0(l2_cat)
        l3 = l3_0
        for block in enc.level3:
            l3 = block(l3)
        l3_cat = enc.b3(torch.cat([l3_0, l3], 1))
        # decoder
        up3 = self.up_l3(self.br(enc.classifier(l3_cat)))  # stride 4
        up2 = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_C(l2_cat), up3], 1)))  # stride 2
        skip = l1 if self.decoder_level1_channels == 16 else l1_cat
        return self.classifier(self.conv(torch.cat([up2, skip], 1)))  # stride 1


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmenterSpec:
    """A pretrained ESPNet variant.

    Attributes:
        name: registry name.
        num_classes: number of logit channels (including the void/background class).
        void_index: index of the void/background class (use as ``ignore_index`` for labels).
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


CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle", "background",
)  # fmt: skip

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian",
    "bicyclist", "void",
)  # fmt: skip

SEGMENTERS: dict[str, SegmenterSpec] = {
    "espnet-cityscapes": SegmenterSpec(
        name="espnet-cityscapes",
        num_classes=20,
        void_index=19,
        class_names=CITYSCAPES_CLASSES,
        mean_bgr=(72.3923, 82.9089, 73.1584),
        std_bgr=(45.3192, 46.1529, 44.9148),
        native_hw=(512, 1024),
        decoder_level1_channels=16,
        weights_filename="espnet_p2_q8_cityscapes.pth",
    ),
    "espnet-camvid": SegmenterSpec(
        name="espnet-camvid",
        num_classes=12,
        void_index=11,
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


class SegmenterWeightsError(ValueError):
    """The weights file cannot be read or does not match the requested ESPNet variant."""


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise SegmenterWeightsError(f"cannot read ESPNet weights {path}: {exc}\n{WEIGHTS_HINT}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SegmenterWeightsError(
            f"ESPNet weights {path} do not hold a plain state dict of tensors (got {type(obj).__name__})\n"
            f"{WEIGHTS_HINT}"
        )
    state = {k: v for k, v in obj.items() if not k.endswith("num_batches_tracked")}
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


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
