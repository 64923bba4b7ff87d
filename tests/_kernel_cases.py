"""Shared inputs of the kernel-vs-reference tests (tests/test_cuda_kernels.py, tests/test_cuda_host_logic.py).

Every builder is deterministic given ``seed`` and returns CPU tensors; callers move them to the device they test.
"""

from __future__ import annotations

import math

import torch

from animate124.ops import _reference as ref

BOX = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
DT = 2 * math.sqrt(3) / 1024
"""The original's step (spec §5.3)."""


def rays(n: int, seed: int, miss_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """[n,3] origins on a sphere of radius 2.5 looking roughly at the origin (some deliberately miss) + unit dirs."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = 2.5 * o / o.norm(dim=-1, keepdim=True)
    target = 0.6 * torch.randn(n, 3, generator=g)
    n_miss = int(n * miss_fraction)
    target[:n_miss] = 4.0 * torch.sign(torch.randn(n_miss, 3, generator=g))  # aim far off the box
    d = target - o
    d = d / d.norm(dim=-1, keepdim=True)
    return o, d


def density_grid(slots: int, res: int, seed: int, kind: str = "sphere") -> torch.Tensor:
    """[slots, res³] Morton-ordered densities: a sphere of slot-dependent radius plus sparse random cells."""
    g = torch.Generator().manual_seed(seed)
    cells = ref.morton3d_invert(torch.arange(res ** 3))
    centre = (cells.float() + 0.5) / res * 2 - 1
    r = centre.norm(dim=-1)
    out = []
    for s in range(slots):
        radius = 0.4 + 0.4 * s / max(slots - 1, 1)
        dens = (r < radius).float() * 20.0
        if kind == "empty":
            dens = torch.zeros_like(dens)
        elif kind == "full":
            dens = torch.full_like(dens, 20.0)
        else:
            dens = torch.maximum(dens, (torch.rand(res ** 3, generator=g) < 0.05).float() * 15.0)
        out.append(dens)
    return torch.stack(out)


def march_inputs(n: int, slots: int, res: int, seed: int, kind: str = "sphere") -> dict:
    """Keyword arguments of ``march_rays_train`` (without bound/grid_res/dt/max_steps)."""
    o, d = rays(n, seed)
    nears, fars = ref.near_far_from_aabb(o, d, torch.tensor(BOX), 0.2)
    g = torch.Generator().manual_seed(seed + 1)
    bits = ref.packbits(density_grid(slots, res, seed, kind), 10.0)
    return dict(rays_o=o, rays_d=d, nears=nears, fars=fars, bitfield=bits,
                slots=torch.randint(0, slots, (n,), generator=g), noise=torch.rand(n, generator=g))


def composite_inputs(n_rays: int, max_count: int, channels: int, seed: int,
                     sigma_scale: float = 30.0) -> tuple[torch.Tensor, ...]:
    """Random packed samples: (sigmas [M], rgbs [M,C], ts [M,2], rays [N,2] int32) with gaps between rays."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_count + 1, (n_rays,), generator=g)
    gaps = torch.randint(0, 3, (n_rays,), generator=g)
    offsets = torch.cumsum(counts + gaps, 0) - counts  # ray i starts after its own gap
    m = int((offsets + counts).max()) if n_rays else 0
    sigmas = torch.rand(m, generator=g) * sigma_scale
    rgbs = torch.rand(m, channels, generator=g)
    dt = torch.full((m,), DT)
    t = torch.cumsum(dt, 0) + 0.5
    rays_ = torch.stack([offsets, counts], -1).to(torch.int32)
    return sigmas, rgbs, torch.stack([t, dt], -1), rays_


def grid_inputs(kind: str, dims: int, keyframes: int, n: int, seed: int, features: int = 2,
                levels: int = 6, log2_table: int = 12) -> dict:
    """Arguments of ``grid_encode``: a small multiresolution layout with dense, wrapped and hashed levels."""
    from animate124.ops.hashgrid import grid_layout

    g = torch.Generator().manual_seed(seed)
    offsets, res = grid_layout(kind, levels, 4, 96, log2_table, dims)
    emb = torch.rand(keyframes, int(offsets[-1]), features, generator=g) * 2 - 1
    x = torch.rand(n, dims, generator=g)
    x[:4] = torch.tensor([0.0, 1.0, 0.5, 1.0 - 1e-7])[:, None].expand(4, dims)  # corners and the upper boundary
    t = torch.rand(n, generator=g)
    t[:3] = torch.tensor([0.0, 1.0, 0.5])
    return dict(x=x, embeddings=emb, offsets=offsets, resolutions=res, kind=kind, t=t if keyframes > 1 else None)
