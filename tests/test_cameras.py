"""Cameras, rays and view sampling (render/cameras.py)."""

import math

import pytest
import torch

from animate124.render.cameras import (
    Cameras,
    c2w_to_spherical,
    get_rays,
    look_at,
    moving_trajectory,
    orbit,
    reference_camera,
    sample_random_views,
    spherical_to_c2w,
)

ATOL = 1e-5
"""float32 trig/normalisation round-off."""
ANGLE_ATOL = 1e-3
"""Degrees; asin/atan2 round trip in float32."""
STAT_TOL = 0.02
"""Monte-Carlo tolerance for means over 20,000 draws (std of a mean of U-like variables ~ 0.003)."""


def test_reference_camera_on_plus_x_looking_at_origin():
    cams = reference_camera(5)
    assert len(cams) == 1 and cams.height == 5 and cams.width == 5
    torch.testing.assert_close(cams.origins[0], torch.tensor([1.8, 0.0, 0.0]), atol=ATOL, rtol=0)
    torch.testing.assert_close(cams.fovy, torch.tensor([math.radians(40.0)]))
    origins, dirs = get_rays(cams)
    assert origins.shape == dirs.shape == (1, 5, 5, 3)
    # odd size: pixel (row 2, col 2) has its centre exactly on the principal point → the optical axis (−1, 0, 0)
    torch.testing.assert_close(dirs[0, 2, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=ATOL, rtol=0)
    # camera right = +y world (columns to the right look towards +y), camera up = +z (top row looks up)
    assert dirs[0, 2, 4, 1] > 0 and abs(dirs[0, 2, 4, 2]) < ATOL
    assert dirs[0, 0, 2, 2] > 0 and abs(dirs[0, 0, 2, 1]) < ATOL


def test_pixel_geometry_matches_focal():
    # H = W = 4, fovy 90° → f = 4 / (2·tan 45°) = 2; pixel (row 0, col 3): centre (3.5, 0.5) → camera-space
    # ((3.5 − 2)/2, −(0.5 − 2)/2, −1) = (0.75, 0.75, −1); reference camera: cam x → +y, cam y → +z, cam z → +x world
    cams = Cameras.from_spherical(0.0, 0.0, 1.8, size=4, fovy_deg=90.0)
    _, dirs = get_rays(cams)
    expected = torch.tensor([-1.0, 0.75, 0.75]) / math.sqrt(1 + 2 * 0.75**2)
    torch.testing.assert_close(dirs[0, 0, 3], expected, atol=ATOL, rtol=0)


def test_non_square_image():
    cams = Cameras.from_spherical(torch.tensor([10.0, 20.0]), torch.tensor([0.0, 90.0]), 2.0, size=(3, 6))
    origins, dirs = get_rays(cams)
    assert origins.shape == dirs.shape == (2, 3, 6, 3)


def test_c2w_spherical_round_trip_and_orthonormal():
    g = torch.Generator().manual_seed(1)
    elev = torch.rand(64, generator=g) * 170 - 85
    azim = torch.rand(64, generator=g) * 358 - 179
    rad = 1 + torch.rand(64, generator=g) * 2
    c2w = spherical_to_c2w(elev, azim, rad)
    e2, a2, r2 = c2w_to_spherical(c2w)
    torch.testing.assert_close(e2, elev, atol=ANGLE_ATOL, rtol=0)
    torch.testing.assert_close(a2, azim, atol=ANGLE_ATOL, rtol=0)
    torch.testing.assert_close(r2, rad, atol=ATOL, rtol=1e-6)
    rot = c2w[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(64, 3, 3), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(64), atol=ATOL, rtol=0)
    torch.testing.assert_close(c2w[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(64, 4))


@pytest.mark.parametrize("elev", [-60.0, 0.0, 30.0, 89.0, 120.0])
def test_spherical_matches_look_at(elev):
    azim = torch.tensor([-150.0, -30.0, 0.0, 75.0])
    c2w = spherical_to_c2w(torch.full((4,), elev), azim, 1.5)
    torch.testing.assert_close(look_at(c2w[:, :3, 3]), c2w, atol=ATOL, rtol=0)


def test_pole_is_well_defined():
    c2w = spherical_to_c2w(90.0, 0.0, 1.0)
    assert torch.isfinite(c2w).all()
    torch.testing.assert_close(c2w[0, :3, 2], torch.tensor([0.0, 0.0, 1.0]), atol=ATOL, rtol=0)
    assert torch.isfinite(look_at(torch.tensor([[0.0, 0.0, 2.0]]))).all()


def test_rays_unit_and_centre_ray_hits_origin():
    e, a, r = sample_random_views(8, generator=torch.Generator().manual_seed(0))
    cams = Cameras.from_spherical(e, a, r, size=7, fovy_deg=40.0)
    origins, dirs = get_rays(cams)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(8, 7, 7), atol=ATOL, rtol=0)
    o, d = origins[:, 3, 3], dirs[:, 3, 3]
    # the line o + t·d passes through 0 ⇔ o × d = 0, and it points towards the origin ⇔ o·d = −|o|
    torch.testing.assert_close(torch.cross(o, d, dim=-1), torch.zeros(8, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close((o * d).sum(-1), -o.norm(dim=-1), atol=1e-5, rtol=0)


def test_cameras_indexing_and_to():
    cams = Cameras.from_spherical(torch.tensor([0.0, 10.0, 20.0]), torch.tensor([0.0, 1.0, 2.0]), 1.8, size=8)
    assert len(cams[1]) == 1 and len(cams[0:2]) == 2 and len(cams[torch.tensor([0, 0, 2, 2])]) == 4
    torch.testing.assert_close(cams[2].c2w[0], cams.c2w[2])
    assert cams.to("cpu").device.type == "cpu"
    with pytest.raises(ValueError):
        Cameras(torch.eye(4).expand(2, 4, 4), torch.ones(3), 8, 8)


def test_sample_random_views_box_branch():
    e, a, r = sample_random_views(20000, torch.Generator().manual_seed(0), uniform_sphere_rate=0.0)
    assert e.shape == a.shape == r.shape == (20000,)
    assert e.min() >= -45 and e.max() <= 45 and a.min() >= -180 and a.max() < 180
    assert abs(e.mean()) < 1.0 and abs(a.mean()) < 4.0  # U(±45): std of mean 26/√20000 = 0.18
    torch.testing.assert_close(r, torch.full((20000,), 1.8))


def _diagonal_to_axis_ratio(azim):
    """Mass within ±15° of the diagonals (45°+k·90°) over mass within ±15° of the axes."""
    m = torch.remainder(azim, 90.0)
    near_diag = ((m - 45).abs() < 15).float().mean()
    near_axis = ((m < 15) | (m > 75)).float().mean()
    return float(near_diag / near_axis)


def test_sample_random_views_sphere_branch_is_the_originals_nonuniform_draw():
    g = torch.Generator().manual_seed(0)
    e, a, _ = sample_random_views(20000, g, uniform_sphere_rate=1.0)
    assert e.min() >= 0 and e.max() <= 90  # upper hemisphere only (spec §14.20)
    # a normalised cube sample is denser towards the cube's diagonals: for a fixed z the (x, y) direction density is
    # ∝ r_max(φ)², which is 2× larger at the diagonals than on the axes
    assert _diagonal_to_axis_ratio(a) > 1.3
    eu, au, _ = sample_random_views(20000, g, uniform_sphere_rate=1.0, uniform_hemisphere=True)
    assert eu.min() >= 0 and eu.max() <= 90
    assert abs(_diagonal_to_axis_ratio(au) - 1.0) < 0.1
    # uniform on the hemisphere ⇔ sin(elevation) ~ U(0, 1): mean 0.5
    assert abs(torch.sin(torch.deg2rad(eu)).mean() - 0.5) < STAT_TOL


def test_sample_random_views_mixture_rate():
    e, _, _ = sample_random_views(20000, torch.Generator().manual_seed(3), uniform_sphere_rate=0.5)
    # box branch: P(e > 45) = 0; sphere branch: P(e > 45) = P(z > |(x, y, z)|·sin45°) > 0; box branch P(e < 0) = 1/2
    assert abs((e < 0).float().mean() - 0.25) < STAT_TOL


def test_moving_trajectory_linear_in_frame_index():
    g = torch.Generator().manual_seed(0)
    e, a, r, moving = moving_trajectory(16, g, dynamic_cam_rate=1.0)
    assert moving and e.shape == a.shape == r.shape == (16,)
    de = (e[1] - e[0]) * 16  # frame i at e0 + (i/16)·Δe
    torch.testing.assert_close(e, e[0] + torch.arange(16) / 16 * de, atol=1e-4, rtol=0)
    assert abs(de) <= 45 + 1e-3
    da = torch.remainder(a[1] - a[0] + 180, 360) - 180
    assert abs(da * 16) <= 90 + 1e-3
    torch.testing.assert_close(r, torch.full((16,), 1.8))
    e0, a0, _, moving0 = moving_trajectory(16, g, dynamic_cam_rate=0.0)
    assert not moving0 and torch.all(e0 == e0[0]) and torch.all(a0 == a0[0])


def test_moving_rate_statistics():
    g = torch.Generator().manual_seed(5)
    n_moving = sum(moving_trajectory(4, g, dynamic_cam_rate=0.9)[3] for _ in range(2000))
    assert abs(n_moving / 2000 - 0.9) < STAT_TOL


def test_orbit():
    e, a, r = orbit(4, elevation=15.0, radius=2.0, start_azimuth=10.0)
    torch.testing.assert_close(a, torch.tensor([10.0, 100.0, -170.0, -80.0]))
    torch.testing.assert_close(e, torch.full((4,), 15.0))
    torch.testing.assert_close(r, torch.full((4,), 2.0))
