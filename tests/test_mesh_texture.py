"""mesh.texture=true: xatlas UV unwrap + albedo bake; the GLB carries TEXCOORD_0 and an embedded PNG."""

import io
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import trimesh
from _export_toys import fast_render_cfg, full_occupancy
from _mesh_fields import ISO, translating
from PIL import Image

from animate124.config.export import ExportConfig, MeshMode
from animate124.export.gltf import read_accessor
from animate124.export.mesh import extract_mesh
from animate124.export.outputs import export
from animate124.export.scene import Scene

pytest.importorskip("xatlas")


def _expected(field, points, tau):
    return np.clip(0.5 + 0.45 * (points - np.array(field.centre(tau))) / field.radius(tau), 0, 1)


def test_baked_texture_matches_the_albedo():
    from animate124.export.texture import bake_texture

    field = translating()
    mesh = extract_mesh(field, 0.3, 40, 1.0, ISO)
    tm = bake_texture(field, mesh, 256)
    assert tm.uvs.min() >= 0 and tm.uvs.max() <= 1 and tm.texture.shape == (256, 256, 3)
    uv, world = tm.uvs[tm.faces].mean(1), tm.vertices[tm.faces].mean(1)  # face centroids lie inside their chart
    px = np.clip(np.round(uv * 256 - 0.5).astype(int), 0, 255)
    err = np.abs(tm.texture[px[:, 1], px[:, 0]] / 255.0 - _expected(field, world, 0.3)).max(1)
    assert err.mean() < 0.01 and np.percentile(err, 99) < 0.03  # measured 0.004 / 0.007 (sub-texel slivers above)
    np.testing.assert_allclose(tm.vertices, mesh.vertices[tm.vmapping])


@pytest.mark.parametrize("mode", [MeshMode.flipbook, MeshMode.tracked])
def test_textured_glb(tmp_path, mode):
    scene = Scene(field=translating(), occupancy=full_occupancy(), render_cfg=fast_render_cfg(), inputs={},
                  phase="fit", config={}, checkpoint=Path("."))
    cfg = ExportConfig(run_dir=str(tmp_path), format="mesh", frames=2, out=str(tmp_path / "m"), device="cpu")
    cfg.mesh.mode, cfg.mesh.resolution, cfg.mesh.texture, cfg.mesh.texture_size = mode, 32, True, 128
    export(cfg, scene)
    glb = tmp_path / "m" / "animated.glb"
    g = pygltflib.GLTF2().load(str(glb))
    prim = g.meshes[0].primitives[0]
    assert prim.attributes.TEXCOORD_0 is not None and prim.attributes.COLOR_0 is None
    assert len(g.images) == (2 if mode == MeshMode.flipbook else 1) and g.images[0].mimeType == "image/png"
    view = g.bufferViews[g.images[0].bufferView]
    png = Image.open(io.BytesIO(g.binary_blob()[view.byteOffset:view.byteOffset + view.byteLength]))
    assert png.size == (128, 128)
    uv = read_accessor(g, prim.attributes.TEXCOORD_0)
    assert uv.shape[1] == 2 and len(uv) == g.accessors[prim.attributes.POSITION].count
    if mode == MeshMode.tracked:
        assert len(prim.targets) == 2 and g.accessors[prim.targets[1]["POSITION"]].count == len(uv)
    loaded = trimesh.load(glb)
    assert all(getattr(geom.visual, "uv", None) is not None for geom in loaded.geometry.values())
