"""DCE-Net: the curve-estimation network of SCL-LLE (same layout as Zero-DCE).

The network predicts ``iterations`` per-pixel, per-channel curve maps ``r`` in [-1, 1]; each is applied in
turn as the quadratic light-enhancement curve ``x <- x + r * (x^2 - x)``, which maps [0, 1] onto [0, 1]
(the curve functions are in :mod:`scl_lle.core.curves`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.curves import apply_curves, downsample, upsample_maps

__all__ = ["RECEPTIVE_RADIUS", "DCENet"]

#: Pixels of context on each side that one output pixel depends on (7 stacked 3x3 convs: a 15x15 field).
RECEPTIVE_RADIUS = 7


class DCENet(nn.Module):
    """The SCL-LLE / Zero-DCE curve-estimation network (7 convs, 32 channels, 79,416 parameters).

    State-dict keys are ``e_conv1`` .. ``e_conv7`` so the released SCL-LLE and Zero-DCE checkpoints load unchanged.
    Skip connections: conv5 sees cat(x3, x4), conv6 cat(x2, x5), conv7 cat(x1, x6); ReLU after 1-6, tanh after 7.
    """

    def __init__(self, channels: int = 32, iterations: int = 8) -> None:
        super().__init__()
        self.channels = channels
        self.iterations = iterations
        c = channels
        self.e_conv1 = nn.Conv2d(3, c, 3, padding=1)
        self.e_conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.e_conv3 = nn.Conv2d(c, c, 3, padding=1)
        self.e_conv4 = nn.Conv2d(c, c, 3, padding=1)
        self.e_conv5 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.e_conv6 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.e_conv7 = nn.Conv2d(2 * c, 3 * iterations, 3, padding=1)

    def curve_maps(self, image: torch.Tensor) -> torch.Tensor:
        """Estimate the curve maps: ``(B, 3, H, W)`` in [0, 1] → ``(B, 3 * iterations, H, W)`` in [-1, 1].

        Activations are dropped as soon as the skips no longer need them and ReLU works in place (a
        convolution's backward does not need its output), so at most five 32-channel planes are alive at once.
        """
        x1 = F.relu(self.e_conv1(image), inplace=True)
        x2 = F.relu(self.e_conv2(x1), inplace=True)
        x3 = F.relu(self.e_conv3(x2), inplace=True)
        x4 = F.relu(self.e_conv4(x3), inplace=True)
        x5 = F.relu(self.e_conv5(torch.cat((x3, x4), 1)), inplace=True)
        del x3, x4
        x6 = F.relu(self.e_conv6(torch.cat((x2, x5), 1)), inplace=True)
        del x2, x5
        return torch.tanh(self.e_conv7(torch.cat((x1, x6), 1)))

    def forward_with_maps(self, image: torch.Tensor, scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Enhance and also return the curve maps used (at full resolution); for training losses.

        Args:
            image: ``(B, 3, H, W)`` in [0, 1].
            scale: estimate the maps on the image shrunk by this factor, then upsample them (Zero-DCE++ style).

        Returns:
            ``(enhanced (B, 3, H, W) in [0, 1], curve maps (B, 3 * iterations, H, W) in [-1, 1])``.
        """
        if scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale}")
        maps = self.curve_maps(downsample(image, scale))
        if scale > 1:
            maps = upsample_maps(maps, image.shape[-2:])
        return apply_curves(image, maps), maps

    def forward(self, image: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """Enhance ``(B, 3, H, W)`` in [0, 1] → ``(B, 3, H, W)`` in [0, 1]."""
        return self.forward_with_maps(image, scale)[0]
