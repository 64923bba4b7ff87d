"""The kernels' per-element logic (the ``A124_HD`` bodies in cuda_ext/include) vs the torch reference, on the CPU.

cuda_ext/testing/host_harness.cu wraps those bodies in plain host loops; it is built with ``nvcc -shared`` (no GPU,
no CUDA torch needed) and called through ctypes. What this does NOT cover: kernel launch configuration, atomics
under contention and device math (``expf``/``exp`` on the GPU) — tests/test_cuda_kernels.py covers those on a GPU.
Skipped when nvcc is absent.
"""

from __future__ import annotations

import math

import _kernel_cases as cases
import pytest
import torch
from _host_harness import F32 as _F32
from _host_harness import (
    HAVE_NVCC,
    host_composite,
    host_composite_backward,
    host_grid,
    host_march_infer,
    host_march_train,
)
from _host_harness import I32 as _I32
from _host_harness import I64 as _I64
from _host_harness import harness as _harness
from _host_harness import p as _p

from animate124.ops import _reference as ref

RTOL_COMPOSITE, ATOL_COMPOSITE = 1e-5, 1e-6
"""float32 sums of ≤ 40 terms; the reference's T comes from a global float64 cumsum (≈1e-12 apart)."""
RTOL_GRAD, ATOL_GRAD = 1e-4, 2e-5
"""Composite backward: the kernel's suffix sum is (total − prefix) in float32, the reference's autograd is exact-ish."""
ATOL_GRID = 2e-6
"""Grid encode: 2^D·2 products of O(1) floats summed in a different order."""

pytestmark = pytest.mark.skipif(not HAVE_NVCC, reason="needs nvcc to build the host harness")

# --------------------------------------------------------------------------------------------------------- the tests
def test_morton_and_packbits_match_reference():
    lib = _harness()
    coords = torch.randint(0, 1024, (5000, 3))
    coords[:3] = torch.tensor([[0, 0, 0], [1023, 1023, 1023], [1, 2, 3]])
    codes = torch.zeros(5000, dtype=torch.int64)
    lib.h_morton3d(_p(coords), _I64(5000), _p(codes))
    assert torch.equal(codes, ref.morton3d(coords))
    back = torch.zeros(5000, 3, dtype=torch.int64)
    lib.h_morton3d_invert(_p(codes), _I64(5000), _p(back))
    assert torch.equal(back, coords)
    grid, thresh = torch.rand(3, 512), torch.tensor([0.2, 0.5, 0.9])
    bits = torch.zeros(3, 64, dtype=torch.uint8)
    lib.h_packbits(_p(grid), _p(thresh), _I64(3), _I64(512), _p(bits))
    assert torch.equal(bits, ref.packbits(grid, thresh))


def test_near_far_matches_reference():
    o, d = cases.rays(4000, seed=1)
    o[:2], d[:2] = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # inside the box
    aabb = torch.tensor(cases.BOX)
    nears, fars = torch.zeros(4000), torch.zeros(4000)
    _harness().h_near_far(_p(o), _p(d), _p(aabb), _I64(4000), _F32(0.2), _p(nears), _p(fars))
    _nears, _fars = ref.near_far_from_aabb(o, d, aabb, 0.2)
    assert torch.equal(nears, _nears) and torch.equal(fars, _fars)


@pytest.mark.parametrize("kind,max_steps,res", [("sphere", 1024, 32), ("sphere", 7, 32), ("empty", 1024, 16),
                                                 ("full", 1024, 16), ("sphere", 1024, 64)])
def test_march_train_matches_reference_exactly(kind, max_steps, res):
    inputs = cases.march_inputs(600 if res < 64 else 300, slots=3, res=res, seed=2, kind=kind)
    args = (1.0, res, cases.DT, max_steps)
    xyzs, dirs, ts, rays = host_march_train(**inputs, bound=args[0], grid_res=res, dt=cases.DT, max_steps=max_steps)
    _s = ref.march_rays_train(**inputs, bound=1.0, grid_res=res, dt=cases.DT, max_steps=max_steps)
    assert torch.equal(rays, _s.rays)
    assert torch.equal(xyzs, _s.xyzs) and torch.equal(dirs, _s.dirs) and torch.equal(ts, _s.ts)
    if kind == "empty":
        assert rays[:, 1].sum() == 0
    if kind != "empty":
        assert rays[:, 1].sum() > 0 and int(rays[:, 1].max()) <= max_steps


def test_march_train_non_unit_bound_and_big_step():
    inputs = cases.march_inputs(300, slots=2, res=16, seed=3)
    for bound, dt in ((0.5, 0.013), (2.0, 0.05)):
        out = host_march_train(**inputs, bound=bound, grid_res=16, dt=dt, max_steps=1024)
        _s = ref.march_rays_train(**inputs, bound=bound, grid_res=16, dt=dt, max_steps=1024)
        assert torch.equal(out[3], _s.rays) and torch.equal(out[0], _s.xyzs) and torch.equal(out[2], _s.ts)


