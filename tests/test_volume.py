"""Volume renderer (render/volume.py) on analytic scenes, through the real ops (torch reference on CPU)."""

import math

import pytest
import torch
from torch import nn

from animate124.config.schema import RenderBackend, RenderConfig
from animate124.errors import ConfigError
from animate124.render.cameras import Cameras, reference_camera
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer, sample_ray_indices
from animate124.types import FieldOutput, RenderRequest

SIGMA, RADIUS = 2.0, 0.5
ALBEDO = (0.2, 0.4, 0.6)
MAX_STEPS = 256
DT = 2 * math.sqrt(3) / MAX_STEPS  # 0.01353
OPACITY_TOL = math.exp(-SIGMA * 2 * RADIUS) * SIGMA * DT + 1e-5
"""The march covers the chord up to ±1 step: optical depth error ≤ σ·dt → opacity error ≤ e^(−2σr)·σ·dt (0.0037)."""
DEPTH_TOL = 2 * DT
"""Riemann sum of ∫ t·σ·T dt with midpoint samples on a dt lattice: within a couple of steps."""
EXACT = dict(atol=1e-5, rtol=1e-5)
IOU_SLACK = 0.1
"""Seed-to-seed spread of the IoU of two jittered 16³ occupancy estimates of the same field (measured 0.6-0.75)."""


class SphereField(nn.Module):
    """σ = SIGMA inside a ball of radius RADIUS (τ < t_cut for the dynamic variant), constant albedo and normal."""

    bound = 1.0

    def __init__(self, dynamic: bool = False, t_cut: float = 0.5):
        super().__init__()
        self.is_dynamic = dynamic
        self.t_cut = t_cut
        self.log_sigma = nn.Parameter(torch.tensor(math.log(SIGMA)))
        self.albedo_logit = nn.Parameter(torch.logit(torch.tensor(ALBEDO)))
        self.normal = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))
        self.n_forward = self.n_normals = 0
        self.seen_times = []

    def density(self, x, t):
        inside = x.norm(dim=-1) < RADIUS
        if self.is_dynamic:
            assert t is not None and t.shape == x.shape[:1]
            inside = inside & (t < self.t_cut)
        return torch.where(inside, self.log_sigma.exp(), torch.zeros((), dtype=x.dtype))

    def forward(self, x, t):
        self.n_forward += 1
        self.seen_times.append(t)
        return FieldOutput(self.density(x, t), torch.sigmoid(self.albedo_logit).expand(x.shape[0], 3))

    def normals(self, x, t):
        self.n_normals += 1
        return (self.normal / self.normal.norm()).expand(x.shape[0], 3)


def _renderer(field=None, slots=1, res=16, **cfg):
    field = field if field is not None else SphereField()
    cfg = RenderConfig(max_steps=MAX_STEPS, grid_resolution=res, **cfg)
    return VolumeRenderer(field, OccupancyGrid(resolution=res, time_slots=slots), cfg)


def _centre_ray():
    return torch.tensor([[1.8, 0.0, 0.0]]), torch.tensor([[-1.0, 0.0, 0.0]])


def test_centre_ray_opacity_and_depth_match_the_analytic_ball():
    r = _renderer()
    o, d = _centre_ray()
    out = r.render_rays(o, d, None, RenderRequest(background=torch.zeros(3), perturb=False))
    # chord length 2r = 1 → opacity 1 − exp(−σ·2r) = 1 − e^−2 = 0.864665
    expected_opacity = 1 - math.exp(-SIGMA * 2 * RADIUS)
    assert abs(out.opacity.item() - expected_opacity) < OPACITY_TOL
    # entry a = 1.8 − 0.5 = 1.3, L = 1: ∫₀ᴸ (a+s)σe^(−σs) ds = a(1−e^−σL) + 1/σ − e^−σL(L + 1/σ)
    #   = 1.3·0.864665 + 0.5 − 0.135335·1.5 = 1.124064 + 0.296997 = 1.421061
    assert abs(out.depth.item() - 1.421061) < DEPTH_TOL
    torch.testing.assert_close(out.rgb[0], torch.tensor(ALBEDO) * out.opacity[0], **EXACT)  # black background
    assert out.rgb.shape == (1, 3) and out.opacity.shape == (1, 1) and out.depth.shape == (1, 1)
    m = out.sample_weights.shape[0]
    assert out.sample_dirs.shape == (m, 3) and out.normals is None and out.sample_normals is None
    torch.testing.assert_close(out.sample_weights.sum(), out.opacity.sum(), **EXACT)


