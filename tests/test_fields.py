"""Radiance fields: shapes, blob, trunc_exp, normals, coarse-to-fine mask, param groups, static→dynamic hand-off."""

import dataclasses
import math
import time

import pytest
import torch

from animate124.config.schema import FieldConfig, FieldKind
from animate124.errors import CheckpointError
from animate124.fields import (
    GridEncoding,
    GridField,
    Hash4DEncoding,
    build_field,
    init_dynamic_from_static,
    load_field_state,
    trunc_exp,
)
from animate124.ops import grid_encode, grid_layout

NORMAL_ATOL = 1e-2  # central differences with ε = 1e-2 on a Gaussian of std 0.2: O(ε²/σ²) ≈ 3e-3 direction error
SAME_ATOL = 1e-6  # the dynamic field at any τ vs the static field it was copied from (fp32 rounding of the lerp)

TINY = FieldConfig(num_levels=4, max_resolution=32, log2_table_size=10, keyframes=4, log2_table_size_4d=10,
                   time_resolution_4d=8)


def _points(n=64):
    return torch.rand(n, 3) * 2 - 1


def test_shapes_and_dtypes():
    for dynamic, kind in [(False, FieldKind.keyframe_grid), (True, FieldKind.keyframe_grid), (True, FieldKind.hash4d)]:
        field = build_field(dataclasses.replace(TINY, kind=kind), dynamic)
        out = field(_points(), torch.rand(64))
        assert out.density.shape == (64,) and out.albedo.shape == (64, 3)
        assert out.density.dtype == torch.float32 and bool((out.density >= 0).all())
        assert bool(((out.albedo > 0) & (out.albedo < 1)).all())
        assert field.is_dynamic == dynamic
        assert field.density(_points(5), torch.rand(5)).shape == (5,)
    static = build_field(TINY, False)
    assert static.encoding.embeddings.shape == (1, int(grid_layout("tiled", 4, 16, 32, 10, 3)[0][-1]), 2)
    assert build_field(TINY, True).encoding.embeddings.shape[0] == 4
    with pytest.raises(ValueError, match="needs t"):
        build_field(TINY, True)(_points())
    static(_points())  # a static field ignores (and does not need) t


def test_blob_value_at_origin():
    # MLP output zeroed -> raw = 0: σ(0) = exp(0 + 10·e^0) = e^10; at |x| = 0.2: exp(10·e^(−0.04/0.08)) = exp(10·e^−0.5)
    field = build_field(TINY, False)
    with torch.no_grad():
        field.mlp[2].weight.zero_()
        field.mlp[2].bias.zero_()
    sig = field.density(torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]))
    torch.testing.assert_close(sig, torch.tensor([math.exp(10.0), math.exp(10.0 * math.exp(-0.5))]))


def test_trunc_exp_backward_clamp():
    x = torch.tensor([1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), torch.exp(torch.tensor([1.0, 20.0])))
    torch.testing.assert_close(x.grad, torch.tensor([math.exp(1.0), math.exp(15.0)]))  # exp(min(x, 15))


def test_normals_of_the_blob_point_outward():
    # raw density constant (MLP output zeroed) -> σ = exp(10·exp(−|x|²/0.08)) is radial and decreasing,
    # so n = −∇σ/|∇σ| = x/|x|
    field = build_field(TINY, False)
    with torch.no_grad():
        field.mlp[2].weight.zero_()
        field.mlp[2].bias.zero_()
    x = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1) * torch.empty(32, 1).uniform_(0.1, 0.6)
    n = field.normals(x)
    torch.testing.assert_close(n, torch.nn.functional.normalize(x, dim=-1), atol=NORMAL_ATOL, rtol=0)


def test_normals_match_finite_difference_definition_and_are_differentiable():
    field = build_field(TINY, True)
    with torch.no_grad():
        field.encoding.embeddings.normal_(0, 1)
    x, t = _points(8) * 0.5, torch.rand(8)
    n = field.normals(x, t)
    eps = TINY.normal_eps
    grad = torch.stack([(field.density(x + eps * e, t) - field.density(x - eps * e, t)) / (2 * eps)
                        for e in torch.eye(3)], -1)
    torch.testing.assert_close(n, torch.nn.functional.normalize(-grad, dim=-1), atol=1e-5, rtol=1e-4)
    n.sum().backward()
    assert field.encoding.embeddings.grad is not None and field.encoding.embeddings.grad.abs().sum() > 0


def test_param_groups_cover_every_parameter_once():
    for kind in FieldKind:
        field = build_field(dataclasses.replace(TINY, kind=kind), True)
        groups = field.param_groups(1e-3, 10.0)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in field.parameters()}
        lrs = {g["name"]: g["lr"] for g in groups}
        assert lrs == {"grid": pytest.approx(1e-2), "mlp": pytest.approx(1e-3)}


