"""Time-sliced occupancy grid (render/occupancy.py)."""

import math

import pytest
import torch

from animate124 import ops
from animate124.errors import ConfigError
from animate124.render.occupancy import OccupancyGrid

EXACT = dict(atol=1e-6, rtol=1e-6)
"""Decay arithmetic in float32 (a few roundings)."""


def _sphere_density(centre, radius, value=100.0):
    c = torch.tensor(centre)

    def fn(x, t):
        return torch.where((x - c).norm(dim=-1) < radius, value, 0.0)

    return fn


def _cell_centres_xyz(res, bound=1.0):
    """[R, R, R, 3] world centre of cell (x, y, z)."""
    ax = (torch.arange(res) + 0.5) * (2 * bound / res) - bound
    return torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)


def test_slots_and_slot_centres():
    occ = OccupancyGrid(resolution=4, time_slots=16)
    # floor(τ·16): 0 → 0; 0.999·16 = 15.98 → 15; 1.0·16 = 16 → clamped to 15; 1/16 → 1; 0.5 → 8; −0.1 → 0
    times = torch.tensor([0.0, 0.999, 1.0, 1 / 16, 0.5, -0.1])
    assert occ.slots_of(times).tolist() == [0, 15, 15, 1, 8, 0]
    assert occ.slots_of(times).dtype == torch.int64
    # (k + 0.5)/16: 0.03125, 0.09375, ..., 0.96875 (not all 0.5: spec §14.1)
    torch.testing.assert_close(occ.slot_times, (torch.arange(16) + 0.5) / 16)
    assert occ.slot_times[0] == 0.03125 and occ.slot_times[-1] == 0.96875


def test_starts_fully_occupied():
    occ = OccupancyGrid(resolution=8, time_slots=2)
    assert occ.grid.shape == (2, 512) and occ.bitfield.shape == (2, 64) and occ.bitfield.dtype == torch.uint8
    assert occ.occupancy_ratio() == 1.0 and occ.occupied(1).all()


def test_invalid_settings():
    with pytest.raises(ConfigError):
        OccupancyGrid(resolution=12)
    with pytest.raises(ConfigError):
        OccupancyGrid(resolution=8, time_slots=0)
    with pytest.raises(ConfigError):
        OccupancyGrid(resolution=8, update_fraction=0.0)


def test_sphere_update_marks_the_sphere_cells():
    res, centre, radius = 16, (0.3, -0.2, 0.1), 0.25
    occ = OccupancyGrid(resolution=res, time_slots=1)
    calls = []

    def fn(x, t):
        calls.append((x.shape[0], t))
        return _sphere_density(centre, radius)(x, t)

    occ.update(fn, generator=torch.Generator().manual_seed(0))
    assert calls == [(res**3, None)]  # static grid: one full pass, t = None
    dist = (_cell_centres_xyz(res) - torch.tensor(centre)).norm(dim=-1)
    half_diag = math.sqrt(3) * (1.0 / res)  # cell edge 2/16 = 0.125 → half diagonal 0.108
    occupied = occ.occupied(0)
    # a jittered point inside the cell can only be in the sphere if the cell centre is within r + half-diagonal;
    # a cell whose centre is within r − half-diagonal lies entirely inside the sphere
    assert not occupied[dist > radius + half_diag].any()
    assert occupied[dist < radius - half_diag].all()
    centre_cell = tuple(int((c + 1) / 2 * res) for c in centre)
    assert occupied[centre_cell]
    assert 0 < occ.occupancy_ratio() < 0.05
    # mean_density = 100 × (fraction of cells whose sample fell inside); threshold = min(mean, 10)
    frac = float((occ.grid[0] > 0).float().mean())
    torch.testing.assert_close(occ.mean_density, torch.tensor([100.0 * frac]))
    torch.testing.assert_close(occ.thresholds(), occ.mean_density.clamp(max=10.0))
    # the bitfield is packbits(grid > threshold) in Morton order
    torch.testing.assert_close(occ.bitfield, ops.packbits(occ.grid, occ.thresholds()))


