"""``animate124.ops._cuda`` wiring (argument order, dtype conversions, autograd Functions, saved tensors) on the CPU.

The compiled extension is replaced by ``_host_harness.FakeExtension``: the same functions as cuda_ext/bindings.cpp,
computed by the kernels' per-element bodies in host loops. So this checks everything between the public op and the
launchers except the CUDA launch itself (tests/test_cuda_kernels.py, GPU). Skipped when nvcc is absent.
"""

from __future__ import annotations

import _kernel_cases as cases
import pytest
import torch
from _host_harness import HAVE_NVCC, FakeExtension

from animate124.ops import _backend, _cuda, inference
from animate124.ops import _reference as ref

pytestmark = pytest.mark.skipif(not HAVE_NVCC, reason="needs nvcc to build the host harness")

RTOL, ATOL = 1e-5, 2e-6
"""Same arithmetic as the reference up to summation order (see tests/test_cuda_host_logic.py)."""
RTOL_GRAD, ATOL_GRAD = 1e-4, 2e-5
"""Composite backward: float32 (total − prefix) suffix sums vs autograd."""


@pytest.fixture(autouse=True)
def fake_extension(monkeypatch):
    monkeypatch.setattr(_backend, "get", lambda: FakeExtension)


def test_near_far_morton_packbits():
    o, d = cases.rays(300, seed=1)
    aabb = torch.tensor(cases.BOX)
    for a, b in zip(_cuda.near_far_from_aabb(o, d, aabb, 0.2), ref.near_far_from_aabb(o, d, aabb, 0.2)):
        assert torch.equal(a, b)
    coords = torch.randint(0, 1024, (100, 3), dtype=torch.int32)
    assert torch.equal(_cuda.morton3d(coords), ref.morton3d(coords))
    assert torch.equal(_cuda.morton3d_invert(ref.morton3d(coords)), coords.long())
    grid = torch.rand(2, 64)
    assert torch.equal(_cuda.packbits(grid, 0.4), ref.packbits(grid, 0.4))
    assert torch.equal(_cuda.packbits(grid, torch.tensor([0.1, 0.9])), ref.packbits(grid, torch.tensor([0.1, 0.9])))


def test_march_rays_train_returns_ray_samples():
    inp = cases.march_inputs(200, slots=2, res=16, seed=2)
    s = _cuda.march_rays_train(**inp, bound=1.0, grid_res=16, dt=cases.DT, max_steps=50)
    _s = ref.march_rays_train(**inp, bound=1.0, grid_res=16, dt=cases.DT, max_steps=50)
    assert torch.equal(s.rays, _s.rays) and torch.equal(s.xyzs, _s.xyzs) and torch.equal(s.ts, _s.ts)
    assert s.times is None and s.xyzs.shape[0] > 0


def test_composite_autograd_function():
    sigmas, rgbs, ts, rays = cases.composite_inputs(100, 30, 3, seed=3)
    s1, r1 = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    s2, r2 = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    out = _cuda.composite_rays_train(s1, r1, ts, rays.long(), 1e-4)  # int64 rays are converted
    _out = ref.composite_rays_train(s2, r2, ts, rays, 1e-4)
    for a, b in zip(out, _out):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    v = [torch.randn_like(o) for o in out]
    g = torch.autograd.grad(sum((o * vi).sum() for o, vi in zip(out, v)), (s1, r1))
    _g = torch.autograd.grad(sum((o * vi).sum() for o, vi in zip(_out, v)), (s2, r2))
    for a, b in zip(g, _g):
        torch.testing.assert_close(a, b, rtol=RTOL_GRAD, atol=ATOL_GRAD)
    # only rgbs need a gradient (sigmas are not saved for a gradient of their own)
    r3, r4 = rgbs.clone().requires_grad_(), rgbs.clone().requires_grad_()
    (g_r,) = torch.autograd.grad(_cuda.composite_rays_train(sigmas, r3, ts, rays)[3].sum(), r3)
    (_g_r,) = torch.autograd.grad(ref.composite_rays_train(sigmas, r4, ts, rays)[3].sum(), r4)
    torch.testing.assert_close(g_r, _g_r, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind,dims,keyframes", [("tiled", 3, 4), ("hash", 4, 1)])
def test_grid_encode_autograd_function(kind, dims, keyframes):
    a = cases.grid_inputs(kind, dims, keyframes, n=100, seed=4, log2_table=9)
    e1, e2 = a["embeddings"].clone().requires_grad_(), a["embeddings"].clone().requires_grad_()
    out = _cuda.grid_encode(a["x"], e1, a["offsets"], a["resolutions"], kind, a["t"])
    _out = ref.grid_encode(a["x"], e2, a["offsets"], a["resolutions"], kind, a["t"])
    torch.testing.assert_close(out, _out, rtol=0, atol=ATOL)
    v = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * v).sum(), e1)
    (_g,) = torch.autograd.grad((_out * v).sum(), e2)
    torch.testing.assert_close(g, _g, rtol=RTOL, atol=ATOL)
    with pytest.raises(RuntimeError):  # the hand-written backward is once-differentiable
        (gg,) = torch.autograd.grad((out * v).square().sum(), e1, create_graph=True)
        gg.sum().backward()


@pytest.mark.parametrize("keyframes", [1, 4])
def test_keyframe_tv_autograd_function(keyframes):
    emb = torch.randn(keyframes, 50, 2)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    tv, _tv = _cuda.keyframe_tv(e1), ref.keyframe_tv(e2)
    torch.testing.assert_close(tv, _tv, rtol=1e-6, atol=1e-7)
    (g,), (_g,) = torch.autograd.grad(2.0 * tv, e1), torch.autograd.grad(2.0 * _tv, e2)
    torch.testing.assert_close(g, _g, rtol=1e-5, atol=1e-7)


def test_inference_wrappers_through_the_cuda_functions(monkeypatch):
    # route the public inference ops to _cuda (as on a GPU) and compare with the reference loop
    from animate124.ops import _checks

    monkeypatch.setattr(_checks._backend, "use_cuda", lambda *t: True)
    inp = cases.march_inputs(100, slots=2, res=16, seed=5)

    def field(x, d, r):
        return 20.0 * (x.norm(dim=-1) < 0.6).float(), 0.5 * x + 0.5

    kw = dict(bound=1.0, grid_res=16, dt=cases.DT, max_steps=1024, noise=inp["noise"])
    args = (inp["rays_o"], inp["rays_d"], inp["nears"], inp["fars"], inp["bitfield"], inp["slots"], field)
    st = inference.render_rays_inference(*args, **kw)
    monkeypatch.setattr(_checks._backend, "use_cuda", lambda *t: False)
    _st = inference.render_rays_inference(*args, **kw)
    for a, b in ((st.weights_sum, _st.weights_sum), (st.depth, _st.depth), (st.image, _st.image)):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    assert float(st.weights_sum.max()) > 0.9
