"""render.backend=nerfacc (render/nerfacc_backend.py): a CPU error, and agreement with our renderer on a GPU."""

import math

import pytest
import torch
from conftest import requires_cuda
from torch import nn

from animate124.config.schema import RenderBackend, RenderConfig
from animate124.errors import ConfigError
from animate124.render.nerfacc_backend import render_rays_nerfacc
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import FieldOutput, RenderRequest

SIGMA, RADIUS = 20.0, 0.5
RGB_TOL = 0.02
"""Mean |Δrgb| between nerfacc and our kernels: different lattices (jitter/midpoints) on a σ = 20 ball at dt ≈ 0.0034
give opacity differences ≲ σ·dt·e^(−σ·chord) per ray, far below this."""


class _Ball(nn.Module):
    bound = 1.0

    def __init__(self, dynamic: bool = False):
        super().__init__()
        self.is_dynamic = dynamic
        self.log_sigma = nn.Parameter(torch.tensor(math.log(SIGMA)))

    def density(self, x, t):
        inside = x.norm(dim=-1) < RADIUS
        if self.is_dynamic:
            inside = inside & (t < 0.5)  # the ball vanishes in the second half of the clip
        return torch.where(inside, self.log_sigma.exp(), torch.zeros((), device=x.device))

    def forward(self, x, t):
        return FieldOutput(self.density(x, t), (0.5 * x + 0.5).clamp(0, 1))

    def normals(self, x, t):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def _renderer(backend: RenderBackend, dynamic: bool = False, device: str = "cpu") -> VolumeRenderer:
    occ = OccupancyGrid(resolution=64, time_slots=2 if dynamic else 1)
    r = VolumeRenderer(_Ball(dynamic), occ, RenderConfig(backend=backend, grid_resolution=64)).to(device)
    r.occupancy.update(lambda x, t: r.field.density(x, t if dynamic else None) + 0.0,
                       generator=torch.Generator(device=device).manual_seed(0))
    return r


