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
_ENCODE_CACHE = 1 << 24
"""Up to this many (points × levels × corners), rows/weights are kept from forward to backward (~200 MB)."""
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
def _corners(pairs: Tensor, combine) -> Tensor:
    """Combine per-axis pairs [..., D, 2] (value at the cell's low/high vertex) over the 2^D corners.

    Returns [..., 2^D] where corner c takes entry ``(c >> d) & 1`` of axis d (axis 0 varies fastest), built by
    broadcasting one axis at a time: ``combine`` is ``torch.bitwise_xor`` (hashes), ``torch.add`` or ``torch.mul``.
    """
    dims = pairs.shape[-2]
    acc = pairs[..., dims - 1, :]
    for d in range(dims - 2, -1, -1):
        acc = combine(acc[..., :, None], pairs[..., d, None, :]).flatten(-2)
    return acc


def _wrap(rows: Tensor, sizes: Tensor) -> Tensor:
    """``rows mod size`` per level ([n, L', C] and [L']); a bit mask when every size is the same power of two."""
    size = int(sizes[0])
    if bool((sizes == size).all()) and size & (size - 1) == 0:
        return rows & (size - 1)
    return rows % sizes[None, :, None]


def _level_rows(p0: Tensor, resolutions: Tensor, sizes: Tensor, kind: str) -> Tensor:
    """Table rows [n, L, 2^D] (within each level) of the corners of cells ``p0`` [n, L, D] (int64)."""
    dims = p0.shape[-1]
    side = resolutions + 1
    # Levels whose (R+1)^D vertices fit their table are indexed densely without wrapping; as R grows with ℓ they
    # form a prefix. The other levels wrap the dense index (tiled) or hash (hash) modulo their size.
    n_fit = int((side ** dims <= sizes).sum())
    n_dense = p0.shape[1] if kind == "tiled" else n_fit
    parts = []
    if n_dense:
        strides = side[:n_dense, None] ** torch.arange(dims, device=p0.device)  # [Ld, D]
        lo = p0[:, :n_dense] * strides
        parts.append(_corners(torch.stack([lo, lo + strides], dim=-1), torch.add))
    if n_dense < p0.shape[1]:
        primes = torch.tensor(HASH_PRIMES[:dims], device=p0.device)
        q = p0[:, n_dense:]
        parts.append(_corners(torch.stack([(q * primes) & _U32, ((q + 1) * primes) & _U32], dim=-1),
                              torch.bitwise_xor))
    rows = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    if n_fit == p0.shape[1]:
        return rows
    return torch.cat([rows[:, :n_fit], _wrap(rows[:, n_fit:], sizes[n_fit:])], dim=1) if n_fit else _wrap(rows, sizes)