def test_perturbed_render_stays_close():
    r = _renderer()
    o, d = _centre_ray()
    out = r.render_rays(o.expand(64, 3), d.expand(64, 3), None, RenderRequest(perturb=True))
    assert (out.opacity - (1 - math.exp(-2.0))).abs().max() < OPACITY_TOL


def test_missing_rays_show_the_background():
    r = _renderer()
    o = torch.tensor([[1.8, 0.0, 0.0], [1.8, 0.9, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])  # misses the box; crosses the box but not the ball
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]])
    out = r.render_rays(o, d, None, RenderRequest(background=bg, perturb=False))
    torch.testing.assert_close(out.opacity, torch.zeros(2, 1))
    torch.testing.assert_close(out.rgb, bg)
    torch.testing.assert_close(out.depth, torch.zeros(2, 1))


def test_no_samples_skips_the_field():
    field = SphereField()
    r = _renderer(field)
    o, d = torch.tensor([[1.8, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    out = r.render_rays(o, d, None, RenderRequest(background=torch.tensor([0.5, 0.5, 0.5]), shading="normal"))
    assert field.n_forward == 0 and out.sample_weights.shape == (0,)
    torch.testing.assert_close(out.rgb, torch.full((1, 3), 0.5))


def test_gradients_reach_the_field_parameters():
    field = SphereField()
    r = _renderer(field)
    o, d = _centre_ray()
    out = r.render_rays(o, d, None, RenderRequest(background=torch.rand(3)))
    (out.rgb.sum() + out.opacity.sum()).backward()
    assert field.log_sigma.grad is not None and field.log_sigma.grad.abs() > 0
    assert field.albedo_logit.grad is not None and (field.albedo_logit.grad.abs() > 0).all()


@pytest.mark.parametrize("cams_per_frame", [True, False])
def test_render_shapes_one_field_call_and_frame_times(cams_per_frame):
    b, f, size = 2, 3, 5
    field = SphereField(dynamic=True)
    r = _renderer(field, slots=4)
    times = torch.tensor([[0.0, 0.25, 0.75], [0.1, 0.6, 0.9]])
    n_cams = b * f if cams_per_frame else b
    cams = Cameras.from_spherical(torch.zeros(n_cams), torch.linspace(0, 90, n_cams), 1.8, size=size)
    out = r.render(cams, times, RenderRequest(background=torch.zeros(3), perturb=False))
    assert out.rgb.shape == (b, f, size, size, 3) and out.images().shape == (b, f, 3, size, size)
    assert out.opacity.shape == out.depth.shape == (b, f, size, size, 1)
    assert field.n_forward == 1  # all frames of all clips in one field call (spec §5.3)
    assert set(field.seen_times[0].unique().tolist()) <= set(times.flatten().tolist())
    centre = out.opacity[:, :, size // 2, size // 2, 0]
    # the ball exists only for τ < 0.5: frames (0,0), (0,1), (1,0) see it
    assert ((centre > 0.8) == (times < 0.5)).all() and (centre[times >= 0.5] == 0).all()
    # frame-major convention: clip b frame f uses camera b·F + f (or camera b), and its own time
    for bi in range(b):
        for fi in range(f):
            cam = cams[bi * f + fi] if cams_per_frame else cams[bi]
            single = r.render(cam, times[bi, fi : fi + 1], RenderRequest(background=torch.zeros(3), perturb=False))
            torch.testing.assert_close(single.rgb[0, 0], out.rgb[bi, fi], **EXACT)


def test_render_static_and_background_layouts():
    r = _renderer()
    cams = Cameras.from_spherical(torch.zeros(2), torch.tensor([0.0, 45.0]), 1.8, size=4)
    out = r.render(cams, None, RenderRequest(background=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), perturb=False))
    assert out.rgb.shape == (2, 1, 4, 4, 3)
    corner = out.rgb[:, 0, 0, 0]  # corner pixels miss the ball: pure per-clip background
    torch.testing.assert_close(corner, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError):
        r.render(cams, torch.zeros(2, 3)[:, :, None])  # times must be [F] or [B, F]


def test_shading_modes_hand_computed():
    field = SphereField()
    r = _renderer(field)
    o, d = _centre_ray()
    black = torch.zeros(3)
    base = r.render_rays(o, d, None, RenderRequest(background=black, perturb=False))
    op = base.opacity[0]
    albedo = torch.tensor(ALBEDO)
    assert field.n_normals == 0
    # textureless, a = 1: white·opacity, and no normals needed (spec §14.7)
    out = r.render_rays(o, d, None, RenderRequest(background=black, shading="textureless", ambient=1.0, perturb=False))
    torch.testing.assert_close(out.rgb[0], op.expand(3), **EXACT)
    assert field.n_normals == 0 and out.normals is None
    # lambertian, a = 1 ≡ albedo, still without normals
    out = r.render_rays(o, d, None, RenderRequest(background=black, shading="lambertian", ambient=1.0, perturb=False))
    torch.testing.assert_close(out.rgb, base.rgb, **EXACT)
    assert field.n_normals == 0
    # constant normal (1, 0, 0): light along +x → n·l = 1 → albedo; light along +y → n·l = 0 → a·albedo
    out = r.render_rays(o, d, None, RenderRequest(background=black, shading="lambertian", ambient=0.0,
                                                  light_dir=torch.tensor([2.0, 0.0, 0.0]), perturb=False))
    torch.testing.assert_close(out.rgb[0], albedo * op, **EXACT)
    assert field.n_normals == 1
    out = r.render_rays(o, d, None, RenderRequest(background=black, shading="lambertian", ambient=0.25,
                                                  light_dir=torch.tensor([0.0, 1.0, 0.0]), perturb=False))
    torch.testing.assert_close(out.rgb[0], 0.25 * albedo * op, **EXACT)
    # light at 60° from the normal: a + (1 − a)·cos 60° = 0.5 + 0.5·0.5 = 0.75 (textureless: grey)
    out = r.render_rays(o, d, None, RenderRequest(background=black, shading="textureless", ambient=0.5,
                                                  light_dir=torch.tensor([0.5, math.sqrt(3) / 2, 0.0]), perturb=False))
    torch.testing.assert_close(out.rgb[0], 0.75 * op.expand(3), **EXACT)
    # normal shading: (n + 1)/2 = (1, 0.5, 0.5); the normal image is the same, composited without background
    bg = torch.tensor([0.0, 0.0, 1.0])
    out = r.render_rays(o, d, None, RenderRequest(background=bg, shading="normal", perturb=False))
    nrm = torch.tensor([1.0, 0.5, 0.5])
    torch.testing.assert_close(out.rgb[0], nrm * op + (1 - op) * bg, **EXACT)
    torch.testing.assert_close(out.normals[0], nrm * op, **EXACT)
    assert out.sample_normals.shape == out.sample_dirs.shape
    with pytest.raises(ConfigError):
        r.render_rays(o, d, None, RenderRequest(shading="phong"))


def test_normals_only_when_needed():
    field = SphereField()
    r = _renderer(field)
    o, d = _centre_ray()
    r.render_rays(o, d)
    r.render_rays(o, d, None, RenderRequest(shading="lambertian", ambient=1.0))
    assert (field.n_forward, field.n_normals) == (2, 0)
    out = r.render_rays(o, d, need_normals=True)  # albedo colour, but normals for a regulariser
    assert field.n_normals == 1 and out.sample_normals is not None and out.normals is not None
    assert VolumeRenderer.normals_needed("lambertian", 0.3, None)
    assert not VolumeRenderer.normals_needed("lambertian", 0.3, False)
    with pytest.raises(ValueError):
        r.render_rays(o, d, None, RenderRequest(shading="normal"), need_normals=False)


def test_normal_image_uses_detached_weights():
    field = SphereField()
    r = _renderer(field)
    o, d = _centre_ray()
    out = r.render_rays(o, d, None, RenderRequest(shading="lambertian", ambient=0.1))
    out.normals.sum().backward()
    assert field.log_sigma.grad is None or field.log_sigma.grad == 0
    assert field.normal.grad is not None and field.normal.grad.abs().sum() > 0


def _conservative_update(r, radius=RADIUS):
    """Mark every cell the ball touches: the ball dilated by a cell diagonal (2·√3/16 at R = 16)."""
    grow = radius + 2 * math.sqrt(3) / r.occupancy.resolution
    r.occupancy.update(lambda x, t: (x.norm(dim=-1) < grow).float() * 100, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("alive_marching,shading,ambient", [
    (False, "normal", 1.0), (False, "albedo", 1.0), (True, "lambertian", 0.2), (True, "albedo", 1.0)])
def test_render_image_matches_render_and_chunks(alive_marching, shading, ambient):
    field = SphereField(dynamic=True)
    r = _renderer(field, slots=2, chunk_rays=40)  # 2·2·4·4 = 64 rays in 2 chunks
    _conservative_update(r)
    times = torch.tensor([0.0, 0.3])
    cams = Cameras.from_spherical(torch.tensor([0.0, 20.0]), torch.tensor([0.0, 30.0]), 1.8, size=4)
    request = RenderRequest(shading=shading, ambient=ambient, light_dir=torch.tensor([0.3, 1.0, 0.2]), perturb=False)
    full = r.render(cams, times.expand(2, 2), request)
    img = r.render_image(cams, times.expand(2, 2), request, alive_marching=alive_marching)
    assert img.rgb.shape == (2, 2, 4, 4, 3) and not img.rgb.requires_grad and img.rgb.device.type == "cpu"
    torch.testing.assert_close(img.rgb, full.rgb.detach(), **EXACT)
    torch.testing.assert_close(img.opacity, full.opacity.detach(), **EXACT)
    torch.testing.assert_close(img.depth, full.depth.detach(), **EXACT)
    assert (img.normals is None) == (full.normals is None)
    if full.normals is not None:
        torch.testing.assert_close(img.normals, full.normals.detach(), **EXACT)
    assert img.sample_weights is None


def test_alive_marching_stops_evaluating_opaque_rays():
    class Opaque(SphereField):
        points = 0

        def forward(self, x, t):
            self.points += x.shape[0]
            return super().forward(x, t)

    field = Opaque()
    with torch.no_grad():
        field.log_sigma.fill_(math.log(200.0))  # T < 1e-4 after ln(1e4)/200 = 0.046 of the 1.0 chord
    r = _renderer(field)
    _conservative_update(r)
    cams = reference_camera(1)  # the centre ray: 92 occupied samples, 13 evaluated until T < 1e-4 (measured)
    dense = r.render_image(cams, alive_marching=False)
    all_points, field.points = field.points, 0
    alive = r.render_image(cams, alive_marching=True)
    torch.testing.assert_close(alive.rgb, dense.rgb, **EXACT)
    assert field.points < all_points / 3, (field.points, all_points)


def test_occupancy_skipping_keeps_the_image_and_drops_samples():
    field = SphereField()
    r = _renderer(field)
    cams = reference_camera(8)
    dense = r.render(cams, None, RenderRequest(perturb=False))
    # a conservative update marks every cell the ball touches; one jittered point per cell of the true ball could
    # miss silhouette cells
    _conservative_update(r)
    assert r.occupancy.occupancy_ratio() < 0.2
    sparse = r.render(cams, None, RenderRequest(perturb=False))
    assert sparse.sample_weights.shape[0] < dense.sample_weights.shape[0] / 2
    torch.testing.assert_close(sparse.rgb, dense.rgb, atol=1e-5, rtol=0)


def test_backend_errors_on_cpu():
    o, d = _centre_ray()
    for backend in (RenderBackend.nerfacc, RenderBackend.cuda):
        r = _renderer(backend=backend)
        with pytest.raises(ConfigError, match="render.backend=auto"):
            r.render_rays(o, d)
    with pytest.raises(ConfigError):
        VolumeRenderer(SphereField(), OccupancyGrid(resolution=8, bound=2.0))


def test_sample_ray_indices_any_offset_order():
    # ray 0 owns samples 3..4, ray 1 none, ray 2 samples 0..2
    rays = torch.tensor([[3, 2], [5, 0], [0, 3]], dtype=torch.int32)
    assert sample_ray_indices(rays, 5).tolist() == [2, 2, 2, 0, 0]
    with pytest.raises(ValueError):
        sample_ray_indices(rays, 6)


def test_density_fn_drives_dynamic_occupancy():
    r = _renderer(SphereField(dynamic=True), slots=4)
    r.occupancy.update(r.density_fn, generator=torch.Generator().manual_seed(0))
    # the ball exists for τ < 0.5: slots 0, 1 (τ ∈ [0, 0.5]) hold it, slots 2, 3 are empty
    assert [r.occupancy.occupancy_ratio(k) > 0 for k in range(4)] == [True, True, False, False]
    out = r.render_rays(*_centre_ray(), times=torch.tensor([0.9]))
    assert out.sample_weights.shape == (0,) and out.opacity.item() == 0


def test_real_grid_field_static_to_dynamic_handoff():
    from animate124.config.schema import FieldConfig
    from animate124.fields import build_field, init_dynamic_from_static

    fcfg = FieldConfig(num_levels=4, base_resolution=4, max_resolution=32, log2_table_size=12, keyframes=4,
                       hidden_dim=16, init_scale=0.5)
    static = build_field(fcfg, dynamic=False)
    rs = _renderer(static, res=16)
    cams = reference_camera(6)
    lit = rs.render(cams, None, RenderRequest(shading="lambertian", ambient=0.3, light_dir=torch.tensor([1.0, 0.0, 0.0]), perturb=False))
    assert lit.opacity.max() > 0.5  # the blob is visible
    (lit.rgb.mean() + lit.normals.mean()).backward()
    assert all(p.grad is not None for p in static.parameters())
    ref = rs.render(cams, None, RenderRequest(perturb=False))
    dynamic = init_dynamic_from_static(static, fcfg)
    rd = _renderer(dynamic, slots=4, res=16)
    out = rd.render(cams, torch.tensor([0.0, 1.0]), RenderRequest(perturb=False))
    # the hand-off renders exactly like the static field at every τ
    for f in range(2):
        torch.testing.assert_close(out.rgb[0, f], ref.rgb[0, 0].detach(), atol=1e-5, rtol=0)
    # occupancy: every slot re-estimated with the dynamic field agrees with the static grid as well as a second,
    # independently jittered static estimate does (one jittered point per cell flips part of the threshold shell)
    rs.occupancy.update(rs.density_fn, generator=torch.Generator().manual_seed(0))
    again = OccupancyGrid(resolution=16)
    again.update(rs.density_fn, generator=torch.Generator().manual_seed(1))
    occ = OccupancyGrid.from_static(rs.occupancy, rd.density_fn, time_slots=4,
                                    generator=torch.Generator().manual_seed(2))

    def iou(a, b):
        return float((a & b).sum() / (a | b).sum())

    static_cells = rs.occupancy.occupied(0)
    iou_static = iou(again.occupied(0), static_cells)
    for k in range(4):
        assert iou(occ.occupied(k), static_cells) > iou_static - IOU_SLACK