def test_ema_max_decay_arithmetic():
    occ = OccupancyGrid(resolution=4, time_slots=1, decay=0.95, density_thresh=10.0)
    occ.update(lambda x, t: torch.full((x.shape[0],), 10.0))
    torch.testing.assert_close(occ.grid, torch.full((1, 64), 10.0))  # max(0·0.95, 10)
    # threshold = min(mean 10, 10) = 10 and 10 > 10 is false: nothing occupied (the original's strict >)
    assert occ.occupancy_ratio() == 0.0
    occ.update(lambda x, t: torch.full((x.shape[0],), 2.0))
    torch.testing.assert_close(occ.grid, torch.full((1, 64), 9.5), **EXACT)  # max(10·0.95, 2)
    occ.update(lambda x, t: torch.zeros(x.shape[0]))
    torch.testing.assert_close(occ.grid, torch.full((1, 64), 9.025), **EXACT)  # 9.5·0.95
    occ.update(lambda x, t: torch.where(x[:, 0] >= 0, 20.0, 0.0))
    # x ≥ 0 half (cells x ∈ {2, 3}, jitter stays inside the cell): 20; other half: 9.025·0.95 = 8.57375
    pos = ops.morton3d_invert(torch.arange(64))[:, 0] >= 2
    torch.testing.assert_close(occ.grid[0, pos], torch.full((32,), 20.0))
    torch.testing.assert_close(occ.grid[0, ~pos], torch.full((32,), 8.57375), **EXACT)
    # mean = (32·20 + 32·8.57375)/64 = 14.286875 → threshold min(14.29, 10) = 10 → exactly the x ≥ 0 half
    torch.testing.assert_close(occ.mean_density, torch.tensor([14.286875]), **EXACT)
    assert occ.occupancy_ratio() == 0.5
    assert occ.occupied(0)[2:].all() and not occ.occupied(0)[:2].any()


def test_dynamic_slots_sample_their_own_times():
    s = 4
    occ = OccupancyGrid(resolution=8, time_slots=s)
    seen = []

    def fn(x, t):
        seen.append(t.clone())
        inside = x.norm(dim=-1) < 0.5
        return torch.where(inside & (t < 0.5), 100.0, 0.0)

    occ.update(fn, generator=torch.Generator().manual_seed(0))
    assert len(seen) == s
    for k, t in enumerate(seen):  # slot k: τ ∈ (k + 0.5)/S ± 0.5/S = [k/S, (k+1)/S]
        assert t.min() >= k / s and t.max() <= (k + 1) / s
        assert abs(float(t.mean()) - (k + 0.5) / s) < 0.01
    assert occ.occupancy_ratio(0) > 0 and occ.occupancy_ratio(1) > 0
    assert occ.occupancy_ratio(2) == 0 and occ.occupancy_ratio(3) == 0


def test_partial_update_evaluates_subset_plus_occupied():
    res = 16
    occ = OccupancyGrid(resolution=res, update_fraction=0.1)
    counts = []

    def fn(x, t):
        counts.append(x.shape[0])
        return _sphere_density((0.0, 0.0, 0.0), 0.3)(x, t)

    occ.update(fn, generator=torch.Generator().manual_seed(0))
    assert counts == [res**3]  # the first update is always complete
    n_occ = int((occ.grid[0] > occ.thresholds()[0]).sum())
    before = occ.grid.clone()
    occ.update(fn, generator=torch.Generator().manual_seed(1))
    assert n_occ <= counts[1] <= int(0.1 * res**3) + n_occ
    # cells not evaluated keep their value (no decay); evaluated ones are max(old·0.95, new) ≥ old·0.95
    changed = occ.grid[0] != before[0]
    assert int(changed.sum()) <= counts[1]
    assert (occ.grid[0] >= before[0] * 0.95 - 1e-6).all()


def test_state_dict_round_trip():
    occ = OccupancyGrid(resolution=8, time_slots=3)
    occ.update(_sphere_density((0.0, 0.0, 0.0), 0.4), generator=torch.Generator().manual_seed(0))
    sd = occ.state_dict()
    assert set(sd) == {"grid", "bitfield", "mean_density", "num_updates"}  # slot_times derived, not stored
    fresh = OccupancyGrid(resolution=8, time_slots=3)
    fresh.load_state_dict(sd)
    for name in sd:
        torch.testing.assert_close(getattr(fresh, name), getattr(occ, name))
    with pytest.raises(RuntimeError):
        OccupancyGrid(resolution=8, time_slots=4).load_state_dict(sd)


def test_from_static_reestimates_each_slot():
    static = OccupancyGrid(resolution=8, time_slots=1, decay=0.9, density_thresh=5.0)
    static.update(_sphere_density((0.0, 0.0, 0.0), 0.5))
    ts = []

    def dyn(x, t):
        ts.append(t)
        return torch.where((x.norm(dim=-1) < 0.5) & (t > 0.75), 100.0, 0.0)

    grid = OccupancyGrid.from_static(static, dyn, time_slots=4, generator=torch.Generator().manual_seed(0))
    assert grid.time_slots == 4 and grid.decay == 0.9 and grid.density_thresh == 5.0
    assert all(t is not None for t in ts) and len(ts) == 4
    # only the last slot (τ ∈ [0.75, 1]) sees the sphere: the slots were estimated at their own times, not copied
    assert [grid.occupancy_ratio(k) > 0 for k in range(4)] == [False, False, False, True]


def test_maybe_update_interval():
    occ = OccupancyGrid(resolution=4)
    fn = lambda x, t: torch.ones(x.shape[0])  # noqa: E731
    ran = [occ.maybe_update(step, 16, fn) for step in (0, 1, 15, 16, 17, 32)]
    assert ran == [True, False, False, True, False, True] and int(occ.num_updates) == 3
    assert not occ.maybe_update(0, 0, fn)  # interval 0 disables refreshes