def _rays(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    o = torch.tensor([2.5, 0.0, 0.0]).expand(n, 3).clone()
    target = (torch.rand(n, 3, generator=g) - 0.5) * 1.2
    d = target - o
    return o.to(device), (d / d.norm(dim=-1, keepdim=True)).to(device)


def test_cpu_rays_raise_config_error():
    r = _renderer(RenderBackend.nerfacc)
    o, d = _rays(4, "cpu")
    with pytest.raises(ConfigError, match="nerfacc"):
        render_rays_nerfacc(r.field, r.occupancy, r.cfg, o, d)
    with pytest.raises(ConfigError, match="nerfacc"):
        r.render_rays(o, d)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dynamic", [False, True])
def test_nerfacc_matches_our_renderer(dynamic):
    ours, peer = _renderer(RenderBackend.auto, dynamic, "cuda"), _renderer(RenderBackend.nerfacc, dynamic, "cuda")
    peer.load_state_dict(ours.state_dict())
    o, d = _rays(4096, "cuda")
    times = torch.rand(4096, device="cuda") if dynamic else None
    a = ours.render_rays(o, d, times, RenderRequest(perturb=False))
    b = peer.render_rays(o, d, times, RenderRequest(perturb=False))
    assert (a.rgb - b.rgb).abs().mean() < RGB_TOL
    assert (a.opacity - b.opacity).abs().mean() < RGB_TOL
    if dynamic:  # the second half of the clip is empty for both
        late = times >= 0.5
        assert float(b.opacity[late].max()) == 0.0 and float(b.opacity[~late].max()) > 0.9
    b.rgb.sum().backward()
    assert peer.field.log_sigma.grad is not None and torch.isfinite(peer.field.log_sigma.grad)


# ------------------------------------------------------------------------------------------------ CPU, torch stand-ins
class _TorchOccGridEstimator(nn.Module):
    """Torch stand-in of ``nerfacc.OccGridEstimator`` (levels = 1), whose ``sampling`` is CUDA-only.

    Uniform intervals [t, t + dt) from ``near_plane`` (plus one U[0, dt) jitter per ray when stratified) to the box
    exit, kept where the midpoint's cell is set in ``binaries`` [1, R, R, R] ([x, y, z] over ``roi_aabb``); returns
    (ray_indices, t_starts, t_ends) sorted by ray, like nerfacc. No early stop (our t_thresh cut is ~1e-4 of T).
    """

    def __init__(self, roi_aabb, resolution, levels=1):
        super().__init__()
        self.register_buffer("aabb", torch.tensor(roi_aabb, dtype=torch.float32))
        self.register_buffer("binaries", torch.zeros(levels, resolution, resolution, resolution, dtype=torch.bool))
        self.calls = 0

    def sampling(self, rays_o, rays_d, sigma_fn=None, near_plane=0.0, render_step_size=1e-3, stratified=False,
                 early_stop_eps=1e-4, alpha_thre=0.0, **_):
        self.calls += 1
        lo, hi = self.aabb[:3], self.aabb[3:]
        inv = 1.0 / rays_d
        t_a, t_b = (lo - rays_o) * inv, (hi - rays_o) * inv
        far = torch.minimum(t_a, t_b).amax(-1).clamp_min(near_plane), torch.maximum(t_a, t_b).amin(-1)
        near, far = far
        k = torch.arange(int(math.ceil(float(far.max().clamp_min(0)) / render_step_size)) + 1, dtype=torch.float32)
        jitter = torch.rand(rays_o.shape[0], 1) * render_step_size if stratified else 0.0
        t0 = near[:, None] + k[None] * render_step_size + jitter
        t1 = t0 + render_step_size
        mid = rays_o[:, None] + rays_d[:, None] * ((t0 + t1) / 2)[..., None]
        res = self.binaries.shape[-1]
        cell = ((mid - lo) / (hi - lo) * res).floor().long().clamp(0, res - 1)
        occupied = self.binaries[0][cell[..., 0], cell[..., 1], cell[..., 2]]
        keep = occupied & (t1 <= far[:, None]) & (near < far)[:, None]
        ray_indices = torch.arange(rays_o.shape[0])[:, None].expand_as(keep)[keep]
        return ray_indices, t0[keep], t1[keep]


def _torch_render_weight_from_density(t_starts, t_ends, sigmas, ray_indices=None, n_rays=None, **_):
    """Torch stand-in of ``nerfacc.render_weight_from_density`` with ``ray_indices`` (packed scans are CUDA-only)."""
    sd = sigmas * (t_ends - t_starts)
    before = torch.cumsum(sd, 0) - sd
    first = torch.searchsorted(ray_indices.contiguous(), ray_indices.contiguous())  # each ray's first sample
    trans = torch.exp(-(before - before[first]))
    alphas = 1.0 - torch.exp(-sd)
    return trans * alphas, trans, alphas


@pytest.mark.parametrize("dynamic", [False, True])
def test_nerfacc_wiring_on_cpu_with_torch_stand_ins(monkeypatch, dynamic):
    """Our wiring around nerfacc (slot loop, binaries, sorting, shading, accumulation) runs on the CPU and matches our
    renderer; the test caught ``renderer._shade`` (removed when shade() became a module function)."""
    import nerfacc

    from animate124.render import nerfacc_backend

    monkeypatch.setattr(nerfacc, "OccGridEstimator", _TorchOccGridEstimator)
    monkeypatch.setattr(nerfacc, "render_weight_from_density", _torch_render_weight_from_density)
    monkeypatch.setattr(nerfacc_backend, "_nerfacc", lambda rays_o: nerfacc)  # skip the CUDA-only check
    ours, peer = _renderer(RenderBackend.auto, dynamic), _renderer(RenderBackend.nerfacc, dynamic)
    peer.load_state_dict(ours.state_dict())
    o, d = _rays(96, "cpu")
    times = torch.rand(96, generator=torch.Generator().manual_seed(1)) if dynamic else None
    a = ours.render_rays(o, d, times, RenderRequest(perturb=False))
    b = peer.render_rays(o, d, times, RenderRequest(shading="lambertian", ambient=1.0, perturb=False))
    assert (a.rgb - b.rgb).abs().mean() < RGB_TOL
    assert (a.opacity - b.opacity).abs().mean() < RGB_TOL
    assert float(b.opacity.detach().max()) > 0.9
    if dynamic:
        assert float(b.opacity.detach()[times >= 0.5].max()) == 0.0
    c = peer.render_rays(o, d, times, RenderRequest(shading="normal", perturb=True))  # normals on, jittered lattice
    assert c.normals is not None and torch.isfinite(c.normals).all()
    (b.rgb.sum() + c.rgb.sum()).backward()
    assert peer.field.log_sigma.grad is not None and torch.isfinite(peer.field.log_sigma.grad)
