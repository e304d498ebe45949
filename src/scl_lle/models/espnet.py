"""ESPNet semantic segmentation network (Mehta et al., ECCV 2018): the bare network, as the authors laid it out.

The network here is the full "ESPNet" model (the ESPNet-C encoder plus the light decoder) with the layer names of the
authors' implementation, so their state dicts (``espnet_p2_q8_cityscapes.pth``, ``espnet_p2_q8_camvid.pth``) load
strictly. :class:`ESPNet` maps a normalised BGR input ``(B, 3, H, W)`` to logits ``(B, C, H, W)``; the pretrained
variants, the frozen RGB wrapper used by the losses and the loading are in :mod:`scl_lle.models.segmenter`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ESPNet"]

_BN_EPS = 1e-3

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
