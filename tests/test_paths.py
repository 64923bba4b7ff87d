"""Camera paths and time control (render/paths.py): hand cases."""

import json

import pytest
import torch

from animate124.errors import InputError
from animate124.render.cameras import c2w_to_spherical, spherical_to_c2w
from animate124.render.paths import (
    catmull_rom,
    dnerf_path,
    fixed_paths,
    keyframe_path,
    matrix_to_quaternion,
    orbit_path,
    quaternion_to_matrix,
    read_path_file,
    slerp,
    spiral_path,
    time_schedule,
    turntable_path,
)

ATOL = 1e-5  # float32 trigonometry on angles up to 360°


def _az(path):
    return c2w_to_spherical(path.cameras.c2w)[1]


def test_orbit_n_frames_time_even_and_full_turn():
    n = 8
    path = orbit_path(n, time_schedule(n), elevation=0.0, size=32)
    assert len(path) == n and path.times.shape == (n,)
    # τ_k = k/7 for k = 0..7: evenly over [0, 1] with both ends
    torch.testing.assert_close(path.times, torch.arange(8, dtype=torch.float32) / 7)
    # azimuth_k = 360·k/8 = 0, 45, ..., 315 (wrapped to (−180, 180] by c2w_to_spherical)
    expected = torch.tensor([0.0, 45, 90, 135, 180, -135, -90, -45])
    az = _az(path)
    diff = torch.remainder(az - expected + 180.0, 360.0) - 180.0
    assert diff.abs().max() < 1e-3
    # camera 2 sits at azimuth 90°: position r·(0, 1, 0) with r = 1.8
    torch.testing.assert_close(path.cameras.origins[2], torch.tensor([0.0, 1.8, 0.0]), atol=ATOL, rtol=0)


def test_time_schedule_hand_cases():
    # speed 1, forward: 0, .25, .5, .75, 1
    torch.testing.assert_close(time_schedule(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    # speed 2, forward: playhead p = 0, .5, 1, 1.5, 2 → 0, .5, 1, .5, 1 (second pass restarts)
    torch.testing.assert_close(time_schedule(5, speed=2.0), torch.tensor([0.0, 0.5, 1.0, 0.5, 1.0]))
    # speed 2, pingpong: 0, .5, 1, .5, 0
    torch.testing.assert_close(time_schedule(5, loop="pingpong", speed=2.0), torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0]))
    # start .2, end .6, speed 1: .2 + .4·k/4 = .2, .3, .4, .5, .6
    torch.testing.assert_close(time_schedule(5, start=0.2, end=0.6), torch.tensor([0.2, 0.3, 0.4, 0.5, 0.6]))
    # reversed: start 1, end 0 over 3 frames: 1, .5, 0
    torch.testing.assert_close(time_schedule(3, start=1.0, end=0.0), torch.tensor([1.0, 0.5, 0.0]))
    # pingpong speed 3 over 4 frames: p = 0, 1, 2, 3 → 0, 1, 0, 1 (start .5, end 1 → .5, 1, .5, 1)
    torch.testing.assert_close(time_schedule(4, start=0.5, loop="pingpong", speed=3.0),
                               torch.tensor([0.5, 1.0, 0.5, 1.0]))
    assert time_schedule(1).tolist() == [0.0]
    with pytest.raises(InputError):
        time_schedule(4, loop="bounce")
    with pytest.raises(InputError):
        time_schedule(4, start=1.5)


