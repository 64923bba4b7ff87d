"""Pure-torch reference ops (the CPU path and the kernels' oracle) against hand-computed cases and brute force."""

import math

import pytest
import torch

import animate124.ops as ops
from animate124.ops import (
    composite_rays_train,
    grid_encode,
    grid_layout,
    keyframe_tv,
    march_rays_train,
    morton3d,
    morton3d_invert,
    near_far_from_aabb,
    packbits,
)

FLT_MAX = torch.finfo(torch.float32).max
ATOL = 1e-6  # float32 sums of a handful of O(1) terms
ATOL_HAND = 5e-6  # hand-computed values below are rounded to 6 decimals
BOX = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def test_all_names_exist():
    ns: dict = {}
    exec("from animate124.ops import *", ns)
    assert set(ops.__all__) <= set(ns) and len(ops.__all__) >= 9


# ------------------------------------------------------------------------------------------------------- near / far
def test_near_far_hand_cases():
    o = torch.tensor([[-3.0, 0.0, 0.0],   # axis-aligned: enters x=-1 at t=2, leaves x=1 at t=4
                      [0.0, 0.0, 0.0],    # inside: far = 1 (z=1), near clamped to min_near 0.2
                      [0.0, 5.0, 0.0],    # parallel to x at y=5: misses
                      [3.0, 0.0, 0.0]])   # box behind the camera: far = -2 <= near -> miss
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far = near_far_from_aabb(o, d, BOX, min_near=0.2)
    torch.testing.assert_close(near, torch.tensor([2.0, 0.2, FLT_MAX, FLT_MAX]))
    torch.testing.assert_close(far, torch.tensor([4.0, 1.0, FLT_MAX, FLT_MAX]))


def test_near_far_diagonal():
    # from (-3,-3,-3) along (1,1,1)/√3: enters at the corner (-1,-1,-1), t = 2√3; leaves at (1,1,1), t = 4√3
    d = torch.full((1, 3), 1 / math.sqrt(3))
    near, far = near_far_from_aabb(torch.full((1, 3), -3.0), d, BOX)
    torch.testing.assert_close(near, torch.tensor([2 * math.sqrt(3)]))
    torch.testing.assert_close(far, torch.tensor([4 * math.sqrt(3)]))


def test_near_far_validates():
    with pytest.raises(ValueError, match="rays_d"):
        near_far_from_aabb(torch.zeros(2, 3), torch.zeros(3, 3), BOX)
    with pytest.raises(ValueError, match="aabb"):
        near_far_from_aabb(torch.zeros(2, 3), torch.ones(2, 3), BOX[:3])


# ---------------------------------------------------------------------------------------------------- morton / bits
def test_morton_known_values_and_roundtrip():
    coords = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 0], [1, 1, 1], [2, 0, 0], [1023, 1023, 1023]])
    # x bits -> 0,3,6..; y -> 1,4,..; z -> 2,5,..: (3,0,0) = 0b1001 = 9; (1,1,1) = 0b111 = 7; (2,0,0) = 0b1000 = 8
    expected = torch.tensor([1, 2, 4, 9, 7, 8, (1 << 30) - 1])
    assert torch.equal(morton3d(coords), expected)
    c = torch.randint(0, 1024, (4096, 3))
    assert torch.equal(morton3d_invert(morton3d(c)), c)
    # every code of a 4³ grid is hit exactly once
    g = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert torch.equal(morton3d(g).sort().values, torch.arange(64))
    with pytest.raises(ValueError):
        morton3d(torch.tensor([[1024, 0, 0]]))


def test_packbits():
    grid = torch.tensor([[0.0, 2, 0, 0, 0, 0, 0, 3, 9, 9, 9, 9, 9, 9, 9, 9],
                         [5.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6]])
    # slot 0, thresh 1: byte 0 has bits 1 and 7 -> 2 + 128 = 130; byte 1 all set -> 255
    # slot 1, thresh 5.5: only cell 15 (6 > 5.5) -> byte 1 bit 7 = 128 (cell 0: 5 > 5.5 false)
    bits = packbits(grid, torch.tensor([1.0, 5.5]))
    assert bits.dtype == torch.uint8
    assert bits.tolist() == [[130, 255], [0, 128]]
    assert packbits(grid, 1.0).tolist() == [[130, 255], [1, 128]]