@pytest.mark.parametrize("sigma_scale,t_thresh", [(30.0, 1e-4), (400.0, 1e-4), (400.0, 0.5), (5.0, 0.0)])
def test_composite_forward_backward_match_reference(sigma_scale, t_thresh):
    sigmas, rgbs, ts, rays = cases.composite_inputs(300, 40, 3, seed=4, sigma_scale=sigma_scale)
    out = host_composite(sigmas, rgbs, ts, rays, t_thresh)
    s_, r_ = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    _out = ref.composite_rays_train(s_, r_, ts, rays, t_thresh)
    for a, b in zip(out, _out):
        torch.testing.assert_close(a, b.detach(), rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
    v = [torch.randn_like(o) for o in out]
    _gs, _gr = torch.autograd.grad(sum((o * vi).sum() for o, vi in zip(_out, v)), (s_, r_))
    gs, gr = host_composite_backward(v, sigmas, rgbs, ts, rays, t_thresh)
    torch.testing.assert_close(gs, _gs, rtol=RTOL_GRAD, atol=ATOL_GRAD)
    torch.testing.assert_close(gr, _gr, rtol=RTOL_GRAD, atol=ATOL_GRAD)


def test_composite_generic_channels():
    sigmas, rgbs, ts, rays = cases.composite_inputs(50, 20, 5, seed=5)
    out = host_composite(sigmas, rgbs, ts, rays, 1e-4)
    for a, b in zip(out, ref.composite_rays_train(sigmas, rgbs, ts, rays, 1e-4)):
        torch.testing.assert_close(a, b, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)


@pytest.mark.parametrize("kind,dims,keyframes", [("tiled", 3, 1), ("hash", 3, 1), ("tiled", 3, 5), ("hash", 4, 1),
                                                  ("tiled", 4, 3), ("hash", 3, 4)])
def test_grid_encode_matches_reference(kind, dims, keyframes):
    a = cases.grid_inputs(kind, dims, keyframes, n=300, seed=6, log2_table=10)
    out = host_grid(True, a["x"], a["embeddings"], a["offsets"], a["resolutions"], kind, a["t"], a["embeddings"])
    emb = a["embeddings"].clone().requires_grad_()
    _out = ref.grid_encode(a["x"], emb, a["offsets"], a["resolutions"], kind, a["t"])
    torch.testing.assert_close(out, _out.detach(), rtol=0, atol=ATOL_GRID)
    v = torch.randn_like(out)
    (_g,) = torch.autograd.grad((_out * v).sum(), emb)
    g = host_grid(False, a["x"], a["embeddings"], a["offsets"], a["resolutions"], kind, a["t"], v)
    torch.testing.assert_close(g, _g, rtol=1e-5, atol=ATOL_GRID)


def test_grid_encode_non_power_of_two_hashed_level():
    # one hashed level whose table size (1000) is not a power of two: the uint32-wrapped XOR hash must match
    a = cases.grid_inputs("hash", 3, 1, n=200, seed=7, levels=1)
    offsets, res = torch.tensor([0, 1000]), torch.tensor([40])
    emb = torch.rand(1, 1000, 2)
    out = host_grid(True, a["x"], emb, offsets, res, "hash", None, emb)
    torch.testing.assert_close(out, ref.grid_encode(a["x"], emb, offsets, res, "hash"), rtol=0, atol=ATOL_GRID)


def test_keyframe_tv_gradient_matches_reference():
    emb = torch.randn(5, 33, 2)
    e = emb.clone().requires_grad_()
    (_g,) = torch.autograd.grad(ref.keyframe_tv(e), e)
    g = torch.zeros_like(emb)
    _harness().h_keyframe_tv_grad(_p(emb), _I32(5), _I64(66), _F32(1.0 / (4 * 33)), _p(g))
    torch.testing.assert_close(g, _g, rtol=1e-5, atol=1e-7)


def test_dt_lattice_is_the_documented_one():
    # sanity of the shared geometry: 1024 steps of 2√3/1024 span the box diagonal
    assert math.isclose(cases.DT * 1024, 2 * math.sqrt(3))


def _host_march_infer(inp, alive, rays_k, rays_n, n_step, res, max_steps, noise):
    return host_march_infer(inp["rays_o"], inp["rays_d"], inp["nears"], inp["fars"], inp["bitfield"], inp["slots"],
                            noise, alive, rays_k, rays_n, 1.0, res, cases.DT, n_step, max_steps)


@pytest.mark.parametrize("n_step,max_steps,with_noise", [(1, 1024, True), (3, 1024, False), (8, 20, True)])
def test_inference_march_and_composite_match_reference(n_step, max_steps, with_noise):
    inp = cases.march_inputs(120, slots=2, res=32, seed=8)
    noise = inp["noise"] if with_noise else None
    n = inp["rays_o"].shape[0]
    k, kn, _k, _kn = (torch.zeros(n, dtype=torch.int32) for _ in range(4))
    acc = [torch.zeros(n, dtype=torch.float64), torch.zeros(n), torch.zeros(n), torch.zeros(n, 3)]
    _acc = [a.clone() for a in acc]
    alive = torch.arange(n)
    for _ in range(400):
        if not alive.numel():
            break
        out = _host_march_infer(inp, alive, k, kn, n_step, 32, max_steps, noise)
        _out = ref.march_rays(inp["rays_o"], inp["rays_d"], inp["nears"], inp["fars"], inp["bitfield"], inp["slots"],
                              alive, _k, _kn, 1.0, 32, cases.DT, n_step, max_steps, noise)
        assert all(torch.equal(a, b) for a, b in zip(out, _out)) and torch.equal(k, _k) and torch.equal(kn, _kn)
        sig = 20.0 * (out[0].norm(dim=-1) < 0.7).float()
        rgb = out[0].abs().contiguous()
        _harness().h_composite_infer(_p(sig), _p(rgb), _p(out[2]), _p(alive), _I64(alive.shape[0]), _I32(n_step),
                                     _I32(3), _F32(1e-4), *[_p(a) for a in acc])
        ref.composite_rays(sig, rgb, out[2], alive, *_acc, 1e-4)
        for a, b in zip(acc, _acc):
            torch.testing.assert_close(a, b, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
        alive = alive[(k[alive] >= 0) & (torch.exp(-acc[0][alive]).float() >= 1e-4)]
    assert not alive.numel() and int(kn.max()) <= max_steps and float(acc[1].max()) > 0.5
