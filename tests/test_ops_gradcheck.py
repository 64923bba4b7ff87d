"""float64 gradcheck of the differentiable reference ops (composite_rays_train, grid_encode, keyframe_tv)."""

import pytest
import torch

from animate124.ops import composite_rays_train, grid_encode, grid_layout, keyframe_tv

EPS, ATOL = 1e-6, 1e-5  # torch.autograd.gradcheck defaults for float64


@pytest.mark.gradcheck
def test_gradcheck_composite():
    counts = torch.tensor([3, 0, 4, 1])
    rays = torch.stack([torch.cumsum(counts, 0) - counts, counts], -1).to(torch.int32)
    m = int(counts.sum())
    sig = (torch.rand(m, dtype=torch.float64) * 3).requires_grad_()
    rgb = torch.rand(m, 3, dtype=torch.float64, requires_grad=True)
    ts = torch.stack([torch.rand(m), torch.full((m,), 0.3)], -1).double()

    def fn(s, c):
        return composite_rays_train(s, c, ts, rays)

    assert torch.autograd.gradcheck(fn, (sig, rgb), eps=EPS, atol=ATOL)


@pytest.mark.gradcheck
def test_gradcheck_composite_with_cutoff():
    # a dense first sample drives T below 1e-4, so later samples are culled (fixed set) and get zero gradient
    sig = torch.tensor([12.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    ts = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    rays = torch.tensor([[0, 3]])
    assert torch.autograd.gradcheck(lambda s, c: composite_rays_train(s, c, ts, rays), (sig, rgb), eps=EPS, atol=ATOL)


@pytest.mark.gradcheck
@pytest.mark.parametrize("kind,dims,k", [("hash", 3, 1), ("tiled", 3, 3), ("hash", 4, 1)])
def test_gradcheck_grid_encode(kind, dims, k):
    offsets, res = grid_layout(kind, 2, 2, 4, 5, dims)  # 3D: level 0 dense (27 rows), level 1 wraps/hashes
    emb = (torch.randn(k, int(offsets[-1]), 2, dtype=torch.float64) * 0.1).requires_grad_()
    x = torch.rand(5, dims, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64) if k > 1 else None
    assert torch.autograd.gradcheck(lambda e: grid_encode(x, e, offsets, res, kind, t=t), (emb,), eps=EPS, atol=ATOL)


@pytest.mark.gradcheck
def test_gradgradcheck_grid_encode():
    # double backward through the reference (needed if a phase differentiates a gradient of the encoding)
    offsets, res = grid_layout("hash", 2, 2, 4, 5, 3)
    emb = torch.randn(1, int(offsets[-1]), 2, dtype=torch.float64, requires_grad=True)
    x = torch.rand(4, 3, dtype=torch.float64)
    assert torch.autograd.gradgradcheck(lambda e: grid_encode(x, e, offsets, res, "hash") ** 2, (emb,))


@pytest.mark.gradcheck
def test_gradcheck_keyframe_tv():
    emb = torch.randn(4, 6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(keyframe_tv, (emb,), eps=EPS, atol=ATOL)
