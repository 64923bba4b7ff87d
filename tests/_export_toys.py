"""Toy analytic fields and scenes for the export / instances / metrics tests (no training, no fields package)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from animate124.config.schema import RenderConfig
from animate124.render.occupancy import OccupancyGrid
from animate124.types import FieldOutput


class BlobField(nn.Module):
    """Gaussian density blobs moving along +z with τ: σ(x, τ) = Σ_k a·exp(−|x − c_k − (0, 0, m·τ)|² / (2 r²)),
    albedo = density-weighted blob colours. ``is_dynamic`` True, bound 1."""

    is_dynamic = True
    bound = 1.0

    def __init__(self, centres, colours, radius: float = 0.25, amplitude: float = 40.0, motion: float = 0.3):
        super().__init__()
        self.register_buffer("centres", torch.as_tensor(centres, dtype=torch.float32))
        self.register_buffer("colours", torch.as_tensor(colours, dtype=torch.float32))
        self.radius, self.amplitude, self.motion = radius, amplitude, motion

    def _blobs(self, x: Tensor, t: Tensor | None) -> Tensor:
        shift = torch.zeros_like(x)
        if t is not None:
            shift[:, 2] = self.motion * t
        d2 = ((x[:, None, :] - shift[:, None, :] - self.centres[None]) ** 2).sum(-1)  # [N, K]
        return self.amplitude * torch.exp(-d2 / (2 * self.radius**2))

    def forward(self, x: Tensor, t: Tensor | None = None) -> FieldOutput:
        b = self._blobs(x, t)
        dens = b.sum(-1)
        albedo = (b[..., None] * self.colours[None]).sum(1) / dens.clamp_min(1e-8)[:, None]
        return FieldOutput(density=dens, albedo=albedo)

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return self._blobs(x, t).sum(-1)

    def normals(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """Analytic −∇σ/|∇σ|: ∇σ = Σ_k b_k·(−(x − c_k(τ))/r²)."""
        shift = torch.zeros_like(x)
        if t is not None:
            shift[:, 2] = self.motion * t
        rel = x[:, None, :] - shift[:, None, :] - self.centres[None]  # [N, K, 3]
        grad = (self._blobs(x, t)[..., None] * (-rel / self.radius**2)).sum(1)
        return -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def full_occupancy(slots: int = 4, resolution: int = 16) -> OccupancyGrid:
    """An occupancy grid with every cell occupied (its default bitfield is all ones)."""
    return OccupancyGrid(resolution, slots, 1.0)


def fast_render_cfg(max_steps: int = 128, chunk_rays: int = 4096) -> RenderConfig:
    return RenderConfig(grid_resolution=16, max_steps=max_steps, chunk_rays=chunk_rays)


def toy_field() -> BlobField:
    """One red blob at the origin and a green one above it, off the z axis (so a turntable changes the image)."""
    return BlobField([[0.0, 0.0, -0.1], [0.0, 0.3, 0.35]], [[0.9, 0.1, 0.1], [0.1, 0.8, 0.2]], radius=0.18)
