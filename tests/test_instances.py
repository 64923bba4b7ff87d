"""Render-time scene editing (render/instances.py): several placed copies composited in one volume render."""

import math

import torch
from _export_toys import BlobField, fast_render_cfg, full_occupancy, toy_field
from torch import nn

from animate124.render.cameras import Cameras
from animate124.render.instances import Instance, InstancesRenderer, euler_to_matrix, wrap_time
from animate124.render.volume import VolumeRenderer
from animate124.types import FieldOutput, RenderRequest

EXACT = 1e-6  # same samples, same compositing: only float re-association differences
DISCRETISATION = 0.02  # two sample lattices (world vs instance frames) of a smooth field, dt ≈ 2√3/384 per frame


def _cams(size=12, azimuth=0.0, elevation=10.0, radius=3.0):
    return Cameras.from_spherical(torch.tensor([elevation]), torch.tensor([azimuth]), radius, size, 45.0)


def test_euler_and_wrap_hand_cases():
    # 90° about z maps +x to +y
    torch.testing.assert_close(euler_to_matrix([0, 0, 90]) @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]),
                               atol=1e-6, rtol=0)
    # Rz·Ry·Rx: 90° about x then 90° about z maps +y → +z → +z
    torch.testing.assert_close(euler_to_matrix([90, 0, 90]) @ torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 1]),
                               atol=1e-6, rtol=0)
    tau = torch.tensor([0.0, 0.5, 1.0, 1.25, -0.25, 2.0])
    torch.testing.assert_close(wrap_time(tau, "loop"), torch.tensor([0.0, 0.5, 1.0, 0.25, 0.75, 1.0]))
    torch.testing.assert_close(wrap_time(tau, "pingpong"), torch.tensor([0.0, 0.5, 1.0, 0.75, 0.25, 0.0]))
    torch.testing.assert_close(wrap_time(tau, "clamp"), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0, 1.0]))


def test_identity_instance_equals_volume_renderer_and_far_copy_changes_nothing():
    field, occ, cfg = toy_field(), full_occupancy(), fast_render_cfg()
    cams, times = _cams(), torch.tensor([0.4])
    single = VolumeRenderer(field, occ, cfg).render_image(cams, times)
    alone = InstancesRenderer([Instance(field, occ)], cfg).render_image(cams, times)
    far = Instance(field, occ, translation=torch.tensor([0.0, 50.0, 0.0]))  # out of view
    both = InstancesRenderer([Instance(field, occ), far], cfg).render_image(cams, times)
    assert single.opacity.max() > 0.5  # the object is in view
    for out in (alone, both):
        torch.testing.assert_close(out.rgb, single.rgb, atol=EXACT, rtol=0)
        torch.testing.assert_close(out.opacity, single.opacity, atol=EXACT, rtol=0)
        torch.testing.assert_close(out.depth, single.depth, atol=EXACT, rtol=0)


class _Combined(nn.Module):
    """World-space field equal to the placed instances: σ_w(x) = Σ_i σ(x_l,i, τ_i)/s_i · [x_l,i inside the instance's
    cube [−1, 1]³] (an object lives in its box), albedo density-weighted."""

    is_dynamic = True
    bound = 1.0

    def __init__(self, base, placements):
        super().__init__()
        self.base, self.placements = base, placements

    def forward(self, x, t=None):
        dens, col = 0.0, 0.0
        for rot, trans, scale, offset in self.placements:
            xl = ((x - trans) @ rot) / scale
            out = self.base(xl, wrap_time(offset + t, "loop"))
            inside = (xl.abs() <= 1.0).all(-1)
            d = torch.where(inside, out.density / scale, torch.zeros_like(out.density))
            dens = dens + d
            col = col + d[:, None] * out.albedo
        return FieldOutput(density=dens, albedo=col / torch.as_tensor(dens).clamp_min(1e-8)[:, None])

    def density(self, x, t=None):
        return self.forward(x, t).density


def test_two_instances_equal_hand_built_combined_field():
    base = BlobField([[0.0, 0.0, 0.0]], [[0.9, 0.2, 0.1]], radius=0.3, amplitude=30.0, motion=0.4)
    rot = euler_to_matrix([0, 0, 30])
    placements = [
        (torch.eye(3), torch.tensor([0.0, -0.45, 0.0]), 0.5, 0.0),
        (rot, torch.tensor([0.1, 0.45, 0.05]), 0.4, 0.5),  # rotated, smaller, half a cycle later
    ]
    cfg = fast_render_cfg(max_steps=384)
    occ = full_occupancy()
    instances = [Instance(base, occ, r, t, s, time_offset=o) for r, t, s, o in placements]
    cams = Cameras.from_spherical(torch.tensor([0.0, 20.0]), torch.tensor([0.0, 60.0]), 2.5, 16, 50.0)
    times = torch.tensor([0.2, 0.7])
    ours = InstancesRenderer(instances, cfg).render_image(cams, times)
    ref = VolumeRenderer(_Combined(base, placements), full_occupancy(), cfg).render_image(cams, times)
    assert ref.opacity.max() > 0.5 and ref.opacity.min() < 0.05  # both objects and background are in view
    assert (ref.rgb - 1.0).abs().max() > 0.3  # coloured pixels exist
    torch.testing.assert_close(ours.rgb, ref.rgb, atol=DISCRETISATION, rtol=0)
    torch.testing.assert_close(ours.opacity, ref.opacity, atol=DISCRETISATION, rtol=0)


