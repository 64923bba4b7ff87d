"""Animated GLB files with pygltflib (trimesh cannot write glTF animations or morph targets).

- :func:`write_flipbook_glb`: one node (and mesh) per frame; each node's scale is animated to 1 during its frame and
  to 0 otherwise, with STEP interpolation (plays in Blender, three.js, Unity/Unreal importers).
- :func:`write_morph_glb`: one mesh whose morph target k holds frame k's positions minus frame 0's; a LINEAR weights
  animation plays target k at frame k's time. Blender imports the targets as shape keys (named ``frame_NNN`` through
  ``mesh.extras.targetNames``).

Our world is +z up, glTF's is +y up: positions and normals are rotated by :data:`Z_UP_TO_Y_UP` ((x, y, z) →
(x, z, −y), a rotation of −90° about x) before writing. Vertex colours are the field's albedo, which is rendered as
display (sRGB) values, converted to the linear values glTF's COLOR_0 holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from animate124.export.mesh import Mesh, TrackedMesh
from animate124.export.texture import TexturedMesh

Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=np.float32)
"""World (+z up) → glTF (+y up): v_gltf = Z_UP_TO_Y_UP @ v_world."""

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UINT32 = 5126, 5125


def to_y_up(points: np.ndarray) -> np.ndarray:
    """[N, 3] world points/vectors → glTF axes (float32)."""
    return (np.asarray(points, dtype=np.float32) @ Z_UP_TO_Y_UP.T).astype(np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB display values in [0, 1] → linear (IEC 61966-2-1)."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Inverse of :func:`srgb_to_linear`."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1.0 / 2.4) - 0.055).astype(np.float32)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] unit area-weighted vertex normals (trimesh); vertices without faces get +y."""
    import trimesh

    n = np.asarray(trimesh.Trimesh(vertices, faces, process=False).vertex_normals, dtype=np.float32)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    bad = ~np.isfinite(norm[:, 0]) | (norm[:, 0] < 0.5)
    n = np.where(bad[:, None], np.array([0.0, 1.0, 0.0], np.float32), n / np.where(bad, 1.0, norm[:, 0])[:, None])
    return n.astype(np.float32)


class _Builder:
    """Accumulates one binary buffer with its bufferViews and accessors."""

    def __init__(self) -> None:
        import pygltflib

        self.g = pygltflib
        self.blob = bytearray()
        self.views: list = []
        self.accessors: list = []
        self.images: list = []
        self.textures: list = []
        self.materials: list = []

    def add(self, data: np.ndarray, kind: str, target: int | None = None, bounds: bool = False) -> int:
        """Append ``data`` (float32 or uint32) as a new bufferView + accessor; returns the accessor index."""
        data = np.ascontiguousarray(data)
        comp = _UINT32 if data.dtype == np.uint32 else _FLOAT
        data = data.astype(np.uint32 if comp == _UINT32 else np.float32, copy=False)
        while len(self.blob) % 4:
            self.blob.append(0)
        offset = len(self.blob)
        self.blob += data.tobytes()
        self.views.append(self.g.BufferView(buffer=0, byteOffset=offset, byteLength=data.nbytes, target=target))
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[kind]
        flat = data.reshape(-1, width)
        acc = self.g.Accessor(bufferView=len(self.views) - 1, componentType=comp, count=len(flat), type=kind)
        if bounds:
            acc.min = [float(v) for v in flat.min(0)] if len(flat) else [0.0] * width
            acc.max = [float(v) for v in flat.max(0)] if len(flat) else [0.0] * width
            if comp == _UINT32:
                acc.min, acc.max = [int(v) for v in acc.min], [int(v) for v in acc.max]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def image(self, rgb: np.ndarray) -> int:
        """Append an [H, W, 3] uint8 image as an embedded PNG; returns the material index using it as base colour."""
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        while len(self.blob) % 4:
            self.blob.append(0)
        self.views.append(self.g.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(buf.getvalue())))
        self.blob += buf.getvalue()
        self.images.append(self.g.Image(bufferView=len(self.views) - 1, mimeType="image/png"))
        self.textures.append(self.g.Texture(source=len(self.images) - 1, sampler=0))
        pbr = self.g.PbrMetallicRoughness(baseColorTexture=self.g.TextureInfo(index=len(self.textures) - 1),
                                          metallicFactor=0.0, roughnessFactor=1.0)
        self.materials.append(self.g.Material(pbrMetallicRoughness=pbr))
        return len(self.materials) - 1

    def primitive(self, mesh_vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None,
                  uvs: np.ndarray | None = None, material: int | None = None):
        """A triangle primitive (POSITION, NORMAL, COLOR_0 or TEXCOORD_0, indices) from world-space arrays."""
        pos = to_y_up(mesh_vertices)
        attrs = self.g.Attributes(
            POSITION=self.add(pos, "VEC3", _ARRAY_BUFFER, bounds=True),
            NORMAL=self.add(vertex_normals(pos, faces), "VEC3", _ARRAY_BUFFER),
        )
        if uvs is not None:  # textured: no COLOR_0 (glTF multiplies it into the base colour)
            attrs.TEXCOORD_0 = self.add(uvs.astype(np.float32), "VEC2", _ARRAY_BUFFER)
        else:
            attrs.COLOR_0 = self.add(srgb_to_linear(colours), "VEC3", _ARRAY_BUFFER)
        idx = self.add(faces.astype(np.uint32).ravel(), "SCALAR", _ELEMENT_ARRAY_BUFFER, bounds=True)
        return self.g.Primitive(attributes=attrs, indices=idx, mode=4, material=material)

    def mesh_primitive(self, mesh):
        """Primitive of a Mesh (vertex colours) or a TexturedMesh (UVs + its own baked texture)."""
        if hasattr(mesh, "texture"):
            return self.primitive(mesh.vertices, mesh.faces, None, mesh.uvs, self.image(mesh.texture))
        return self.primitive(mesh.vertices, mesh.faces, mesh.colours)

    def save(self, gltf, path: Path) -> Path:
        gltf.asset = self.g.Asset(version="2.0", generator="animate124")
        gltf.bufferViews, gltf.accessors = self.views, self.accessors
        if self.images:
            gltf.images, gltf.textures, gltf.materials = self.images, self.textures, self.materials
            gltf.samplers = [self.g.Sampler(magFilter=9729, minFilter=9729, wrapS=33071, wrapT=33071)]
        gltf.buffers = [self.g.Buffer(byteLength=len(self.blob))]
        gltf.set_binary_blob(bytes(self.blob))
        path.parent.mkdir(parents=True, exist_ok=True)
        gltf.save_binary(str(path))
        return path


