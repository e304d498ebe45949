"""Synthetic low light: darkening normal-light images with exposure, gamma and sensor noise, batched in torch.

:func:`darken` applies fixed (or per-image) settings (the evaluation's darkened CamVid uses it);
:class:`LowLightSynthesis` draws the settings per image from ranges (the training data's, ``data.synthesis``
in the config) and applies :func:`darken`. :func:`poisson_gaussian_noise` is the sensor noise model. Images are
``(B, 3, H, W)`` float in [0, 1] on any device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LowLightSynthesis", "darken", "poisson_gaussian_noise"]

_GAMMA = 2.2  # a plain 2.2 gamma stands in for the sRGB curve


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """``generator`` itself when it lives on ``device``, else a ``device`` generator seeded from it."""
    if generator is None:
        return None
    if generator.device.type == device.type and (
        device.type == "cpu" or generator.device.index in (None, device.index)
    ):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)


def _param(value: float | torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor | float, bool, bool]:
    """A per-image parameter as a float or a ``(B, 1, 1, 1)`` tensor on the images' device, whether any value
    is nonzero, and whether any differs from 1 (both checked where the value lives, normally the CPU)."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1)
        nonzero, non_one = bool((flat != 0).any()), bool((flat != 1).any())
        if value.numel() == 1:
            return float(flat[0]), nonzero, non_one
        if images.ndim != 4 or value.numel() != images.shape[0]:
            raise ValueError(f"per-image parameter of {value.numel()} values for images {tuple(images.shape)}")
        return value.to(device=images.device, dtype=images.dtype).reshape(-1, 1, 1, 1), nonzero, non_one
    return float(value), value != 0, value != 1


