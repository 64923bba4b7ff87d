"""mesh.mode=tracked: one topology carried through time (projection onto the iso-surface + smoothness), and its GLB
(one morph target per frame, a weights animation, +y up)."""

from pathlib import Path

import numpy as np
import pygltflib
from _export_toys import fast_render_cfg, full_occupancy
from _mesh_fields import ISO, SphereField, growing, translating

from animate124.config.export import ExportConfig, MeshMode
from animate124.export.gltf import Z_UP_TO_Y_UP, read_accessor
from animate124.export.mesh import extract_mesh, track_mesh, voxel_size
from animate124.export.outputs import export
from animate124.export.scene import Scene

RES, BOUND = 48, 1.0
VOXEL = voxel_size(RES, BOUND)
TIMES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_tracked_vertices_follow_the_translation():
    field = translating()
    base = extract_mesh(field, 0.0, RES, BOUND, ISO)
    track = track_mesh(field, base, TIMES, ISO, VOXEL)
    c0 = np.array(field.centre(0.0))
    for tau, pos in zip(TIMES, track.positions):
        expected = base.vertices + (np.array(field.centre(tau)) - c0)
        err = np.linalg.norm(pos - expected, axis=1)
        assert err.max() < VOXEL, (tau, err.max() / VOXEL)
    assert max(track.mean_distance) < 0.1 * VOXEL  # reported per frame, and small on a clean track


def test_tracked_vertices_stay_on_a_growing_sphere():
    field = growing()
    base = extract_mesh(field, 0.0, RES, BOUND, ISO)
    track = track_mesh(field, base, TIMES, ISO, VOXEL)
    c = np.array(field.centre(0.0))
    for tau, pos, dist in zip(TIMES, track.positions, track.mean_distance):
        radial = np.linalg.norm(pos - c, axis=1)
        assert np.abs(radial - field.radius(tau)).max() < 0.5 * VOXEL and dist < 0.1 * VOXEL
        # the vertex keeps its direction from the centre: uniform Laplacian weights let it slide a little as r doubles
        d0 = (base.vertices - c) / np.linalg.norm(base.vertices - c, axis=1, keepdims=True)
        assert np.linalg.norm(pos - c - d0 * radial[:, None], axis=1).max() < 1.5 * VOXEL  # measured 1.11 at τ = 1


def test_large_jump_is_reported_as_a_bad_track():
    field = SphereField(lambda t: [0.8 * t - 0.4, 0.0, 0.0], lambda t: 0.3)
    base = extract_mesh(field, 0.0, RES, BOUND, ISO)
    # one jump of 0.8 (≈ 19 voxels) in a single frame: the projection cannot follow, and the report says so
    track = track_mesh(field, base, [0.0, 1.0], ISO, VOXEL, iters=2)
    assert track.mean_distance[1] > 0.5 * VOXEL


def test_export_tracked_glb_morph_targets_animation_and_up_axis(tmp_path):
    field = translating()
    scene = Scene(field=field, occupancy=full_occupancy(), render_cfg=fast_render_cfg(), inputs={}, phase="fit",
                  config={}, checkpoint=Path("."))
    cfg = ExportConfig(run_dir=str(tmp_path), format="mesh", frames=4, fps=4, out=str(tmp_path / "t"), device="cpu")
    cfg.mesh.mode, cfg.mesh.resolution = MeshMode.tracked, 40
    export(cfg, scene)
    g = pygltflib.GLTF2().load(str(tmp_path / "t" / "animated.glb"))
    assert len(g.meshes) == 1 and len(g.nodes) == 1 and len(g.animations) == 1
    prim = g.meshes[0].primitives[0]
    assert len(prim.targets) == 4 and g.meshes[0].extras["targetNames"] == [f"frame_{k:03d}" for k in range(4)]
    [channel] = g.animations[0].channels
    assert channel.target.path == "weights" and channel.target.node == 0
    sampler = g.animations[0].samplers[0]
    np.testing.assert_allclose(read_accessor(g, sampler.input), [0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(read_accessor(g, sampler.output).reshape(4, 4), np.eye(4))
    base = read_accessor(g, prim.attributes.POSITION)
    voxel = voxel_size(40, BOUND)
    c0 = np.array(field.centre(0.0))
    for k, target in enumerate(prim.targets):  # glTF +y up: world (x, y, z) is stored as (x, z, −y)
        world = (base + read_accessor(g, target["POSITION"])) @ Z_UP_TO_Y_UP
        moved = np.array(field.centre(k / 3)) - c0
        np.testing.assert_allclose(world.mean(0) - (base @ Z_UP_TO_Y_UP).mean(0), moved, atol=voxel)
    assert (tmp_path / "t" / "mesh_seq" / "frame_000.ply").is_file()
    report = (tmp_path / "t" / "mesh_report.json").read_text()
    assert '"mean_distance_voxels"' in report
