"""Analytic dynamic sphere fields for the mesh export tests: the iso-surface σ = AMPLITUDE/2 is exactly the sphere."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from animate124.types import FieldOutput

AMPLITUDE = 20.0
ISO = AMPLITUDE / 2


class SphereField(nn.Module):
    """σ = A·sigmoid((r(τ) − |x − c(τ)|)/s), albedo = 0.5 + 0.45·(x − c(τ))/r(τ) (so colours vary over the surface)."""

    is_dynamic = True

    def __init__(self, centre: Callable[[float], list[float]], radius: Callable[[float], float], softness: float = 0.05,
                 extra: tuple[list[float], float] | None = None):
        super().__init__()
        self.centre, self.radius, self.softness, self.extra = centre, radius, softness, extra

    def _c_r(self, t: Tensor | None, x: Tensor) -> tuple[Tensor, Tensor]:
        tau = t if t is not None else torch.zeros(x.shape[0], device=x.device)
        if tau.numel() and bool(tau.min() == tau.max()):  # one τ (the exporters' case)
            c = torch.tensor(self.centre(float(tau[0])), dtype=x.dtype, device=x.device)
            return c.expand(x.shape[0], 3), torch.full((x.shape[0],), float(self.radius(float(tau[0]))), dtype=x.dtype)
        values, inv = torch.unique(tau, return_inverse=True)
        c = torch.tensor([self.centre(float(v)) for v in values], dtype=x.dtype, device=x.device)
        r = torch.tensor([self.radius(float(v)) for v in values], dtype=x.dtype, device=x.device)
        return c[inv], r[inv]

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        c, r = self._c_r(t, x)
        sigma = AMPLITUDE * torch.sigmoid((r - (x - c).norm(dim=-1)) / self.softness)
        if self.extra is not None:  # a small floater
            ec, er = self.extra
            d = (x - torch.tensor(ec, dtype=x.dtype, device=x.device)).norm(dim=-1)
            sigma = sigma + AMPLITUDE * torch.sigmoid((er - d) / self.softness)
        return sigma

    def forward(self, x: Tensor, t: Tensor | None = None) -> FieldOutput:
        c, r = self._c_r(t, x)
        return FieldOutput(self.density(x, t), (0.5 + 0.45 * (x - c) / r[:, None]).clamp(0, 1))


def translating() -> SphereField:
    return SphereField(lambda t: [-0.2 + 0.4 * t, 0.1 * t, 0.15 * t - 0.05], lambda t: 0.35)


def growing() -> SphereField:
    return SphereField(lambda t: [0.05, -0.05, 0.1], lambda t: 0.2 + 0.2 * t)


def sphere_volume(r: float) -> float:
    return 4.0 / 3.0 * math.pi * r**3