def poisson_gaussian_noise(
    linear: torch.Tensor,
    shot: float | torch.Tensor,
    read: float | torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Heteroscedastic sensor noise on linear intensities: ``z = a * Poisson(x / a) + N(0, b^2)``.

    ``a`` = ``shot`` (the gain: one photon count is ``a`` in linear units, so ``Var = a * x + b^2``; 0 = no shot
    noise), ``b`` = ``read`` (read-noise std; 0 = none). ``shot``/``read`` are floats or per-image ``(B,)``
    tensors. Not clamped. ``generator`` may live on another device (a device generator is derived from it).
    """
    a, shot_on, _ = _param(shot, linear)
    b, read_on, _ = _param(read, linear)
    generator = _device_generator(generator, linear.device)
    out = linear
    if shot_on:
        if isinstance(a, torch.Tensor):
            safe = torch.where(a > 0, a, torch.ones_like(a))
            counts = torch.poisson(linear.clamp(min=0) / safe, generator=generator)
            out = torch.where(a > 0, counts * safe, linear)
        else:
            out = torch.poisson(linear.clamp(min=0) / a, generator=generator) * a
    if read_on:
        noise = torch.randn(linear.shape, generator=generator, device=linear.device, dtype=linear.dtype)
        out = out + noise * b
    return out


def darken(
    images: torch.Tensor,
    exposure: float | torch.Tensor,
    gamma: float | torch.Tensor = 1.0,
    noise: tuple[float | torch.Tensor, float | torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Darken normal-light sRGB-like images with fixed (or per-image) settings; the model of
    :class:`LowLightSynthesis`:

    ``low = clamp(clamp(k * x^2.2 + n, 0, 1)^(g / 2.2), 0, 1)`` with ``k`` = ``exposure``, ``g`` = ``gamma``,
    ``n`` = Poisson-Gaussian noise (``noise = (shot, read)``, see :func:`poisson_gaussian_noise`; ``None``: off).
    Without noise and with ``g = 1`` the result is exactly ``k^(1/2.2) * x`` (e.g. ``k = 0.1`` -> x 0.351).

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)`` float in [0, 1], any device.
        exposure: linear exposure factor ``k`` (> 0), float or ``(B,)``.
        gamma: extra gamma ``g`` (> 0; > 1 darkens mid-tones further), float or ``(B,)``.
        noise: ``(shot, read)`` floats or ``(B,)`` tensors, or ``None``.
        generator: for the noise (CPU or device; ``None``: torch's global generator).

    Returns:
        Same shape, float in [0, 1].
    """
    k, _, _ = _param(exposure, images)
    g, _, gamma_on = _param(gamma, images)
    x = images.clamp(0, 1)
    if noise is None:  # (min(k x^2.2, 1))^(g/2.2) = min(k^(g/2.2) x^g, 1): one power instead of three
        scale = k ** (g / _GAMMA) if gamma_on else k ** (1.0 / _GAMMA)
        out = (x.pow(g) if gamma_on else x) * scale
    else:
        linear = poisson_gaussian_noise(x.pow(_GAMMA) * k, noise[0], noise[1], generator)
        out = linear.clamp_(0, 1).pow(g / _GAMMA if gamma_on else 1.0 / _GAMMA)
    return out.clamp_(0, 1)


def _range(name: str, value: Any, *, positive: bool) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"synthesis {name} must be a number or a [lo, hi] pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (lo <= 0 if positive else lo < 0):
        bound = "0 < lo <= hi" if positive else "0 <= lo <= hi"
        raise ValueError(f"synthesis {name} must satisfy {bound}, got [{lo}, {hi}]")
    return lo, hi


@dataclass
class LowLightSynthesis:
    """Synthetic low light from normal-light images, batched on the images' device.

    Model, per image (random parameters drawn independently per image from the generator):

    1. linearise: ``L = x ** 2.2`` (a plain 2.2 gamma stands in for the sRGB curve);
    2. expose: ``L = k * L`` with ``k`` log-uniform in ``exposure`` (default [0.03, 0.3], i.e. -5 to -1.7 EV);
    3. sensor noise in the linear domain (optional): ``L = a * Poisson(L / a) + N(0, b^2)`` with the gain ``a``
       uniform in ``shot_noise`` and the read-noise std ``b`` uniform in ``read_noise`` (``[0, 0]`` = off),
       then clamp to [0, 1];
    4. back to sRGB-like: ``y = L ** (1 / 2.2)``, then an extra gamma ``y = y ** g`` with ``g`` uniform in
       ``gamma`` (default [1.0, 1.3]); clamp to [0, 1].

    Without noise, ``y = (k^(1/2.2) * x) ** g``: mean brightness falls by about ``k^(1/2.2)`` (0.20 .. 0.58 for
    the default exposures). Fixed settings (e.g. the evaluation's darkened CamVid): :func:`darken`.
    """

    exposure: tuple[float, float] = (0.03, 0.3)
    gamma: tuple[float, float] = (1.0, 1.3)
    shot_noise: tuple[float, float] = (0.0, 0.0)
    read_noise: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.exposure = _range("exposure", self.exposure, positive=True)
        self.gamma = _range("gamma", self.gamma, positive=True)
        self.shot_noise = _range("shot_noise", self.shot_noise, positive=False)
        self.read_noise = _range("read_noise", self.read_noise, positive=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> LowLightSynthesis:
        """From a ``synthesis:`` config mapping (keys exposure, gamma, shot_noise, read_noise; all optional)."""
        cfg = dict(cfg or {})
        if unknown := set(cfg) - {"exposure", "gamma", "shot_noise", "read_noise"}:
            raise ValueError(f"unknown synthesis keys: {', '.join(sorted(unknown))}")
        return cls(**cfg)

    @property
    def noisy(self) -> bool:
        """Whether any noise is added."""
        return self.shot_noise[1] > 0 or self.read_noise[1] > 0

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` images: ``(n,)`` float32 tensors on the generator's device."""
        u = torch.rand(4, n, generator=generator, dtype=torch.float64)
        (e_lo, e_hi), (g_lo, g_hi) = self.exposure, self.gamma
        (s_lo, s_hi), (r_lo, r_hi) = self.shot_noise, self.read_noise
        return {
            "exposure": torch.exp(math.log(e_lo) + u[0] * (math.log(e_hi) - math.log(e_lo))).float(),
            "gamma": (g_lo + u[1] * (g_hi - g_lo)).float(),
            "shot_noise": (s_lo + u[2] * (s_hi - s_lo)).float(),
            "read_noise": (r_lo + u[3] * (r_hi - r_lo)).float(),
        }

    def __call__(self, images: torch.Tensor, generator: torch.Generator | int) -> torch.Tensor:
        """Darken ``(B, 3, H, W)`` float images in [0, 1] (any device) with parameters drawn from ``generator``
        (a CPU ``torch.Generator``, or an int seed); returns the same shape in [0, 1] on the same device."""
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        if images.ndim != 4:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        p = self.draw(images.shape[0], generator)
        noise = (p["shot_noise"], p["read_noise"]) if self.noisy else None
        return darken(images, p["exposure"], p["gamma"], noise=noise, generator=generator)
