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
from animate124.types import FieldOutput

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
        render_rays_nerfacc(r, o, d)
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
    a = ours.render_rays(o, d, times, perturb=False)
    b = peer.render_rays(o, d, times, perturb=False)
    assert (a.rgb - b.rgb).abs().mean() < RGB_TOL
    assert (a.opacity - b.opacity).abs().mean() < RGB_TOL
    if dynamic:  # the second half of the clip is empty for both
        late = times >= 0.5
        assert float(b.opacity[late].max()) == 0.0 and float(b.opacity[~late].max()) > 0.9
    b.rgb.sum().backward()
    assert peer.field.log_sigma.grad is not None and torch.isfinite(peer.field.log_sigma.grad)