def test_active_levels_zeroes_the_finest_channels():
    enc = GridEncoding(TINY, 1, 3)
    with torch.no_grad():
        enc.embeddings.normal_()
    x = _points(16)
    full = enc(x)
    enc.active_levels = 3  # 4 levels × 2 features: channels 6, 7 (level 3) zeroed, 0..5 unchanged
    masked = enc(x)
    assert torch.equal(masked[:, 6:], torch.zeros(16, 2)) and torch.equal(masked[:, :6], full[:, :6])
    field = build_field(dataclasses.replace(TINY, kind=FieldKind.hash4d), True)
    field.active_levels = 1
    assert field.encoding.active_levels == 1
    assert torch.equal(field.encoding(x, torch.rand(16))[:, 2:], torch.zeros(16, 6))


def test_encoding_maps_world_box_to_unit_cube():
    enc = GridEncoding(TINY, 1, 3)
    x = torch.tensor([[-1.0, 0.0, 1.0], [-3.0, 0.5, 7.0]])  # the second point is clamped to (0, 0.75, 1)
    u = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.75, 1.0]])
    expected = grid_encode(u, enc.embeddings, enc.offsets, enc.resolutions, "tiled")
    torch.testing.assert_close(enc(x), expected)


def test_hash4d_time_axis():
    enc = Hash4DEncoding(TINY)
    assert enc.grid4d.kind == "hash" and enc.grid4d.time_scale == pytest.approx(8 / 32)
    with torch.no_grad():
        enc.grid4d.embeddings.normal_()
    x = _points(8)
    a, b = enc(x, torch.zeros(8)), enc(x, torch.ones(8))
    assert (a - b).abs().max() > 1e-3  # time matters once the 4D grid is non-zero
    with pytest.raises(ValueError):
        enc(x)


@pytest.mark.parametrize("kind", list(FieldKind))
def test_dynamic_from_static_renders_like_static(kind):
    cfg = dataclasses.replace(TINY, kind=kind)
    static = build_field(cfg, False)
    with torch.no_grad():
        static.encoding.embeddings.normal_(0, 0.5)
    dyn = init_dynamic_from_static(static, cfg)
    assert dyn.is_dynamic and float(dyn.tv_loss().detach()) == 0.0
    x = _points(128)
    ref = static(x)
    for tau in (0.0, 0.37, 1.0):
        out = dyn(x, torch.full((128,), tau))
        torch.testing.assert_close(out.density, ref.density, atol=SAME_ATOL, rtol=1e-5)
        torch.testing.assert_close(out.albedo, ref.albedo, atol=SAME_ATOL, rtol=1e-5)
    with pytest.raises(CheckpointError, match=r"\(1, 4096, 2\).*\([14], 5120, 2\)"):
        init_dynamic_from_static(static, dataclasses.replace(cfg, num_levels=5))


def test_tv_loss():
    assert float(build_field(TINY, False).tv_loss()) == 0.0
    dyn = build_field(TINY, True)
    with torch.no_grad():
        dyn.encoding.embeddings.zero_()
        dyn.encoding.embeddings[1] += 1.0  # keyframes 0,1,2,3 = 0,1,0,0: pairs (0,1),(1,2) each ‖Δ‖² = 2 (F = 2)
    # mean over 3 pairs of per-row ‖Δ‖²: (2 + 2 + 0) / 3
    assert float(dyn.tv_loss().detach()) == pytest.approx(4.0 / 3.0)
    dyn.tv_loss().backward()
    assert dyn.encoding.embeddings.grad.abs().sum() > 0


def test_load_field_state_checks_shapes():
    static, dyn = build_field(TINY, False), build_field(TINY, True)
    with pytest.raises(CheckpointError) as err:
        load_field_state(dyn, static.state_dict())
    msg = str(err.value)
    assert "(1, " in msg and "(4, " in msg and "fix:" in msg and "\n" not in msg
    other = build_field(TINY, False)
    load_field_state(other, static.state_dict())
    assert torch.equal(other.encoding.embeddings, static.encoding.embeddings)
    with pytest.raises(CheckpointError, match="missing"):
        load_field_state(other, {k: v for k, v in static.state_dict().items() if not k.startswith("mlp.0")})


def test_grid_field_is_a_module_with_device():
    field = GridField(TINY)
    assert field.device == torch.device("cpu") and "_dummy" not in field.state_dict()


def test_speed_sanity_hash_2p19_16k_points():
    # spec-size hash grid (16 levels, 2^19 table, res 16→2048): fwd+bwd of 16k points; printed, loosely bounded
    cfg = FieldConfig(encoding="hash", log2_table_size=19)
    enc = GridEncoding(cfg, 1, 3)
    x = _points(16384)
    t0 = time.perf_counter()
    enc(x).square().sum().backward()
    elapsed = time.perf_counter() - t0
    print(f"\nhash grid 16 lvls 2^19, 16k points fwd+bwd: {elapsed:.3f} s")
    assert elapsed < 30.0 and enc.embeddings.grad is not None
