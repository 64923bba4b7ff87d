"""CUDA kernels (``animate124.ops._cuda``) ≡ the pure-torch reference, forward and gradients, on a GPU.

Skipped without a GPU. Inputs come from tests/_kernel_cases.py (the same ones the CPU host-harness test uses).
Reference results carry a ``_`` prefix; tolerances are the named constants below (with where each comes from).
"""

from __future__ import annotations

import _kernel_cases as cases
import pytest
import torch
from conftest import requires_cuda

from animate124.ops import _backend
from animate124.ops import _reference as ref

EXACT = dict(rtol=0.0, atol=0.0)
"""near/far, Morton codes, bitfields and the march lattice use the same IEEE float32 operations on both paths."""
RTOL_COMPOSITE, ATOL_COMPOSITE = 1e-5, 2e-6
"""Compositing: float32 sums of ≤ 64 terms (kernel: sequential, possibly FMA-contracted; reference: index_add)."""
RTOL_COMPOSITE_GRAD, ATOL_COMPOSITE_GRAD = 1e-4, 2e-5
"""Composite backward: the kernel's suffix sums are (total − prefix) in float32 (cancellation ≈ 1e-6 of the total)."""
ATOL_GRID = 5e-6
"""Grid encode: 2^D·2 O(1) products summed in a different order (≈1e-7) + float32 atomics in backward (order-free)."""
RTOL_TV = 1e-5
"""keyframe_tv: float64 accumulation in the kernel vs a float32 torch mean."""

pytestmark = [pytest.mark.cuda, requires_cuda]
DEV = "cuda"


@pytest.fixture(scope="module")
def cu():
    if not _backend.available():
        pytest.fail(f"a GPU is present but the CUDA kernels are unavailable: {_backend.backend_info()}")
    from animate124.ops import _cuda

    return _cuda


def _to(d: dict) -> dict:
    return {k: v.to(DEV) if isinstance(v, torch.Tensor) else v for k, v in d.items()}


def test_public_ops_dispatch_to_cuda(cu):
    from animate124.ops._checks import dispatch

    x = torch.zeros(1, device=DEV)
    assert dispatch("composite_rays_train", x) is cu.composite_rays_train
    assert dispatch("march_rays", x) is cu.march_rays


# ----------------------------------------------------------------------------------------------- rays and grid bits
@pytest.mark.parametrize("n", [0, 1, 5000])
def test_near_far(cu, n):
    o, d = cases.rays(n, seed=1)
    if n:
        o[0], d[0] = torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])  # inside the box
    o, d, aabb = o.to(DEV), d.to(DEV), torch.tensor(cases.BOX, device=DEV)
    nears, fars = cu.near_far_from_aabb(o, d, aabb, 0.2)
    _nears, _fars = ref.near_far_from_aabb(o, d, aabb, 0.2)
    torch.testing.assert_close(nears, _nears, **EXACT)
    torch.testing.assert_close(fars, _fars, **EXACT)


def test_morton_and_packbits(cu):
    coords = torch.randint(0, 1024, (10000, 3), device=DEV)
    codes = cu.morton3d(coords)
    assert torch.equal(codes, ref.morton3d(coords))
    assert torch.equal(cu.morton3d_invert(codes), coords)
    grid = torch.rand(4, 16 ** 3, device=DEV)
    assert torch.equal(cu.packbits(grid, 0.3), ref.packbits(grid, 0.3))
    thresh = torch.tensor([0.1, 0.5, 0.7, 2.0], device=DEV)
    assert torch.equal(cu.packbits(grid, thresh), ref.packbits(grid, thresh))
    assert cu.morton3d(coords[:0]).shape == (0,)


# --------------------------------------------------------------------------------------------------- ray marching
@pytest.mark.parametrize("n,kind,res,max_steps", [
    (0, "sphere", 32, 1024),       # zero rays
    (1, "sphere", 128, 1024),
    (3000, "sphere", 128, 1024),   # the original's grid, several time slots
    (3000, "sphere", 64, 1),       # one sample per ray
    (2000, "empty", 64, 1024),     # every cell empty: M = 0
    (2000, "full", 32, 1024),
])
def test_march_rays_train(cu, n, kind, res, max_steps):
    inp = _to(cases.march_inputs(n, slots=3, res=res, seed=2, kind=kind))
    s = cu.march_rays_train(**inp, bound=1.0, grid_res=res, dt=cases.DT, max_steps=max_steps)
    _s = ref.march_rays_train(**inp, bound=1.0, grid_res=res, dt=cases.DT, max_steps=max_steps)
    assert s.rays.dtype == torch.int32 and torch.equal(s.rays, _s.rays)
    for a, b in ((s.xyzs, _s.xyzs), (s.dirs, _s.dirs), (s.ts, _s.ts)):
        torch.testing.assert_close(a, b, **EXACT)
    if kind == "empty":
        assert s.xyzs.shape == (0, 3)