def test_turntable_freezes_time_and_fixed_views():
    path = turntable_path(6, time=0.3, size=16)
    assert torch.all(path.times == 0.3)
    views = fixed_paths(4, time_schedule(4), views=[[0, 0], [30, 90, 2.5]], size=16)
    assert len(views) == 2
    e, a, r = c2w_to_spherical(views[1].cameras.c2w)
    torch.testing.assert_close(e, torch.full((4,), 30.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(a, torch.full((4,), 90.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(r, torch.full((4,), 2.5))


def test_spiral_elevation_range_and_loop():
    path = spiral_path(8, time_schedule(8), elevation_range=(-10.0, 30.0), turns=1.0, size=16)
    e = c2w_to_spherical(path.cameras.c2w)[0]
    # e_k = -10 + 40·(1 − cos(2πk/8))/2: k=0 → −10, k=4 → 30, k=2 → 10
    torch.testing.assert_close(e[[0, 2, 4]], torch.tensor([-10.0, 10.0, 30.0]), atol=1e-3, rtol=0)


def test_catmull_rom_passes_through_knots_and_is_linear_on_lines():
    knots = torch.tensor([0.0, 0.3, 0.5, 1.0], dtype=torch.float64)
    values = torch.tensor([[0.0], [3.0], [-1.0], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(catmull_rom(values, knots, knots), values)
    # values on a line with uniform knots → the spline is that line (interior segment, uniform CR reproduces lines)
    k = torch.linspace(0, 1, 4, dtype=torch.float64)
    q = torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64)
    torch.testing.assert_close(catmull_rom(3 * k[:, None], k, q)[:, 0], 3 * q)


def test_quaternion_round_trip_and_slerp_midpoint():
    c2w = spherical_to_c2w(torch.tensor([10.0, -40.0, 80.0, 0.0]), torch.tensor([0.0, 200.0, 45.0, 180.0]),
                           1.0).double()
    rot = c2w[:, :3, :3]
    # float32 rotations are orthonormal to ~1e-7, so the round trip holds to that
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(rot)), rot, atol=1e-6, rtol=0)
    # slerp between identity and a 90° rotation about z at s = .5 → 45° about z: q = (cos 22.5°, 0, 0, sin 22.5°)
    q0 = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    q1 = torch.tensor([[0.5**0.5, 0, 0, 0.5**0.5]], dtype=torch.float64)
    mid = slerp(q0, q1, torch.tensor([0.5], dtype=torch.float64))
    c, s = torch.cos(torch.tensor(torch.pi / 8)), torch.sin(torch.tensor(torch.pi / 8))
    torch.testing.assert_close(mid, torch.tensor([[c, 0, 0, s]], dtype=torch.float64))


def test_keyframe_spherical_passes_through_keyframes():
    spec = {"keyframes": [
        {"elevation": 0, "azimuth": 0, "radius": 2.0, "time": 0.0, "fov": 30},
        {"elevation": 20, "azimuth": 90, "radius": 2.5, "time": 0.5, "fov": 40},
        {"elevation": 10, "azimuth": 180, "radius": 2.0, "time": 1.0, "fov": 50},
    ]}
    n = 9  # frames at u = k/8; keyframes (evenly spaced knots 0, .5, 1) sit at frames 0, 4, 8
    path = keyframe_path(spec, n, time_schedule(n), size=16)
    e, a, r = c2w_to_spherical(path.cameras.c2w)
    torch.testing.assert_close(e[[0, 4, 8]], torch.tensor([0.0, 20.0, 10.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(a[[0, 4]], torch.tensor([0.0, 90.0]), atol=1e-3, rtol=0)
    assert abs(abs(float(a[8])) - 180.0) < 1e-3
    torch.testing.assert_close(r[[0, 4, 8]], torch.tensor([2.0, 2.5, 2.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(path.times[[0, 4, 8]], torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(torch.rad2deg(path.cameras.fovy[[0, 4, 8]]), torch.tensor([30.0, 40.0, 50.0]),
                               atol=1e-4, rtol=0)
    # in between, the azimuth increases monotonically (no wrap-around jumps)
    a_unwrapped = torch.remainder(a, 360.0)
    assert bool((a_unwrapped[1:] > a_unwrapped[:-1]).all())


def test_keyframe_c2w_slerp_and_explicit_t():
    c2w = spherical_to_c2w(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 120.0]), torch.tensor([1.8, 2.2]))
    spec = {"keyframes": [{"c2w": c2w[0].tolist(), "t": 0.0}, {"c2w": c2w[1, :3].tolist(), "t": 1.0}]}
    path = keyframe_path(spec, 5, time_schedule(5, start=0.2, end=0.2), size=(16, 24))
    torch.testing.assert_close(path.cameras.c2w[0], c2w[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(path.cameras.c2w[-1], c2w[1], atol=1e-5, rtol=0)
    assert (path.cameras.height, path.cameras.width) == (16, 24)
    assert torch.all(path.times == 0.2)  # no keyframe times → the schedule
    rot = path.cameras.c2w[:, :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5, rtol=0)


def test_keyframe_errors():
    with pytest.raises(InputError):
        keyframe_path({"keyframes": []}, 4, time_schedule(4))
    with pytest.raises(InputError):
        keyframe_path({"keyframes": [{"t": 0.5}, {"t": 0.2}]}, 4, time_schedule(4))
    with pytest.raises(InputError):
        keyframe_path({"keyframes": [{"c2w": torch.eye(4).tolist()}, {"azimuth": 3}]}, 4, time_schedule(4))


def test_dnerf_file(tmp_path):
    c2w = spherical_to_c2w(torch.tensor([0.0, 10.0, 20.0]), torch.tensor([0.0, 50.0, 100.0]), 4.0)
    spec = {"camera_angle_x": 0.69, "frames": [
        {"file_path": f"./r_{i}", "time": t, "transform_matrix": c2w[i].tolist()} for i, t in enumerate([0.0, 0.5, 1.0])
    ]}
    f = tmp_path / "transforms.json"
    f.write_text(json.dumps(spec))
    loaded = read_path_file(f)
    path = dnerf_path(loaded, size=(20, 40))
    assert len(path) == 3 and (path.cameras.height, path.cameras.width) == (20, 40)
    torch.testing.assert_close(path.times, torch.tensor([0.0, 0.5, 1.0]))
    # fovy = 2·atan(tan(0.69/2)·20/40)
    expected = 2 * torch.atan(torch.tan(torch.tensor(0.345)) * 0.5)
    torch.testing.assert_close(path.cameras.fovy, expected.expand(3))
    spec["h"], spec["w"] = 8, 8
    assert dnerf_path(spec, size=None).cameras.height == 8
    with pytest.raises(InputError):
        dnerf_path({"camera_angle_x": 0.5, "frames": []}, size=8)
    with pytest.raises(InputError):
        dnerf_path({"camera_angle_x": 0.5, "frames": spec["frames"]}, size=None)
    with pytest.raises(InputError):
        read_path_file(tmp_path / "missing.json")