# ------------------------------------------------------------------------------------------------------- marching
def _one_cell_bitfield():
    """R = 4 over [-1, 1]³ (cells 0.5 wide); slot 0 occupies cell (1, 2, 2), slot 1 occupies cell (2, 2, 2)."""
    grid = torch.zeros(2, 64)
    grid[0, morton3d(torch.tensor([[1, 2, 2]]))] = 1.0
    grid[1, morton3d(torch.tensor([[2, 2, 2]]))] = 1.0
    return packbits(grid, 0.5)


def _rays(n):
    o = torch.tensor([[-2.0, 0.1, 0.1]]).repeat(n, 1)
    d = torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1)
    near, far = near_far_from_aabb(o, d, BOX)
    return o, d, near, far  # near = 1, far = 3


def test_march_one_occupied_cell():
    # t_k = 1 + (k + 0.5)·0.25 = 1.125, 1.375, 1.625, 1.875, 2.125, ...; x = t − 2 = −.875, −.625, −.375, −.125, .125
    # cell x = floor((x + 1)·2) = 0, 0, 1, 1, 2, ...; y = z = 0.1 -> floor(2.2) = 2. Slot 0 (cell 1,2,2): k = 2, 3.
    # Slot 1 (cell 2,2,2): x ∈ [0, 0.5) -> t = 2.125, 2.375. Third ray: slot 0 with max_steps handled below.
    o, d, near, far = _rays(3)
    s = march_rays_train(o, d, near, far, _one_cell_bitfield(), torch.tensor([0, 1, 0]), torch.full((3,), 0.5),
                         1.0, 4, 0.25, 1024)
    assert s.rays.dtype == torch.int32 and s.times is None
    assert s.rays.tolist() == [[0, 2], [2, 2], [4, 2]]
    assert s.ts[:, 0].tolist() == [1.625, 1.875, 2.125, 2.375, 1.625, 1.875]
    assert torch.all(s.ts[:, 1] == 0.25)
    torch.testing.assert_close(s.xyzs[0], torch.tensor([-0.375, 0.1, 0.1]))
    torch.testing.assert_close(s.dirs, d[:1].expand(6, 3))


def test_march_max_steps_and_empty():
    o, d, near, far = _rays(2)
    slots = torch.zeros(2, dtype=torch.long)
    s = march_rays_train(o, d, near, far, _one_cell_bitfield(), slots, torch.full((2,), 0.5), 1.0, 4, 0.25, 1)
    assert s.rays.tolist() == [[0, 1], [1, 1]] and s.ts[:, 0].tolist() == [1.625, 1.625]
    empty = torch.zeros(1, 8, dtype=torch.uint8)
    s = march_rays_train(o, d, near, far, empty, slots, torch.rand(2), 1.0, 4, 0.25, 1024)
    assert s.xyzs.shape == (0, 3) and s.ts.shape == (0, 2) and s.rays.tolist() == [[0, 0], [0, 0]]


def test_march_full_grid_and_miss():
    # all occupied: t_k = 1 + (k + 0.5)·0.25 < 3  <=>  k < 7.5 -> 8 samples; the missed ray (near = FLT_MAX) gets 0
    o, d, near, far = _rays(2)
    near[1] = far[1] = FLT_MAX
    full = torch.full((1, 8), 255, dtype=torch.uint8)
    s = march_rays_train(o, d, near, far, full, torch.zeros(2, dtype=torch.long), torch.full((2,), 0.5), 1.0, 4,
                         0.25, 1024)
    assert s.rays.tolist() == [[0, 8], [8, 0]]


def _march_brute(o, d, near, far, bits, slots, noise, bound, res, dt, max_steps):
    """One ray at a time, one lattice point at a time (the kernel's loop), float32 throughout."""
    out = []
    dt32, b32 = torch.tensor(dt), torch.tensor(bound)
    scale = torch.tensor(res / (2 * bound))
    for i in range(o.shape[0]):
        ts, k = [], 0
        while near[i] < FLT_MAX and len(ts) < max_steps:
            t = near[i] + (torch.tensor(float(k)) + noise[i]) * dt32
            if not t < far[i]:
                break
            p = torch.minimum(torch.maximum(o[i] + t * d[i], -b32), b32)
            c = torch.floor((p + b32) * scale).clamp(0, res - 1).long()
            m = int(morton3d(c[None])[0])
            if (int(bits[slots[i], m >> 3]) >> (m & 7)) & 1:
                ts.append(float(t))
            k += 1
        out.append(ts)
    return out


