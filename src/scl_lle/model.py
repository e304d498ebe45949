"""DCE-Net: the curve-estimation network of SCL-LLE (same layout as Zero-DCE) and its curve functions.

The network predicts ``iterations`` per-pixel, per-channel curve maps ``r`` in [-1, 1]; each is applied in
turn as the quadratic light-enhancement curve ``x <- x + r * (x^2 - x)``, which maps [0, 1] onto [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "RECEPTIVE_RADIUS",
    "DCENet",
    "apply_curves",
    "downsample",
    "upsample_maps",
]

#: Pixels of context on each side that one output pixel depends on (7 stacked 3x3 convs: a 15x15 field).
RECEPTIVE_RADIUS = 7


def apply_curves(image: torch.Tensor, curve_maps: torch.Tensor) -> torch.Tensor:
    """Apply the light-enhancement curves in order.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].
        curve_maps: ``(B, 3 * n, H, W)`` in [-1, 1]: ``n`` curve maps of 3 channels, applied first to last.

    Returns:
        ``(B, 3, H, W)`` in [0, 1], the same dtype as ``image``.
    """
    if curve_maps.shape[1] % 3 or curve_maps.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"curve maps of shape {tuple(curve_maps.shape)} do not fit an image of shape {tuple(image.shape)}"
        )
    x = image
    for r in torch.split(curve_maps, 3, dim=1):
        x = x + r * (x * x - x)
    return x


def downsample(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Shrink ``(B, C, H, W)`` by ``scale`` (area average) to ``(B, C, ceil(H/scale), ceil(W/scale))``."""
    if scale == 1:
        return image
    h, w = image.shape[-2:]
    size = (-(-h // scale), -(-w // scale))
    return F.interpolate(image, size=size, mode="area")


def upsample_maps(
    maps: torch.Tensor,
    size: tuple[int, int],
    region: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Bilinearly upsample low-resolution curve maps to ``size`` (half-pixel centres, edges clamped).

    Args:
        maps: ``(B, C, h, w)`` curve maps estimated on a downscaled image.
        size: ``(H, W)``, the full resolution.
        region: ``(top, left, bottom, right)`` of the full-resolution result to produce, or ``None`` for all of
            it. Producing the whole image region by region gives the same values as producing it at once, so
            large images can be processed in tiles.

    Returns:
        ``(B, C, bottom - top, right - left)``.
    """
    height, width = size
    if region is None or region == (0, 0, height, width):
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    top, left, bottom, right = region
    # Normalised sampling positions equal to F.interpolate(align_corners=False) on the whole image.
    ys = (2 * torch.arange(top, bottom, device=maps.device, dtype=maps.dtype) + 1) / height - 1
    xs = (2 * torch.arange(left, right, device=maps.device, dtype=maps.dtype) + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((grid_x, grid_y), dim=-1).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
        """Estimate the curve maps: ``(B, 3, H, W)`` in [0, 1] → ``(B, 3 * iterations, H, W)`` in [-1, 1]."""
        x1 = F.relu(self.e_conv1(image))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat((x3, x4), 1)))
        x6 = F.relu(self.e_conv6(torch.cat((x2, x5), 1)))
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
