"""Pure-PyTorch twins of every public op: the CPU path and the test oracle of the CUDA kernels.

Each function has the same name and signature as the public op (``ops.raymarch``, ``ops.composite``, ``ops.grid``,
``ops.hashgrid``) and assumes already-validated inputs. Written for clarity over speed, but vectorised over rays,
samples and levels (no Python loop over them); loops only run over memory chunks or over the 3-4 input dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from animate124.types import RaySamples

FLT_MAX = torch.finfo(torch.float32).max
"""near = far = FLT_MAX marks a ray that misses the box (the original's convention)."""

HASH_PRIMES = (1, 2654435761, 805459861, 3674653429)
"""Instant-NGP / torch-ngp spatial-hash primes, one per input dimension (uint32 arithmetic)."""

_MARCH_CHUNK = 1 << 22
"""Lattice points per march chunk (~8 tensors of this length live at once: ~300 MB at most)."""
_ENCODE_CHUNK = 1 << 21
"""(points × levels × corners) per grid_encode chunk (a few int64/float tensors of this length)."""
_U32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------------- ray marching
def near_far_from_aabb(rays_o: Tensor, rays_d: Tensor, aabb: Tensor, min_near: float = 0.2) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch reference of `ops.raymarch.near_far_from_aabb`.

    Slab test with ``t = (plane - o) * (1 / d)`` per axis (the original kernel's arithmetic); NaNs from
    ``0 * inf`` (origin on a slab plane with a zero direction component) are ignored by ``fmin``/``fmax``.
    """
    inv_d = 1.0 / rays_d
    t0 = (aabb[:3] - rays_o) * inv_d
    t1 = (aabb[3:] - rays_o) * inv_d
    tmin, tmax = torch.fmin(t0, t1), torch.fmax(t0, t1)
    near = torch.fmax(torch.fmax(tmin[:, 0], tmin[:, 1]), tmin[:, 2])
    far = torch.fmin(torch.fmin(tmax[:, 0], tmax[:, 1]), tmax[:, 2])
    near = torch.clamp(near, min=min_near)
    miss = ~(far > near)  # also catches NaN (a zero direction outside the slab)
    near = torch.where(miss, torch.full_like(near, FLT_MAX), near)
    far = torch.where(miss, torch.full_like(far, FLT_MAX), far)
    return near, far


def _lattice_lengths(nears: Tensor, fars: Tensor, noise: Tensor, dt: float) -> Tensor:
    """Upper bound (exact + 2) on the number of lattice points k with t_k < far, per ray; 0 for missed rays."""
    span = (fars.double() - nears.double()) / dt - noise.double()
    n = torch.ceil(span).clamp(min=-2) + 2
    n = torch.where((nears >= FLT_MAX) | ~torch.isfinite(span), torch.zeros_like(n), n)
    return n.long()


def _bit_lookup(bitfield: Tensor, slots: Tensor, cells: Tensor) -> Tensor:
    """Occupancy bit of integer cells [P,3] in rows ``slots`` [P] of the Morton-ordered bitfield."""
    m = morton3d(cells)
    byte = bitfield[slots, m >> 3].long()
    return ((byte >> (m & 7)) & 1).bool()


def march_rays_train(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
                     noise: Tensor, bound: float, grid_res: int, dt: float, max_steps: int) -> RaySamples:
    """Pure-PyTorch reference of `ops.raymarch.march_rays_train`.

    Enumerates every lattice point of every ray (ragged, chunked over rays so at most ``_MARCH_CHUNK`` points exist
    at once), keeps those in occupied cells, and caps each ray at ``max_steps`` emitted samples. All arithmetic is
    float32 with one rounding per operation, in the order documented by the public op.
    """
    device = rays_o.device
    dt32 = torch.tensor(dt, dtype=torch.float32, device=device)
    bound32 = torch.tensor(bound, dtype=torch.float32, device=device)
    scale32 = torch.tensor(grid_res / (2.0 * bound), dtype=torch.float32, device=device)
    lengths = _lattice_lengths(nears, fars, noise, dt)
    cum = torch.cumsum(lengths, 0)
    n_rays = rays_o.shape[0]
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    counts = torch.zeros(n_rays, dtype=torch.long, device=device)
    start = 0
    while start < n_rays:
        before = int(cum[start - 1]) if start > 0 else 0
        end = int(torch.searchsorted(cum, torch.tensor(before + _MARCH_CHUNK, device=device), right=True))
        end = max(end, start + 1)
        rng = slice(start, end)
        ray_local, t, p = _chunk_lattice(rays_o[rng], rays_d[rng], nears[rng], fars[rng], noise[rng],
                                         lengths[rng], dt32, bound32)
        cells = torch.floor((p + bound32) * scale32).clamp(0, grid_res - 1).long()
        emit = (t < fars[rng][ray_local]) & _bit_lookup(bitfield, slots[rng][ray_local], cells)
        emit &= _rank_within_ray(emit, ray_local, lengths[rng]) < max_steps
        sel = emit.nonzero().squeeze(1)
        r_sel = ray_local[sel]
        counts[rng] = torch.bincount(r_sel, minlength=end - start)
        parts.append((p[sel], rays_d[rng][r_sel], t[sel], r_sel))
        start = end
    xyzs = torch.cat([q[0] for q in parts]) if parts else rays_o.new_zeros(0, 3)
    dirs = torch.cat([q[1] for q in parts]) if parts else rays_o.new_zeros(0, 3)
    t_all = torch.cat([q[2] for q in parts]) if parts else rays_o.new_zeros(0)
    ts = torch.stack([t_all, dt32.expand_as(t_all)], dim=-1)
    offsets = torch.cumsum(counts, 0) - counts
    rays = torch.stack([offsets, counts], dim=-1).to(torch.int32)
    return RaySamples(xyzs=xyzs, dirs=dirs, ts=ts, rays=rays, times=None)


def _chunk_lattice(o: Tensor, d: Tensor, near: Tensor, far: Tensor, noise: Tensor, lengths: Tensor, dt32: Tensor,
                   bound32: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ragged lattice of a chunk of rays: (ray index [P], t_k [P], clamped position [P,3])."""
    n = o.shape[0]
    ray_local = torch.repeat_interleave(torch.arange(n, device=o.device), lengths)
    first = torch.cumsum(lengths, 0) - lengths
    k = (torch.arange(ray_local.shape[0], device=o.device) - first[ray_local]).to(torch.float32)
    t = near[ray_local] + (k + noise[ray_local]) * dt32
    p = o[ray_local] + t[:, None] * d[ray_local]
    p = torch.minimum(torch.maximum(p, -bound32), bound32)
    return ray_local, t, p


def _rank_within_ray(mask: Tensor, ray_local: Tensor, lengths: Tensor) -> Tensor:
    """0-based rank of every True entry among the True entries of its ray (ragged layout, rays contiguous)."""
    cs = torch.cumsum(mask.long(), 0)
    excl = cs - mask.long()
    first = (torch.cumsum(lengths, 0) - lengths).clamp(max=max(mask.shape[0] - 1, 0))
    if mask.shape[0] == 0:
        return cs
    return excl - excl[first][ray_local]


# ------------------------------------------------------------------------------------------------------ compositing
def composite_rays_train(sigmas: Tensor, rgbs: Tensor, ts: Tensor, rays: Tensor,
                         t_thresh: float = 1e-4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pure-PyTorch reference of `ops.composite.composite_rays_train`.

    ``T_i = exp(-Σ_{j<i} σ_j·dt_j)`` (log(1-α_j) = -σ_j·dt_j exactly, so α→1 needs no clamp), from a segmented
    exclusive cumulative sum done in float64 over the ragged sample list. The contribution mask ``T_i ≥ t_thresh`` is
    not differentiated (a fixed cut-off, as in the kernel). Differentiable w.r.t. sigmas and rgbs through autograd.
    """
    n_rays = rays.shape[0]
    offsets, counts = rays[:, 0].long(), rays[:, 1].long()
    ray_id = torch.repeat_interleave(torch.arange(n_rays, device=sigmas.device), counts)
    first = torch.cumsum(counts, 0) - counts
    idx = offsets[ray_id] + torch.arange(ray_id.shape[0], device=sigmas.device) - first[ray_id]
    sd = (sigmas[idx] * ts[idx, 1]).double()
    cs = torch.cumsum(sd, 0)
    excl = cs - sd
    base = excl[first.clamp(max=max(excl.shape[0] - 1, 0))] if excl.shape[0] else excl.new_zeros(n_rays)
    trans = torch.exp(-(excl - base[ray_id])).to(sigmas.dtype)
    alpha = 1.0 - torch.exp(-sd.to(sigmas.dtype))
    keep = (trans >= t_thresh).detach()
    w = torch.where(keep, alpha * trans, torch.zeros_like(alpha))
    weights = sigmas.new_zeros(sigmas.shape[0]).index_add(0, idx, w)
    weights_sum = sigmas.new_zeros(n_rays).index_add(0, ray_id, w)
    depth = sigmas.new_zeros(n_rays).index_add(0, ray_id, w * ts[idx, 0])
    image = rgbs.new_zeros(n_rays, rgbs.shape[1]).index_add(0, ray_id, w[:, None] * rgbs[idx])
    return weights, weights_sum, depth, image


# ---------------------------------------------------------------------------------------------- occupancy grid bits
def _part1by2(v: Tensor) -> Tensor:
    v = v & 0x3FF
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    return (v | (v << 2)) & 0x09249249


def _compact1by2(v: Tensor) -> Tensor:
    v = v & 0x09249249
    v = (v | (v >> 2)) & 0x030C30C3
    v = (v | (v >> 4)) & 0x0300F00F
    v = (v | (v >> 8)) & 0x030000FF
    return (v | (v >> 16)) & 0x3FF


def morton3d(coords: Tensor) -> Tensor:
    """Pure-PyTorch reference of `ops.grid.morton3d` (x in bit 0, y in bit 1, z in bit 2 of each triple)."""
    c = coords.long()
    return _part1by2(c[:, 0]) | (_part1by2(c[:, 1]) << 1) | (_part1by2(c[:, 2]) << 2)


def morton3d_invert(idx: Tensor) -> Tensor:
    """Pure-PyTorch reference of `ops.grid.morton3d_invert`."""
    i = idx.long()
    return torch.stack([_compact1by2(i), _compact1by2(i >> 1), _compact1by2(i >> 2)], dim=-1)


def packbits(grid: Tensor, thresh: float | Tensor) -> Tensor:
    """Pure-PyTorch reference of `ops.grid.packbits`."""
    s = grid.shape[0]
    th = thresh.reshape(s, 1, 1) if isinstance(thresh, Tensor) else thresh
    bits = (grid.reshape(s, -1, 8) > th).to(torch.int32)
    weights = (1 << torch.arange(8, device=grid.device, dtype=torch.int32))
    return (bits * weights).sum(-1).to(torch.uint8)


# ------------------------------------------------------------------------------------------------- grid encodings
def _corner_bits(dims: int, device: torch.device) -> Tensor:
    """[2^D, D] 0/1 offsets of the hypercube corners (corner c has bit d of c in column d)."""
    c = torch.arange(1 << dims, device=device)
    return (c[:, None] >> torch.arange(dims, device=device)) & 1


def _level_indices(p0: Tensor, resolutions: Tensor, sizes: Tensor, kind: str) -> Tensor:
    """Table rows [n, L, 2^D] (within each level) of the corners of cells ``p0`` [n, L, D] (int64)."""
    dims = p0.shape[-1]
    bits = _corner_bits(dims, p0.device)  # [C, D]
    side = resolutions + 1
    strides = side[:, None] ** torch.arange(dims, device=p0.device)  # [L, D]
    corner_off = (bits[None] * strides[:, None, :]).sum(-1)  # [L, C]
    dense = (p0 * strides).sum(-1)[..., None] + corner_off  # [n, L, C]
    if kind == "hash":
        vals = torch.stack([p0, p0 + 1], dim=-1)  # [n, L, D, 2]
        hashed = torch.zeros_like(dense)
        for d in range(dims):
            v = (vals[:, :, d, :] * HASH_PRIMES[d]) & _U32  # [n, L, 2]
            hashed = hashed ^ v[:, :, bits[:, d]]
        use_hash = side ** dims > sizes  # [L]
        dense = torch.where(use_hash[None, :, None], hashed, dense)
    return dense % sizes[None, :, None]


def _encode_chunk(x: Tensor, table: Tensor, offsets: Tensor, resolutions: Tensor, kind: str,
                  keyframe: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
    n, dims = x.shape
    n_levels, feat = resolutions.shape[0], table.shape[-1]
    total = offsets[-1]
    res_f = resolutions.to(x.dtype)
    pos = x[:, None, :] * res_f[None, :, None]  # [n, L, D]
    p0 = torch.minimum(torch.floor(pos).clamp(min=0), (res_f - 1)[None, :, None])
    frac = pos - p0
    sizes = offsets[1:] - offsets[:-1]
    rows = _level_indices(p0.long(), resolutions, sizes, kind) + offsets[:-1][None, :, None]  # [n, L, C]
    bits = _corner_bits(dims, x.device).bool()
    cw = torch.where(bits[None, None], frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)  # [n, L, C]
    flat = table.reshape(-1, feat)
    if keyframe is None:
        rows_all, w_all = rows, cw
    else:
        i0, i1, wt = keyframe
        rows_all = torch.cat([rows + (i0 * total)[:, None, None], rows + (i1 * total)[:, None, None]], dim=2)
        w_all = torch.cat([cw * (1.0 - wt)[:, None, None], cw * wt[:, None, None]], dim=2)
    f = flat.index_select(0, rows_all.reshape(-1)).view(n, n_levels, -1, feat)
    return (f * w_all.to(f.dtype)[..., None]).sum(2).reshape(n, n_levels * feat)


def grid_encode(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor, kind: str,
                t: Tensor | None = None) -> Tensor:
    """Pure-PyTorch reference of `ops.hashgrid.grid_encode`.

    All levels at once (corner rows [n, L, 2^D]), chunked over points. ``x`` and ``t`` are detached: the op is
    differentiable w.r.t. ``embeddings`` only (autograd of the gather, so double backward works too).
    """
    x = x.detach().to(embeddings.dtype)
    k = embeddings.shape[0]
    keyframe = None
    if k > 1:
        g = (t.detach().to(x.dtype) * (k - 1)).clamp(0, k - 1)
        i0 = torch.floor(g).long().clamp(0, k - 1)
        i1 = (i0 + 1).clamp(max=k - 1)
        keyframe = (i0, i1, g - i0.to(g.dtype))
    per_point = resolutions.shape[0] * (1 << x.shape[1]) * (2 if k > 1 else 1)
    chunk = max(1, _ENCODE_CHUNK // per_point)
    outs = []
    for s in range(0, x.shape[0], chunk):
        kf = None if keyframe is None else tuple(v[s:s + chunk] for v in keyframe)
        outs.append(_encode_chunk(x[s:s + chunk], embeddings, offsets, resolutions, kind, kf))
    if not outs:
        return embeddings.new_zeros(0, resolutions.shape[0] * embeddings.shape[-1])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def keyframe_tv(embeddings: Tensor) -> Tensor:
    """Pure-PyTorch reference of `ops.hashgrid.keyframe_tv`."""
    if embeddings.shape[0] < 2:
        return embeddings.sum() * 0.0
    diff = embeddings[1:] - embeddings[:-1]
    return diff.pow(2).sum(-1).mean()