class _GridPlan:
    """Where the samples of a ``grid_encode`` call read: per chunk of points, the table rows and interpolation
    weights of every (level, corner[, keyframe]). The encoding is linear in the tables, ``y = A·E``; the plan applies
    ``A`` (gather) and ``Aᵀ`` (scatter), recomputing rows/weights chunk by chunk so memory stays bounded."""

    def __init__(self, x: Tensor, t: Tensor | None, offsets: Tensor, resolutions: Tensor, kind: str,
                 keyframes: int, feat: int) -> None:
        self.x, self.offsets, self.resolutions, self.kind = x, offsets, resolutions, kind
        self.keyframes, self.feat = keyframes, feat
        self.keyframe = None
        if keyframes > 1:
            assert t is not None, "keyframes > 1 needs t"
            g = (t.to(x.dtype) * (keyframes - 1)).clamp(0, keyframes - 1)
            i0 = torch.floor(g).long().clamp(0, keyframes - 1)
            self.keyframe = (i0, (i0 + 1).clamp(max=keyframes - 1), g - i0.to(g.dtype))
        per_point = resolutions.shape[0] * (1 << x.shape[1]) * (2 if keyframes > 1 else 1)
        self.chunk = max(1, _ENCODE_CHUNK // per_point)
        self.cacheable = x.shape[0] * per_point <= _ENCODE_CACHE
        self._cache: list[tuple[slice, Tensor, Tensor]] | None = None

    def chunks(self, keep: bool = False):
        """Yields (point slice, rows [n, L, C'] into the flattened [K·total, F] tables, weights [n, L, C']).

        With ``keep`` (and a small enough call) they are kept for the next pass (the backward) instead of recomputed.
        """
        if self._cache is not None:
            yield from self._cache
            return
        kept = []
        for s in range(0, self.x.shape[0], self.chunk):
            sl = slice(s, s + self.chunk)
            item = (sl, *self._rows_weights(self.x[sl], None if self.keyframe is None
                                            else tuple(v[sl] for v in self.keyframe)))
            if keep and self.cacheable:
                kept.append(item)
            yield item
        if kept:
            self._cache = kept

    def _rows_weights(self, x: Tensor, keyframe: tuple[Tensor, Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        res_f = self.resolutions.to(x.dtype)
        pos = x[:, None, :] * res_f[None, :, None]  # [n, L, D]
        p0 = torch.minimum(torch.floor(pos).clamp(min=0), (res_f - 1)[None, :, None])
        frac = pos - p0
        sizes = self.offsets[1:] - self.offsets[:-1]
        rows = _level_rows(p0.long(), self.resolutions, sizes, self.kind) + self.offsets[:-1][None, :, None]
        cw = _corners(torch.stack([1.0 - frac, frac], dim=-1), torch.mul)  # [n, L, C]
        if keyframe is None:
            return rows, cw
        i0, i1, wt = keyframe
        total = self.offsets[-1]
        rows = torch.cat([rows + (i0 * total)[:, None, None], rows + (i1 * total)[:, None, None]], dim=2)
        return rows, torch.cat([cw * (1.0 - wt)[:, None, None], cw * wt[:, None, None]], dim=2)

    def gather(self, tables: Tensor, keep: bool = False) -> Tensor:
        """``A·E``: [K, total, F] tables → [N, L·F] features (``keep``: cache the plan for a later scatter)."""
        flat = tables.reshape(-1, self.feat)
        n_levels = self.resolutions.shape[0]
        out = tables.new_empty(self.x.shape[0], n_levels * self.feat)
        for sl, rows, w in self.chunks(keep):
            f = flat.index_select(0, rows.reshape(-1)).view(*rows.shape, self.feat)
            out[sl] = (f * w.to(f.dtype)[..., None]).sum(2).reshape(-1, n_levels * self.feat)
        return out

    def scatter(self, grad: Tensor) -> Tensor:
        """``Aᵀ·g``: [N, L·F] feature gradients → [K, total, F] table gradients."""
        total = int(self.offsets[-1])
        out = grad.new_zeros(self.keyframes * total * self.feat)
        feat_ids = torch.arange(self.feat, device=grad.device)
        for sl, rows, w in self.chunks():
            g = grad[sl].reshape(rows.shape[0], rows.shape[1], 1, self.feat) * w.to(grad.dtype)[..., None]
            out.scatter_add_(0, (rows[..., None] * self.feat + feat_ids).reshape(-1), g.reshape(-1))
        return out.view(self.keyframes, total, self.feat)


class _GridGather(torch.autograd.Function):
    """y = A·E; its backward is ``_GridScatter`` (Aᵀ), whose backward is this again: any order of derivatives."""

    @staticmethod
    def forward(ctx, tables: Tensor, plan: _GridPlan) -> Tensor:
        ctx.plan = plan
        return plan.gather(tables, keep=ctx.needs_input_grad[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return _GridScatter.apply(grad.contiguous(), ctx.plan), None  # plan


class _GridScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad: Tensor, plan: _GridPlan) -> Tensor:
        ctx.plan = plan
        return plan.scatter(grad)

    @staticmethod
    def backward(ctx, grad_tables: Tensor) -> tuple[Tensor, None]:
        return _GridGather.apply(grad_tables.contiguous(), ctx.plan), None  # plan


def grid_encode(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor, kind: str,
                t: Tensor | None = None) -> Tensor:
    """Pure-PyTorch reference of `ops.hashgrid.grid_encode`.

    All levels at once (corner rows [n, L, 2^D]), chunked over points. The encoding is linear in ``embeddings``:
    the forward gathers, the backward scatters into ONE gradient table (per-chunk autograd of a gather would
    allocate a dense table gradient per chunk). ``x`` and ``t`` are not differentiated; double backward works.
    """
    if x.shape[0] == 0:
        return embeddings.new_zeros(0, resolutions.shape[0] * embeddings.shape[-1])
    plan = _GridPlan(x.detach().to(embeddings.dtype), None if t is None else t.detach(), offsets, resolutions, kind,
                     embeddings.shape[0], embeddings.shape[-1])
    return _GridGather.apply(embeddings, plan)


def keyframe_tv(embeddings: Tensor) -> Tensor:
    """Pure-PyTorch reference of `ops.hashgrid.keyframe_tv`."""
    if embeddings.shape[0] < 2:
        return embeddings.sum() * 0.0
    diff = embeddings[1:] - embeddings[:-1]
    return diff.pow(2).sum(-1).mean()


# ----------------------------------------------------------------------------- inference (alive rays, in place)
def march_rays(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
               alive: Tensor, rays_k: Tensor, rays_n: Tensor, bound: float, grid_res: int, dt: float, n_step: int,
               max_steps: int, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pure-PyTorch reference of `ops.inference.march_rays`.

    For every alive ray r: walk its lattice from index ``rays_k[r]`` (same float32 arithmetic as
    ``march_rays_train``) in windows of growing length, keeping occupied points until
    ``min(n_step, max_steps - rays_n[r])`` are taken or ``t >= far``; the ray stays marchable
    (``rays_k[r]`` = last taken + 1) only if it filled all ``n_step`` rows, else ``rays_k[r] = -1``.
    """
    device, n_alive = rays_o.device, alive.shape[0]
    xyzs = rays_o.new_zeros(n_alive, n_step, 3)
    dirs = rays_o.new_zeros(n_alive, n_step, 3)
    ts = rays_o.new_zeros(n_alive, n_step, 2)
    if n_alive == 0:
        return xyzs, dirs, ts
    dt32 = torch.tensor(dt, dtype=torch.float32, device=device)
    bound32 = torch.tensor(bound, dtype=torch.float32, device=device)
    scale32 = torch.tensor(grid_res / (2.0 * bound), dtype=torch.float32, device=device)
    r = alive.long()
    o, d, near, far, slot = rays_o[r], rays_d[r], nears[r], fars[r], slots[r]
    nz = torch.zeros_like(near) if noise is None else noise[r]
    k0 = rays_k[r].long()
    budget = (max_steps - rays_n[r].long()).clamp(min=0, max=n_step)
    k, emitted = k0.clone(), torch.zeros_like(k0)
    last_k = torch.full_like(k0, -1)
    active = (k0 >= 0) & (budget > 0)
    window = 32
    while bool(active.any()):
        rows = active.nonzero().squeeze(1)
        kk = k[rows, None] + torch.arange(window, device=device)  # [P, W]
        t = near[rows, None] + (kk.to(torch.float32) + nz[rows, None]) * dt32
        inside = t < far[rows, None]
        p = o[rows, None, :] + t[..., None] * d[rows, None, :]
        p = torch.minimum(torch.maximum(p, -bound32), bound32)
        cells = torch.floor((p + bound32) * scale32).clamp(0, grid_res - 1).long()
        occ = inside & _bit_lookup(bitfield, slot[rows, None].expand_as(kk).reshape(-1),
                                   cells.reshape(-1, 3)).view_as(kk)
        rank = torch.cumsum(occ.long(), 1) - occ.long() + emitted[rows, None]
        take = occ & (rank < budget[rows, None])
        row_of = rows[:, None].expand_as(kk)[take]
        col = rank[take]
        xyzs[row_of, col] = p[take]
        dirs[row_of, col] = d[row_of]
        ts[row_of, col, 0] = t[take]
        ts[row_of, col, 1] = dt32
        emitted[rows] += take.sum(1)
        last_k[rows] = torch.where(take, kk, torch.full_like(kk, -1)).amax(1).maximum(last_k[rows])
        done = (emitted[rows] >= budget[rows]) | ~inside.all(1)
        k[rows] = kk[:, -1] + 1
        active[rows[done]] = False
        window = min(2 * window, 1024)
    full = (emitted == n_step) & (k0 >= 0)
    rays_k[r] = torch.where(full, last_k + 1, torch.full_like(last_k, -1)).to(rays_k.dtype)
    rays_n[r] = (rays_n[r].long() + emitted).to(rays_n.dtype)
    return xyzs, dirs, ts


def composite_rays(sigmas: Tensor, rgbs: Tensor, ts: Tensor, alive: Tensor, optical_depth: Tensor,
                   weights_sum: Tensor, depth: Tensor, image: Tensor, t_thresh: float = 1e-4) -> None:
    """Pure-PyTorch reference of `ops.inference.composite_rays` (in place).

    Row a composites into ray ``alive[a]``: for its samples in order, stop at the first one with ``dt == 0``
    (unused row) or ``T = float32(exp(-optical_depth)) < t_thresh``; else ``w = (1 - exp(-σ·dt))·T`` is added to
    weights_sum/depth/image and ``σ·dt`` (float32 product, float64 sum) to optical_depth.
    """
    r = alive.long()
    od, ws, dep, img = optical_depth[r], weights_sum[r], depth[r], image[r]
    going = torch.ones(r.shape[0], dtype=torch.bool, device=sigmas.device)
    for j in range(sigmas.shape[1]):
        trans = torch.exp(-od).to(sigmas.dtype)
        going = going & (ts[:, j, 1] != 0) & (trans >= t_thresh)
        sd = sigmas[:, j] * ts[:, j, 1]
        w = torch.where(going, (1.0 - torch.exp(-sd)) * trans, torch.zeros_like(sd))
        ws = ws + w
        dep = dep + w * ts[:, j, 0]
        img = img + w[:, None] * rgbs[:, j]
        od = od + torch.where(going, sd, torch.zeros_like(sd)).double()
    optical_depth[r], weights_sum[r], depth[r], image[r] = od, ws, dep, img