def write_flipbook_glb(meshes: Sequence[Mesh | TexturedMesh], path: str | Path, fps: float = 24.0) -> Path:
    """One node per frame, visible (scale 1) only during its frame: key times k/fps, STEP; a last key at N/fps.

    TexturedMesh frames (``export/texture.py``) each carry their own baked texture instead of vertex colours.
    """
    if not meshes:
        raise ValueError("write_flipbook_glb needs at least one mesh")
    b = _Builder()
    g = b.g
    n = len(meshes)
    gmeshes, nodes = [], []
    for k, m in enumerate(meshes):
        gmeshes.append(g.Mesh(name=f"frame_{k:03d}", primitives=[b.mesh_primitive(m)]))
        nodes.append(g.Node(name=f"frame_{k:03d}", mesh=k, scale=[1.0, 1.0, 1.0] if k == 0 else [0.0, 0.0, 0.0],
                            extras={"time": float(m.time)}))
    key_times = np.arange(n + 1, dtype=np.float32) / float(fps)
    t_acc = b.add(key_times, "SCALAR", bounds=True)
    samplers, channels = [], []
    for k in range(n):
        on = (np.arange(n + 1) == k) | ((k == n - 1) & (np.arange(n + 1) == n))
        scale = np.repeat(on.astype(np.float32)[:, None], 3, axis=1)
        samplers.append(g.AnimationSampler(input=t_acc, output=b.add(scale, "VEC3"), interpolation="STEP"))
        channels.append(g.AnimationChannel(sampler=k, target=g.AnimationChannelTarget(node=k, path="scale")))
    gltf = g.GLTF2(scene=0, scenes=[g.Scene(nodes=list(range(n)))], nodes=nodes, meshes=gmeshes,
                   animations=[g.Animation(name="flipbook", samplers=samplers, channels=channels)])
    return b.save(gltf, Path(path))


def write_morph_glb(track: TrackedMesh, path: str | Path, fps: float = 24.0,
                    textured: TexturedMesh | None = None) -> Path:
    """One mesh, one morph target per frame (frame k − frame 0), a LINEAR ``weights`` animation over k/fps.

    With ``textured`` (the base mesh unwrapped by ``export/texture.py``) the mesh carries its UVs and texture; its
    vertices (split along UV seams) take the morph offsets of their source vertices (``textured.vmapping``).
    """
    b = _Builder()
    g = b.g
    n = len(track.positions)
    vmap = textured.vmapping if textured is not None else np.arange(len(track.positions[0]))
    if textured is not None:
        prim = b.primitive(track.positions[0][vmap], textured.faces, None, textured.uvs, b.image(textured.texture))
    else:
        prim = b.primitive(track.positions[0], track.base.faces, track.base.colours)
    base = to_y_up(track.positions[0][vmap])
    prim.targets = [g.Attributes(POSITION=b.add(to_y_up(p[vmap]) - base, "VEC3", _ARRAY_BUFFER, bounds=True))
                    for p in track.positions]
    names = [f"frame_{k:03d}" for k in range(n)]
    mesh = g.Mesh(name="tracked", primitives=[prim], weights=[1.0] + [0.0] * (n - 1),
                  extras={"targetNames": names, "times": [float(t) for t in track.times]})
    key_times = np.arange(n, dtype=np.float32) / float(fps)
    weights = np.eye(n, dtype=np.float32).ravel()  # at key k: target k at 1, all others 0
    sampler = g.AnimationSampler(input=b.add(key_times, "SCALAR", bounds=True), output=b.add(weights, "SCALAR"),
                                 interpolation="LINEAR" if n > 1 else "STEP")
    anim = g.Animation(name="tracked", samplers=[sampler],
                       channels=[g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(node=0, path="weights"))])
    gltf = g.GLTF2(scene=0, scenes=[g.Scene(nodes=[0])], nodes=[g.Node(name="tracked", mesh=0)], meshes=[mesh],
                   animations=[anim])
    return b.save(gltf, Path(path))


def read_accessor(gltf, index: int) -> np.ndarray:
    """The data of accessor ``index`` of a loaded GLB (float32/uint32, shaped [count, width] or [count])."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc.type]
    dtype = {_FLOAT: np.float32, _UINT32: np.uint32}[acc.componentType]
    data = np.frombuffer(gltf.binary_blob(), dtype=dtype, count=acc.count * width,
                         offset=view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, width) if width > 1 else data