def test_march_rays_train_all_miss(cu):
    o = torch.tensor([[0.0, 0.0, 5.0]], device=DEV).repeat(10, 1)
    d = torch.tensor([[0.0, 0.0, 1.0]], device=DEV).repeat(10, 1)  # pointing away from the box
    nears, fars = cu.near_far_from_aabb(o, d, torch.tensor(cases.BOX, device=DEV), 0.2)
    bits = torch.full((1, 16 ** 3 // 8), 255, dtype=torch.uint8, device=DEV)
    s = cu.march_rays_train(o, d, nears, fars, bits, torch.zeros(10, dtype=torch.long, device=DEV),
                            torch.rand(10, device=DEV), 1.0, 16, cases.DT, 1024)
    assert s.xyzs.shape[0] == 0 and s.rays[:, 1].sum() == 0


# ------------------------------------------------------------------------------------------------------ compositing
@pytest.mark.parametrize("n_rays,max_count,channels,sigma_scale,t_thresh", [
    (0, 4, 3, 30.0, 1e-4),       # zero rays
    (1, 1, 3, 30.0, 1e-4),       # one sample
    (2000, 64, 3, 30.0, 1e-4),
    (2000, 64, 3, 2000.0, 1e-4),  # T-threshold early stop after a few samples
    (500, 40, 1, 30.0, 0.3),
    (500, 40, 4, 30.0, 0.0),
])
def test_composite_rays_train(cu, n_rays, max_count, channels, sigma_scale, t_thresh):
    sigmas, rgbs, ts, rays = (t.to(DEV) for t in cases.composite_inputs(n_rays, max_count, channels, seed=4,
                                                                        sigma_scale=sigma_scale))
    s1, r1 = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    s2, r2 = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    out = cu.composite_rays_train(s1, r1, ts, rays, t_thresh)
    _out = ref.composite_rays_train(s2, r2, ts, rays, t_thresh)
    for a, b in zip(out, _out):
        torch.testing.assert_close(a, b, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
    if sigma_scale > 1000 and n_rays:
        assert (out[0] == 0).any()  # the threshold culled samples
    v = [torch.randn_like(o) for o in out]
    grads = torch.autograd.grad(sum((o * vi).sum() for o, vi in zip(out, v)), (s1, r1), allow_unused=True)
    _grads = torch.autograd.grad(sum((o * vi).sum() for o, vi in zip(_out, v)), (s2, r2), allow_unused=True)
    for g, _g in zip(grads, _grads):
        if _g is None:
            assert g is None or not g.abs().any()
            continue
        torch.testing.assert_close(g, _g, rtol=RTOL_COMPOSITE_GRAD, atol=ATOL_COMPOSITE_GRAD)


def test_composite_rays_train_under_autocast_and_int64_rays(cu):
    sigmas, rgbs, ts, rays = (t.to(DEV) for t in cases.composite_inputs(100, 20, 3, seed=5))
    with torch.autocast("cuda", dtype=torch.float16):
        out = cu.composite_rays_train(sigmas.half(), rgbs.half(), ts, rays.long())
    assert all(o.dtype == torch.float32 for o in out)
    torch.testing.assert_close(out[3], ref.composite_rays_train(sigmas.half().float(), rgbs.half().float(), ts,
                                                                rays)[3], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------- grid encodings
@pytest.mark.parametrize("kind", ["tiled", "hash"])
@pytest.mark.parametrize("dims,keyframes,features", [(3, 1, 2), (3, 5, 2), (4, 1, 2), (4, 3, 2), (3, 1, 1),
                                                      (3, 2, 4), (3, 1, 8)])
def test_grid_encode(cu, kind, dims, keyframes, features):
    a = _to(cases.grid_inputs(kind, dims, keyframes, n=3000, seed=6, features=features))  # τ = 0, 1 included
    e1 = a["embeddings"].clone().requires_grad_()
    e2 = a["embeddings"].clone().requires_grad_()
    out = cu.grid_encode(a["x"], e1, a["offsets"], a["resolutions"], kind, a["t"])
    _out = ref.grid_encode(a["x"], e2, a["offsets"], a["resolutions"], kind, a["t"])
    torch.testing.assert_close(out, _out, rtol=0, atol=ATOL_GRID)
    v = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * v).sum(), e1)
    (_g,) = torch.autograd.grad((_out * v).sum(), e2)
    torch.testing.assert_close(g, _g, rtol=1e-5, atol=ATOL_GRID)


def test_grid_encode_full_size_layout_and_zero_points(cu):
    from animate124.ops.hashgrid import grid_layout

    offsets, res = (t.to(DEV) for t in grid_layout("tiled", 16, 16, 2048, 16, 3))  # levels wrap modulo 2^16
    emb = torch.rand(3, int(offsets[-1]), 2, device=DEV)
    x, t = torch.rand(5000, 3, device=DEV), torch.rand(5000, device=DEV)
    torch.testing.assert_close(cu.grid_encode(x, emb, offsets, res, "tiled", t),
                               ref.grid_encode(x, emb, offsets, res, "tiled", t), rtol=0, atol=ATOL_GRID)
    assert cu.grid_encode(x[:0], emb, offsets, res, "tiled", t[:0]).shape == (0, 32)


def test_grid_encode_double_backward_raises(cu):
    a = _to(cases.grid_inputs("hash", 3, 1, n=10, seed=7))
    emb = a["embeddings"].clone().requires_grad_()
    out = cu.grid_encode(a["x"], emb, a["offsets"], a["resolutions"], "hash")
    (g,) = torch.autograd.grad(out.square().sum(), emb, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


@pytest.mark.parametrize("keyframes", [1, 2, 7])
def test_keyframe_tv(cu, keyframes):
    emb = torch.randn(keyframes, 1001, 2, device=DEV)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    tv, _tv = cu.keyframe_tv(e1), ref.keyframe_tv(e2)
    torch.testing.assert_close(tv, _tv, rtol=RTOL_TV, atol=1e-7)
    (g,), (_g,) = torch.autograd.grad(3.0 * tv, e1), torch.autograd.grad(3.0 * _tv, e2)
    torch.testing.assert_close(g, _g, rtol=RTOL_TV, atol=1e-7)


# -------------------------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("n_step,max_steps", [(1, 1024), (4, 1024), (8, 30)])
def test_inference_march_and_composite(cu, n_step, max_steps):
    inp = _to(cases.march_inputs(2000, slots=2, res=64, seed=8))
    n = inp["rays_o"].shape[0]
    state = [torch.zeros(n, dtype=torch.int32, device=DEV) for _ in range(2)]
    _state = [s.clone() for s in state]
    acc = [torch.zeros(n, dtype=torch.float64, device=DEV), torch.zeros(n, device=DEV), torch.zeros(n, device=DEV),
           torch.zeros(n, 3, device=DEV)]
    _acc = [a.clone() for a in acc]
    alive = torch.arange(n, device=DEV)
    for _ in range(2000):
        if not alive.numel():
            break
        args = (inp["rays_o"], inp["rays_d"], inp["nears"], inp["fars"], inp["bitfield"], inp["slots"], alive)
        out = cu.march_rays(*args, *state, 1.0, 64, cases.DT, n_step, max_steps, inp["noise"])
        _out = ref.march_rays(*args, *_state, 1.0, 64, cases.DT, n_step, max_steps, inp["noise"])
        for a, b in zip(out + tuple(state), _out + tuple(_state)):
            torch.testing.assert_close(a, b, **EXACT)
        sig, rgb = 20.0 * (out[0].norm(dim=-1) < 0.7).float(), out[0].abs()
        cu.composite_rays(sig, rgb, out[2], alive, *acc, 1e-4)
        ref.composite_rays(sig, rgb, out[2], alive, *_acc, 1e-4)
        for a, b in zip(acc, _acc):
            torch.testing.assert_close(a, b, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
        alive = alive[(state[0][alive] >= 0) & (torch.exp(-acc[0][alive]).float() >= 1e-4)]
    assert not alive.numel()


def test_render_rays_inference_equals_training_on_cuda(cu):
    from animate124.ops import composite_rays_train, march_rays_train
    from animate124.ops.inference import render_rays_inference

    inp = _to(cases.march_inputs(4000, slots=2, res=128, seed=9))

    def field(x):
        return 25.0 * (x.norm(dim=-1) < 0.6).float(), 0.5 * x + 0.5

    s = march_rays_train(**inp, bound=1.0, grid_res=128, dt=cases.DT, max_steps=1024)
    _, ws, depth, image = composite_rays_train(*field(s.xyzs), s.ts, s.rays)
    st = render_rays_inference(inp["rays_o"], inp["rays_d"], inp["nears"], inp["fars"], inp["bitfield"],
                               inp["slots"], lambda x, d, r: field(x), bound=1.0, grid_res=128, dt=cases.DT,
                               max_steps=1024, noise=inp["noise"])
    torch.testing.assert_close(st.weights_sum, ws, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
    torch.testing.assert_close(st.depth, depth, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
    torch.testing.assert_close(st.image, image, rtol=RTOL_COMPOSITE, atol=ATOL_COMPOSITE)