def test_march_matches_brute_force_random():
    n, res = 24, 8
    o = torch.randn(n, 3) * 0.3 + torch.tensor([-2.5, 0.0, 0.0])
    d = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 0.0]) + 0.4 * torch.randn(n, 3), dim=-1)
    near, far = near_far_from_aabb(o, d, BOX)
    bits = packbits(torch.rand(2, res ** 3), 0.5)
    slots, noise = torch.randint(0, 2, (n,)), torch.rand(n)
    s = march_rays_train(o, d, near, far, bits, slots, noise, 1.0, res, 0.05, 12)
    expected = _march_brute(o, d, near, far, bits, slots, noise, 1.0, res, 0.05, 12)
    assert s.rays[:, 1].tolist() == [len(e) for e in expected]
    assert s.ts[:, 0].tolist() == [t for e in expected for t in e]
    assert sum(len(e) for e in expected) > 50  # the case is not trivially empty


def test_march_validates():
    o, d, near, far = _rays(1)
    with pytest.raises(ValueError, match="bitfield"):
        march_rays_train(o, d, near, far, torch.zeros(1, 7, dtype=torch.uint8), torch.zeros(1, dtype=torch.long),
                         torch.rand(1), 1.0, 4, 0.1, 8)
    with pytest.raises(ValueError, match="slots"):
        march_rays_train(o, d, near, far, torch.zeros(1, 8, dtype=torch.uint8), torch.ones(1, dtype=torch.long),
                         torch.rand(1), 1.0, 4, 0.1, 8)


# ---------------------------------------------------------------------------------------------------- compositing
def test_composite_two_samples():
    # σ = (1, 2), dt = 0.5: α1 = 1 − e^−0.5 = 0.393469, w1 = α1; T2 = e^−0.5 = 0.606531, α2 = 1 − e^−1 = 0.632121,
    # w2 = 0.383400; Σw = 1 − e^−1.5 = 0.776870; depth = 0.393469·1 + 0.383400·1.5 = 0.968570
    sig = torch.tensor([1.0, 2.0])
    rgb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ts = torch.tensor([[1.0, 0.5], [1.5, 0.5]])
    rays = torch.tensor([[0, 2], [2, 0]], dtype=torch.int32)  # second ray: no samples
    w, acc, depth, img = composite_rays_train(sig, rgb, ts, rays)
    torch.testing.assert_close(w, torch.tensor([0.393469, 0.383400]), atol=ATOL_HAND, rtol=0)
    torch.testing.assert_close(acc, torch.tensor([1 - math.exp(-1.5), 0.0]), atol=ATOL_HAND, rtol=0)
    torch.testing.assert_close(depth, torch.tensor([0.968570, 0.0]), atol=ATOL_HAND, rtol=0)
    torch.testing.assert_close(img, torch.tensor([[0.393469, 0.383400], [0.0, 0.0]]), atol=ATOL_HAND, rtol=0)


def test_composite_transmittance_cutoff():
    # σ = (20, 1, 1), dt = 1: T1 = 1 -> w1 = 1 − e^−20; T2 = e^−20 ≈ 2e−9 < 1e−4 -> samples 2 and 3 are dropped.
    # With t_thresh = 0 sample 2 counts: w2 = e^−20·(1 − e^−1) ≈ 1.30e−9.
    sig = torch.tensor([20.0, 1.0, 1.0])
    ts = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    rays = torch.tensor([[0, 3]])
    w, acc, _, _ = composite_rays_train(sig, torch.ones(3, 3), ts, rays)
    assert w[1] == 0 and w[2] == 0 and w[0] > 0.999
    w0, _, _, _ = composite_rays_train(sig, torch.ones(3, 3), ts, rays, t_thresh=0.0)
    assert abs(float(w0[1]) - math.exp(-20) * (1 - math.exp(-1))) < 1e-12


