"""format=mesh, flipbook: marching cubes per τ on analytic dynamic spheres (centroid, volume, colours), floaters,
the occupancy mask, PLY + GLB files (+y up, STEP scale animation) and the export CLI path."""

import json
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import torch
import trimesh
from _export_toys import fast_render_cfg, full_occupancy
from _mesh_fields import ISO, SphereField, growing, sphere_volume, translating

from animate124.config.export import ExportConfig
from animate124.errors import InputError
from animate124.export.gltf import Z_UP_TO_Y_UP, linear_to_srgb, read_accessor, to_y_up, write_flipbook_glb
from animate124.export.mesh import density_grid, extract_mesh, mesh_centroid, mesh_volume, voxel_size
from animate124.export.outputs import export
from animate124.export.scene import Scene

RES, BOUND = 64, 1.0
VOXEL = voxel_size(RES, BOUND)
TIMES = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("make", [translating, growing], ids=["translating", "growing"])
def test_centroid_volume_and_colours_at_every_time(make):
    field = make()
    for tau in TIMES:
        mesh = extract_mesh(field, tau, RES, BOUND, ISO)
        c, r = np.array(field.centre(tau)), field.radius(tau)
        assert np.linalg.norm(mesh_centroid(mesh) - c) < VOXEL, tau
        assert abs(mesh_volume(mesh) / sphere_volume(r) - 1.0) < 0.05, (tau, mesh_volume(mesh), sphere_volume(r))
        radial = np.linalg.norm(mesh.vertices - c, axis=1)
        assert np.abs(radial - r).max() < 0.5 * VOXEL  # every vertex on the sphere
        expected = np.clip(0.5 + 0.45 * (mesh.vertices - c) / r, 0, 1)
        np.testing.assert_allclose(mesh.colours, expected, atol=1e-5)
        assert mesh.colours.std(0).min() > 0.1  # the colours really vary over the surface


def test_small_floaters_are_removed_and_large_ones_kept():
    floater = SphereField(lambda t: [0.0, 0.0, 0.0], lambda t: 0.35, extra=([0.7, 0.7, 0.7], 0.08))
    kept = extract_mesh(floater, 0.0, RES, BOUND, ISO, min_fraction=0.0)
    cleaned = extract_mesh(floater, 0.0, RES, BOUND, ISO, min_fraction=0.02)  # (0.08 / 0.35)³ ≈ 0.012 < 0.02
    far = np.linalg.norm(kept.vertices - 0.7, axis=1) < 0.2
    assert far.sum() > 20 and len(cleaned.vertices) == (~far).sum()
    assert np.linalg.norm(cleaned.vertices, axis=1).max() < 0.35 + VOXEL
    big = SphereField(lambda t: [0.0, 0.0, 0.0], lambda t: 0.35, extra=([0.6, 0.6, 0.6], 0.2))
    assert len(extract_mesh(big, 0.0, RES, BOUND, ISO).vertices) > len(cleaned.vertices) * 1.2


def test_occupancy_mask_uses_the_time_slot():
    field = translating()
    occ = full_occupancy(slots=4, resolution=16)
    occ.bitfield[2] = 0  # slot 2 (τ in [0.5, 0.75)) is all empty
    assert density_grid(field, 0.6, 16, BOUND, occ).max() == 0.0
    np.testing.assert_array_equal(density_grid(field, 0.3, 16, BOUND, occ), density_grid(field, 0.3, 16, BOUND))


def test_z_up_becomes_gltf_y_up():
    np.testing.assert_allclose(to_y_up(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])),
                               [[0, 1, 0], [0, 0, -1], [1, 0, 0]])
    assert np.isclose(np.linalg.det(Z_UP_TO_Y_UP), 1.0)  # a rotation, not a mirror


def _scene(field):
    return Scene(field=field, occupancy=full_occupancy(), render_cfg=fast_render_cfg(), inputs={}, phase="fit",
                 config={}, checkpoint=Path("."))