def test_front_copy_occludes_back_copy():
    # camera on +x looking at the origin: a blue copy at x = +0.5 (front) hides a red copy at x = −0.5 (behind)
    red = BlobField([[0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], radius=0.25, amplitude=200.0, motion=0.0)
    blue = BlobField([[0.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]], radius=0.25, amplitude=200.0, motion=0.0)
    occ, cfg = full_occupancy(), fast_render_cfg(max_steps=256)
    cams = Cameras.from_spherical(torch.tensor([0.0]), torch.tensor([0.0]), 3.0, 9, 30.0)
    insts = [Instance(red, occ, translation=torch.tensor([-0.5, 0.0, 0.0]), scale=0.5),
             Instance(blue, occ, translation=torch.tensor([0.5, 0.0, 0.0]), scale=0.5)]
    centre = InstancesRenderer(insts, cfg).render_image(cams, torch.tensor([0.0])).rgb[0, 0, 4, 4]
    assert centre[2] > 0.95 and centre[0] < 0.05
    # the centre depth is the front copy's surface: world blob σ_w = 400·exp(−r²/(2·0.125²)) has optical depth
    # 400·0.125·√(2π)·Φ(x/0.125) = 125·Φ; it reaches ~1 at Φ ≈ 0.008, x ≈ −2.4·0.125 = −0.3, so depth ≈ 2.5 − 0.3
    # = 2.2 (the back copy would give ≈ 3.2)
    depth = InstancesRenderer(insts, cfg).render_image(cams, torch.tensor([0.0])).depth[0, 0, 4, 4, 0]
    assert 2.1 < float(depth) < 2.4


def test_scale_keeps_opacity_of_a_sample():
    # σ_w·dt_w = (σ/s)·(s·dt): a scaled copy seen through its centre has the same optical depth as the original
    field, occ, cfg = toy_field(), full_occupancy(), fast_render_cfg(max_steps=256)
    cam = Cameras.from_spherical(torch.tensor([0.0]), torch.tensor([0.0]), 3.0, 1, 1.0)  # one central ray
    base = InstancesRenderer([Instance(field, occ)], cfg).render_image(cam, torch.tensor([0.0]))
    half = InstancesRenderer([Instance(field, occ, scale=0.5)], cfg).render_image(cam, torch.tensor([0.0]))
    torch.testing.assert_close(half.opacity, base.opacity, atol=1e-3, rtol=0)
    assert math.isclose(float(half.rgb[..., 0]), float(base.rgb[..., 0]), abs_tol=1e-3)


def test_shading_matches_volume_renderer_and_normals_rotate_with_the_instance():
    field, occ, cfg = toy_field(), full_occupancy(), fast_render_cfg()
    cams, times = _cams(), torch.tensor([0.3])
    for shading, ambient in (("lambertian", 0.3), ("textureless", 0.2), ("normal", 1.0)):
        ref = VolumeRenderer(field, occ, cfg).render_image(cams, times, RenderRequest(shading=shading, ambient=ambient))
        ours = InstancesRenderer([Instance(field, occ)], cfg).render_image(cams, times, RenderRequest(shading=shading, ambient=ambient))
        torch.testing.assert_close(ours.rgb, ref.rgb, atol=EXACT, rtol=0)
    # rotating the object and the camera by the same 90° about z gives the same picture, with normals rotated:
    # on a black background img = Σ w (n + 1)/2, so Σ w n = 2·img − acc must satisfy Σ w n_rot = R·(Σ w n)
    rot, black = euler_to_matrix([0, 0, 90]), torch.zeros(3)
    base = InstancesRenderer([Instance(field, occ)], cfg).render_image(_cams(azimuth=0.0), times,
                                                                                 RenderRequest(black, "normal"))
    turned = InstancesRenderer([Instance(field, occ, rotation=rot)], cfg).render_image(_cams(azimuth=90.0), times,
                                                                                        RenderRequest(black, "normal"))
    torch.testing.assert_close(turned.opacity, base.opacity, atol=1e-4, rtol=0)
    n0 = 2 * base.rgb - base.opacity
    n1 = 2 * turned.rgb - turned.opacity
    assert base.opacity.max() > 0.5
    torch.testing.assert_close(n1, n0 @ rot.T, atol=1e-3, rtol=0)
