"""Optional UV texture of a mesh (``mesh.texture=true``): xatlas unwraps it, the field's albedo is baked per texel.

Texel (row, col) of a ``size``² image covers UV (u, v) = ((col + 0.5)/size, (row + 0.5)/size): glTF's convention,
v = 0 at the top row. Each texel inside a UV triangle gets the albedo at the world point with the same barycentric
coordinates; texels outside every chart are filled from their neighbours (``padding`` rings) so bilinear sampling at
chart borders does not bleed the background in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from animate124.errors import InputError
from animate124.export.mesh import Mesh, albedo_at


@dataclass
class TexturedMesh:
    """A mesh with one UV per vertex and an albedo image (vertices are split along UV seams)."""

    vertices: np.ndarray
    """[V', 3] float32 world positions."""
    faces: np.ndarray
    """[F, 3] int64."""
    uvs: np.ndarray
    """[V', 2] float32 in [0, 1] (glTF: v = 0 at the image's top)."""
    texture: np.ndarray
    """[S, S, 3] uint8 albedo (display values)."""
    vmapping: np.ndarray
    """[V'] index of each vertex in the source mesh (to carry morph targets over)."""
    time: float


def _rasterize(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels covered by UV triangles → (flat texel index [K], face index [K], barycentrics [K, 3])."""
    pix = uvs.astype(np.float64) * size - 0.5  # texel centres at integers
    tex, fid, bary = [], [], []
    for f, (a, b, c) in enumerate(pix[faces]):
        lo = np.floor(np.minimum(np.minimum(a, b), c)).astype(int).clip(0, size - 1)
        hi = np.ceil(np.maximum(np.maximum(a, b), c)).astype(int).clip(0, size - 1)
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        p = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
        det = np.linalg.det(m)
        if abs(det) < 1e-12:
            continue
        st = np.linalg.solve(m, (p - a).T).T
        w = np.stack([1 - st[:, 0] - st[:, 1], st[:, 0], st[:, 1]], 1)
        inside = (w >= -1e-6).all(1)
        if inside.any():
            tex.append(p[inside, 1].astype(np.int64) * size + p[inside, 0].astype(np.int64))
            fid.append(np.full(int(inside.sum()), f))
            bary.append(w[inside])
    if not tex:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    return np.concatenate(tex), np.concatenate(fid), np.concatenate(bary)


def _dilate(image: np.ndarray, filled: np.ndarray, rings: int) -> np.ndarray:
    """Fill unfilled texels from the mean of their filled 4-neighbours, ``rings`` times."""
    img, mask = image.astype(np.float64), filled.copy()
    for _ in range(rings):
        acc, cnt = np.zeros_like(img), np.zeros(mask.shape)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            acc += np.roll(img * mask[..., None], (dy, dx), (0, 1))
            cnt += np.roll(mask, (dy, dx), (0, 1))
        grow = ~mask & (cnt > 0)
        img[grow] = acc[grow] / cnt[grow][:, None]
        mask = mask | grow
    return img


def _nondegenerate(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces whose area is above 1e−4 of the mean (marching cubes leaves slivers that xatlas maps to UV 0)."""
    v = vertices.astype(np.float64)[faces]
    area = 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    return faces[area > 1e-4 * max(float(area.mean()), 1e-30)]


def bake_texture(field: Any, mesh: Mesh, size: int = 512, padding: int = 4, chunk: int = 1 << 18) -> TexturedMesh:
    """Unwrap ``mesh`` with xatlas and bake the field's albedo at ``mesh.time`` into a ``size``² texture."""
    try:
        import xatlas
    except ImportError as exc:
        raise InputError("mesh.texture=true needs xatlas: pip install 'animate124[texture]' (or mesh.texture=false)") from exc

    src_faces = _nondegenerate(mesh.vertices, mesh.faces)
    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices.astype(np.float32), src_faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = size, 2  # texels between charts, so border texels sample their own chart
    atlas.generate(pack_options=pack)
    vmap, faces, uvs = atlas[0]
    verts = mesh.vertices[vmap].astype(np.float32)
    faces = faces.astype(np.int64)
    uv = uvs.astype(np.float64)[faces]
    uv_area = np.abs(np.cross(uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]))
    faces = faces[uv_area > 0]  # slivers xatlas could not chart (all at UV 0): invisible, dropped
    texel, fid, bary = _rasterize(uvs, faces, size)
    points = (verts.astype(np.float64)[faces[fid]] * bary[:, :, None]).sum(1)
    colours = albedo_at(field, points.astype(np.float32), mesh.time, chunk)
    image = np.zeros((size * size, 3))
    filled = np.zeros(size * size, bool)
    image[texel], filled[texel] = colours, True
    image = _dilate(image.reshape(size, size, 3), filled.reshape(size, size), padding)
    tex = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return TexturedMesh(verts, faces, uvs.astype(np.float32), tex, vmap.astype(np.int64), mesh.time)