def test_export_mesh_writes_ply_sequence_and_flipbook_glb(tmp_path):
    field = SphereField(lambda t: [0.0, 0.0, -0.4 + 0.6 * t], lambda t: 0.25)  # rises along world +z
    cfg = ExportConfig(run_dir=str(tmp_path), format="mesh", frames=3, fps=6, out=str(tmp_path / "m"), device="cpu")
    cfg.mesh.resolution = 40
    written = export(cfg, _scene(field))
    plys = sorted((tmp_path / "m" / "mesh_seq").glob("frame_*.ply"))
    assert [p.name for p in plys] == ["frame_000.ply", "frame_001.ply", "frame_002.ply"]
    assert tmp_path / "m" / "animated.glb" in written
    for k, p in enumerate(plys):  # PLY: world axes, uint8 albedo colours
        ply = trimesh.load(p, process=False)
        tau = k / 2
        np.testing.assert_allclose(ply.vertices.mean(0), [0, 0, -0.4 + 0.6 * tau], atol=voxel_size(40, 1.0))
        expected = np.clip(0.5 + 0.45 * (ply.vertices - [0, 0, -0.4 + 0.6 * tau]) / 0.25, 0, 1) * 255
        assert np.abs(ply.visual.vertex_colors[:, :3].astype(float) - expected).max() <= 1.0
    g = pygltflib.GLTF2().load(str(tmp_path / "m" / "animated.glb"))
    assert len(g.nodes) == 3 and len(g.meshes) == 3 and len(g.animations) == 1
    anim = g.animations[0]
    assert len(anim.channels) == 3 and all(c.target.path == "scale" for c in anim.channels)
    assert all(s.interpolation == "STEP" for s in anim.samplers)
    keys = read_accessor(g, anim.samplers[0].input)
    np.testing.assert_allclose(keys, [0, 1 / 6, 2 / 6, 3 / 6], rtol=1e-6)
    for k, s in enumerate(anim.samplers):  # node k visible exactly at key k (and the last node holds to the end)
        on = read_accessor(g, s.output)[:, 0]
        np.testing.assert_array_equal(on, [float(j == k or (k == 2 and j == 3)) for j in range(4)])
    for k in range(3):  # +y up: the sphere rises along glTF +y; world y ↦ glTF −z
        pos = read_accessor(g, g.meshes[k].primitives[0].attributes.POSITION)
        np.testing.assert_allclose(pos.mean(0), [0, -0.4 + 0.6 * k / 2, 0], atol=voxel_size(40, 1.0))
        col = read_accessor(g, g.meshes[k].primitives[0].attributes.COLOR_0)
        world = pos @ Z_UP_TO_Y_UP  # back to world axes
        expected = np.clip(0.5 + 0.45 * (world - [0, 0, -0.4 + 0.6 * k / 2]) / 0.25, 0, 1)
        np.testing.assert_allclose(linear_to_srgb(col), expected, atol=2e-3)
    loaded = trimesh.load(tmp_path / "m" / "animated.glb")  # a second, independent glTF reader
    assert len(loaded.geometry) == 3
    report = json.loads((tmp_path / "m" / "mesh_report.json").read_text())
    assert report["mode"] == "flipbook" and len(report["frames"]) == 3


def test_flipbook_glb_of_one_frame(tmp_path):
    mesh = extract_mesh(growing(), 0.0, 24, BOUND, ISO)
    g = pygltflib.GLTF2().load(str(write_flipbook_glb([mesh], tmp_path / "one.glb")))
    assert len(g.nodes) == 1 and g.nodes[0].scale == [1.0, 1.0, 1.0]


def test_no_surface_is_a_clear_error(tmp_path):
    cfg = ExportConfig(run_dir=str(tmp_path), format="mesh", frames=2, out=str(tmp_path / "m"), device="cpu")
    cfg.mesh.resolution, cfg.mesh.threshold = 16, 1000.0
    with pytest.raises(InputError, match="lower mesh.threshold"):
        export(cfg, _scene(translating()))
    cfg.format = "nope"
    with pytest.raises(InputError, match="format=nope"):
        export(cfg, _scene(translating()))


def test_field_with_parameters_runs_on_its_device():
    lin = torch.nn.Linear(3, 1)

    class F(torch.nn.Module):
        is_dynamic = False

        def __init__(self):
            super().__init__()
            self.lin = lin

        def density(self, x, t=None):
            assert t is None
            return ISO * 2 * (x.norm(dim=-1) < 0.5).float()

    assert density_grid(F(), 0.0, 8, BOUND).max() == ISO * 2