def test_edge_cases_zero_rays_zero_samples_all_culled():
    o, d, near, far = _rays(0)
    s = march_rays_train(o, d, near, far, _one_cell_bitfield(), torch.zeros(0, dtype=torch.long), torch.rand(0),
                         1.0, 4, 0.25, 8)
    assert s.xyzs.shape == (0, 3) and s.rays.shape == (0, 2)
    w, acc, depth, img = composite_rays_train(torch.zeros(0), torch.zeros(0, 3), torch.zeros(0, 2),
                                              torch.zeros(3, 2, dtype=torch.int32))
    assert w.shape == (0,) and acc.tolist() == [0.0, 0.0, 0.0] and img.shape == (3, 3)
    # t_thresh above 1: even the first sample (T = 1) is culled
    w, acc, _, _ = composite_rays_train(torch.ones(2), torch.ones(2, 3), torch.ones(2, 2), torch.tensor([[0, 2]]),
                                        t_thresh=1.5)
    assert w.tolist() == [0.0, 0.0] and acc.tolist() == [0.0]
    with pytest.raises(ValueError, match="past"):
        composite_rays_train(torch.zeros(0), torch.zeros(0, 3), torch.zeros(0, 2), torch.tensor([[0, 1]]))


def test_composite_matches_sequential_loop():
    counts = torch.tensor([0, 5, 1, 9, 3])
    rays = torch.stack([torch.cumsum(counts, 0) - counts, counts], -1).to(torch.int32)
    m = int(counts.sum())
    sig, rgb = torch.rand(m) * 5, torch.rand(m, 3)
    ts = torch.stack([torch.rand(m), torch.rand(m) * 0.5], -1)
    w, acc, depth, img = composite_rays_train(sig, rgb, ts, rays)
    for r, (off, cnt) in enumerate(rays.tolist()):
        trans, a_sum, a_img = 1.0, 0.0, torch.zeros(3)
        for i in range(off, off + cnt):
            alpha = 1 - math.exp(-float(sig[i] * ts[i, 1]))
            if trans < 1e-4:
                assert w[i] == 0
                continue
            assert abs(float(w[i]) - alpha * trans) < ATOL
            a_sum, a_img = a_sum + alpha * trans, a_img + alpha * trans * rgb[i]
            trans *= 1 - alpha
        assert abs(float(acc[r]) - a_sum) < ATOL
        torch.testing.assert_close(img[r], a_img, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------- grid encoding
def test_grid_layout_original_sizes():
    # spec §4.1: tiled 3D, 16 levels, base 16, max 2048, 2^16 table: 17³ = 4913 -> 4920; 24³ = 13824; 32³ = 32768;
    # 44³ > 65536 -> 65536 for the other 13 levels; total 4920 + 13824 + 32768 + 13·65536 = 903480
    offsets, res = grid_layout("tiled", 16, 16, 2048, 16, 3)
    assert res.tolist() == [16, 23, 31, 43, 59, 81, 112, 154, 213, 295, 407, 562, 777, 1073, 1483, 2048]
    sizes = (offsets[1:] - offsets[:-1]).tolist()
    assert sizes[:4] == [4920, 13824, 32768, 65536] and sizes[3:] == [65536] * 13
    assert int(offsets[-1]) == 903480 and offsets.dtype == torch.int64
    with pytest.raises(ValueError):
        grid_layout("dense", 16, 16, 2048, 16, 3)


def _single_level(kind, res, log2, k=1, feat=2):
    offsets, resolutions = grid_layout(kind, 1, res, res, log2, 3)
    emb = torch.randn(k, int(offsets[-1]), feat)
    return emb, offsets, resolutions


def test_grid_encode_vertex_hits():
    # R = 4, tiled, 5³ = 125 vertices -> table 128. x = (1/4, 2/4, 3/4) is vertex (1,2,3): row 1 + 2·5 + 3·25 = 86.
    # x = (1,1,1): cell clamped to 3 with weight 1 on its far corner = vertex (4,4,4): row 4 + 20 + 100 = 124.
    emb, offsets, res = _single_level("tiled", 4, 16)
    x = torch.tensor([[0.25, 0.5, 0.75], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    out = grid_encode(x, emb, offsets, res, "tiled")
    torch.testing.assert_close(out, emb[0, [86, 124, 0]])
    # midway between vertices (0,0,0) and (1,0,0): the mean of rows 0 and 1
    mid = grid_encode(torch.tensor([[0.125, 0.0, 0.0]]), emb, offsets, res, "tiled")
    torch.testing.assert_close(mid[0], 0.5 * (emb[0, 0] + emb[0, 1]))


def test_grid_encode_hash_and_tiled_wrap():
    # R = 4, table 2^3 = 8 < 125 -> hashed. vertex (1,1,0): 1 ^ 2654435761 = 0x9E3779B0 -> mod 8 = 0;
    # vertex (1,1,1): 0x9E3779B0 ^ 805459861 (0x30025795) = 0xAE352E25 -> mod 8 = 5.
    emb, offsets, res = _single_level("hash", 4, 3)
    out = grid_encode(torch.tensor([[0.25, 0.25, 0.0], [0.25, 0.25, 0.25]]), emb, offsets, res, "hash")
    torch.testing.assert_close(out, emb[0, [0, 5]])
    # tiled wraps the dense index: vertex (1,2,3) = 86 -> 86 mod 8 = 6
    out = grid_encode(torch.tensor([[0.25, 0.5, 0.75]]), emb, offsets, res, "tiled")
    torch.testing.assert_close(out, emb[0, [6]])


def test_grid_encode_keyframe_lerp():
    emb, offsets, res = _single_level("tiled", 4, 16, k=3)
    x = torch.tensor([[0.25, 0.5, 0.75]] * 4)  # vertex row 86
    t = torch.tensor([0.0, 1.0, 0.25, 0.8])  # g = 0, 2, 0.5, 1.6
    out = grid_encode(x, emb, offsets, res, "tiled", t=t)
    e = emb[:, 86]
    torch.testing.assert_close(out, torch.stack([e[0], e[2], 0.5 * (e[0] + e[1]), 0.4 * e[1] + 0.6 * e[2]]))
    with pytest.raises(ValueError, match="t is required"):
        grid_encode(x, emb, offsets, res, "tiled")


def _encode_brute(x, table, offsets, res, kind):
    """Point by point, level by level, corner by corner (K = 1)."""
    primes = (1, 2654435761, 805459861, 3674653429)
    out = torch.zeros(x.shape[0], len(res) * table.shape[-1], dtype=table.dtype)
    dims = x.shape[1]
    for i in range(x.shape[0]):
        for lv, r in enumerate(res.tolist()):
            size = int(offsets[lv + 1] - offsets[lv])
            pos = [float(x[i, d]) * r for d in range(dims)]
            c0 = [min(max(math.floor(p), 0), r - 1) for p in pos]
            for corner in range(1 << dims):
                v = [c0[d] + ((corner >> d) & 1) for d in range(dims)]
                wgt = math.prod(pos[d] - c0[d] if (corner >> d) & 1 else 1 - (pos[d] - c0[d]) for d in range(dims))
                if kind == "hash" and (r + 1) ** dims > size:
                    h = 0
                    for d in range(dims):
                        h ^= (v[d] * primes[d]) & 0xFFFFFFFF
                else:
                    h = sum(v[d] * (r + 1) ** d for d in range(dims))
                row = int(offsets[lv]) + h % size
                out[i, lv * table.shape[-1]:(lv + 1) * table.shape[-1]] += wgt * table[row]
    return out


@pytest.mark.parametrize("kind,dims", [("hash", 3), ("tiled", 3), ("hash", 4)])
def test_grid_encode_matches_brute_force(kind, dims):
    offsets, res = grid_layout(kind, 4, 3, 40, 9, dims)
    emb = torch.randn(1, int(offsets[-1]), 2, dtype=torch.float64)
    x = torch.rand(7, dims, dtype=torch.float64)
    out = grid_encode(x, emb, offsets, res, kind)
    torch.testing.assert_close(out, _encode_brute(x, emb[0], offsets, res, kind))


def test_keyframe_tv_hand_case():
    # E0 = (0,0), E1 = (1,2), E2 = (1,0): ‖E1−E0‖² = 5, ‖E2−E1‖² = 4 -> mean over 2 pairs × 1 row = 4.5
    emb = torch.tensor([[[0.0, 0.0]], [[1.0, 2.0]], [[1.0, 0.0]]], requires_grad=True)
    tv = keyframe_tv(emb)
    assert float(tv.detach()) == 4.5
    tv.backward()
    # d/dE1 of ((E1−E0)² + (E2−E1)²)/2 = (E1−E0) − (E2−E1) = (1,2) − (0,−2) = (1, 4)
    torch.testing.assert_close(emb.grad[1, 0], torch.tensor([1.0, 4.0]))
    assert float(keyframe_tv(torch.ones(1, 5, 2))) == 0.0
