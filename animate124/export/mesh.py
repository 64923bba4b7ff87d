"""Meshes of a (dynamic) field: marching cubes of the density per time, and a topology-consistent tracked mesh.

World coordinates throughout (+z up); ``export/gltf.py`` rotates to glTF's +y up on write.

Per time τ (:func:`extract_mesh`):

1. the activated density σ is sampled at R³ grid points over [−bound, bound]³ (voxel = 2·bound/(R − 1)); with an
   occupancy grid, points in cells that its slot of τ marks empty are set to 0 (what the renderer skips);
2. PyMCubes' marching cubes at σ = threshold (the grid is padded with one layer of zeros so meshes are closed);
3. connected components whose enclosed volume is below ``min_fraction`` of the largest one's are dropped (floaters);
4. each vertex gets the field's albedo at its position and τ.

Tracked mode (:func:`track_mesh`): the τ₀ mesh's vertices are carried from frame to frame. Each frame starts from the
previous positions plus the previous frame's displacement (constant velocity), then a few Gauss–Newton iterations
solve, for the displacement d of every vertex,

    min_d  Σ_i (n_i·(x_i + d_i − p_i))²  +  λ Σ_(i,j)∈edges |d_i − d_j|²  +  μ |d − d₀|²

where p_i = x_i − (σ(x_i) − iso)·∇σ/|∇σ|² is the Newton projection onto the iso-surface, n_i its unit gradient
(point-to-plane: only the normal offset is constrained, the smoothness term decides how vertices slide along the
surface), and μ = 1e−3 a small tether for conditioning (one sparse conjugate-gradient solve, scipy); then two plain Newton steps
x ← p snap the vertices onto the surface (the smoothness term leaves a small normal bias where the motion is not
a translation). Where it fails: topology
changes (a surface that splits or merges cannot be followed by one fixed mesh), and motions of more than about a
voxel-scale fraction of the object per frame that are not close to the previous frame's velocity (the projection
then snaps vertices onto the wrong part of the surface). The per-frame mean distance of the tracked vertices to the
iso-surface (first order: |σ − iso|/|∇σ|) is returned so a bad track shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from animate124.errors import InputError

SNAP_STEPS = 2
"""Pure Newton projection steps after each frame's solves (tangential positions stay those of the smooth solve)."""
TETHER = 1e-3
"""μ: weight pulling the tracked displacement toward its constant-velocity prediction (conditions the solve)."""


@dataclass
class Mesh:
    """A triangle mesh in world coordinates (+z up)."""

    vertices: np.ndarray
    """[V, 3] float32 positions."""
    faces: np.ndarray
    """[F, 3] int64 vertex indices, counter-clockwise seen from outside."""
    colours: np.ndarray
    """[V, 3] float32 albedo in [0, 1] (display values, as rendered)."""
    time: float
    """The scene time τ of the mesh."""


@dataclass
class TrackedMesh:
    """One topology moved through time: ``positions[k]`` are the vertices at ``times[k]``."""

    base: Mesh
    """The mesh at times[0] (faces and colours of every frame)."""
    times: list[float]
    """τ of each frame."""
    positions: list[np.ndarray]
    """[V, 3] float32 vertex positions per frame."""
    mean_distance: list[float]
    """Mean distance of the tracked vertices to the iso-surface per frame (world units, first order)."""
    voxel: float
    """The sampling voxel (world units), for reading mean_distance."""


def voxel_size(resolution: int, bound: float) -> float:
    """Grid spacing of ``resolution`` points over [−bound, bound]."""
    return 2.0 * bound / (resolution - 1)


def _field_time(field: Any, n: int, time: float, device: torch.device) -> Tensor | None:
    return torch.full((n,), float(time), device=device) if getattr(field, "is_dynamic", True) else None


def _occupancy_mask(occupancy: Any, x: Tensor, time: float) -> Tensor:
    """[N] bool: the occupancy grid cell holding each point is occupied at the slot of ``time`` (False outside it)."""
    slot = int(occupancy.slots_of(torch.tensor([float(time)]))[0])
    dense = occupancy.occupied(slot).to(x.device)
    r, b = occupancy.resolution, occupancy.bound
    inside = (x.abs() <= b * (1.0 + 1e-6)).all(-1)  # the box's faces belong to its outer cells
    cell = torch.floor((x + b) / (2.0 * b) * r).long().clamp(0, r - 1)
    return inside & dense[cell[:, 0], cell[:, 1], cell[:, 2]]


@torch.no_grad()
def density_grid(field: Any, time: float, resolution: int, bound: float, occupancy: Any = None,
                 chunk: int = 1 << 18) -> np.ndarray:
    """σ at the R³ grid points of [−bound, bound]³, indexed [i, j, k] = (x_i, y_j, z_k), as float32 numpy.

    Args:
        field: anything with ``density(x [N, 3], t [N] | None) → [N]`` (and ``is_dynamic``; default True).
        time: scene time τ.
        resolution: R ≥ 2 points per axis.
        bound: half the cube's side.
        occupancy: an OccupancyGrid; σ is set to 0 in the cells it marks empty at the slot of τ (None: no mask).
        chunk: points per field call.
    """
    if resolution < 2:
        raise InputError(f"mesh.resolution must be >= 2 (got {resolution}); use e.g. mesh.resolution=128")
    device = next((b.device for b in list(field.parameters()) + list(field.buffers())), torch.device("cpu"))
    axis = torch.linspace(-bound, bound, resolution, device=device)
    pts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    out = torch.empty(pts.shape[0], dtype=torch.float32)
    for s in range(0, pts.shape[0], chunk):
        x = pts[s: s + chunk]
        sigma = field.density(x, _field_time(field, x.shape[0], time, device)).reshape(-1).float()
        if occupancy is not None:
            sigma = torch.where(_occupancy_mask(occupancy, x, time), sigma, torch.zeros_like(sigma))
        out[s: s + x.shape[0]] = torch.nan_to_num(sigma, nan=0.0, posinf=0.0, neginf=0.0).cpu()
    return out.reshape(resolution, resolution, resolution).numpy()


def signed_volumes(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F] signed volume of the tetrahedron (origin, face) of each face; summed over a closed mesh: its volume."""
    v = vertices.astype(np.float64)[faces]
    return np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])) / 6.0


def marching_cubes(grid: np.ndarray, threshold: float, bound: float) -> tuple[np.ndarray, np.ndarray]:
    """PyMCubes marching cubes of ``grid`` at ``threshold`` → (world vertices [V, 3] float32, faces [F, 3] int64).

    The grid is padded with zeros so surfaces touching the box are closed; faces are oriented outward (positive volume).
    """
    import mcubes

    if threshold <= 0:
        raise InputError(f"mesh.threshold must be > 0 (got {threshold}); it is a density level, e.g. 10")
    verts, faces = mcubes.marching_cubes(np.pad(grid, 1, constant_values=0.0), float(threshold))
    verts = ((verts - 1.0) * voxel_size(grid.shape[0], bound) - bound).astype(np.float32)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) and signed_volumes(verts, faces).sum() < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces


def remove_small_components(vertices: np.ndarray, faces: np.ndarray,
                            min_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop face-connected components whose |volume| < min_fraction · the largest one's; unused vertices go too."""
    import trimesh

    if len(faces) == 0 or min_fraction <= 0:
        return vertices, faces
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    volume = np.abs(np.bincount(labels, weights=signed_volumes(vertices, faces)))
    keep = volume >= min_fraction * volume.max()
    faces = faces[keep[labels]]
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


@torch.no_grad()
def albedo_at(field: Any, points: np.ndarray, time: float, chunk: int = 1 << 18) -> np.ndarray:
    """[V, 3] float32 albedo of the field at world points and τ."""
    device = next((b.device for b in list(field.parameters()) + list(field.buffers())), torch.device("cpu"))
    x_all = torch.as_tensor(points, dtype=torch.float32, device=device)
    out = []
    for s in range(0, len(x_all), chunk):
        x = x_all[s: s + chunk]
        out.append(field(x, _field_time(field, x.shape[0], time, device)).albedo.float().clamp(0, 1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 3), np.float32)


def extract_mesh(field: Any, time: float, resolution: int, bound: float, threshold: float, occupancy: Any = None,
                 min_fraction: float = 0.02, chunk: int = 1 << 18) -> Mesh:
    """The coloured iso-surface σ = threshold of ``field`` at τ = ``time`` (see the module docstring)."""
    grid = density_grid(field, time, resolution, bound, occupancy, chunk)
    verts, faces = marching_cubes(grid, threshold, bound)
    verts, faces = remove_small_components(verts, faces, min_fraction)
    return Mesh(verts, faces, albedo_at(field, verts, time, chunk), float(time))


def mesh_volume(mesh: Mesh) -> float:
    """Enclosed volume (closed, outward-oriented mesh)."""
    return float(signed_volumes(mesh.vertices, mesh.faces).sum()) if len(mesh.faces) else 0.0


def mesh_centroid(mesh: Mesh) -> np.ndarray:
    """[3] centroid of the enclosed solid (volume-weighted tetrahedra; the vertex mean for an empty volume)."""
    vol = signed_volumes(mesh.vertices, mesh.faces)
    if abs(vol.sum()) < 1e-12:
        return mesh.vertices.mean(0) if len(mesh.vertices) else np.zeros(3)
    centres = mesh.vertices.astype(np.float64)[mesh.faces].sum(1) / 4.0  # the tetrahedron's 4th vertex is 0
    return (centres * vol[:, None]).sum(0) / vol.sum()


def write_ply(mesh: Mesh, path: str | Path) -> Path:
    """Binary PLY with uint8 vertex colours (world axes, +z up: Blender's own up axis)."""
    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.clip(np.round(mesh.colours * 255.0), 0, 255).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=rgba, process=False).export(path)
    return path


# ---------------------------------------------------------------------------------------------------------- tracked


def graph_laplacian(faces: np.ndarray, n: int):
    """Sparse [n, n] combinatorial Laplacian D − A of the mesh's edge graph."""
    import scipy.sparse as sp

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    adj = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    adj.data[:] = 1.0  # duplicate edges count once
    return sp.diags(np.asarray(adj.sum(1)).ravel()) - adj


@torch.no_grad()
def density_and_gradient(field: Any, points: np.ndarray, time: float, eps: float,
                         chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """σ [V] and ∇σ [V, 3] (central differences with step ``eps``) at world points, float64 numpy."""
    device = next((b.device for b in list(field.parameters()) + list(field.buffers())), torch.device("cpu"))
    x_all = torch.as_tensor(points, dtype=torch.float32, device=device)
    offsets = torch.cat([torch.zeros(1, 3), torch.eye(3) * eps, -torch.eye(3) * eps]).to(device)  # [7, 3]
    sig, grad = [], []
    for s in range(0, len(x_all), chunk):
        x = x_all[s: s + chunk]
        q = (x[None] + offsets[:, None]).reshape(-1, 3)
        d = field.density(q, _field_time(field, q.shape[0], time, device)).reshape(7, -1).double().cpu()
        sig.append(d[0])
        grad.append(((d[1:4] - d[4:7]) / (2.0 * eps)).T)
    return torch.cat(sig).numpy(), torch.cat(grad).numpy()


def _newton_targets(field: Any, x: np.ndarray, time: float, iso: float, voxel: float,
                    chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p [V,3] projection points, n [V,3] unit gradients, w [V] weights, dist [V] |σ − iso|/|∇σ|)."""
    sigma, grad = density_and_gradient(field, x, time, 0.5 * voxel, chunk)
    norm = np.linalg.norm(grad, axis=1)
    ok = np.isfinite(norm) & (norm > 1e-8)
    safe = np.where(ok, norm, 1.0)
    normal = np.where(ok[:, None], grad / safe[:, None], 0.0)
    dist = np.where(ok, (sigma - iso) / safe, 0.0)
    step = np.clip(dist, -2.0 * voxel, 2.0 * voxel)  # far from the surface the linearisation is not trusted
    target = x - step[:, None] * normal  # σ falls outward: σ > iso (inside) moves along −∇σ
    return target, normal, ok.astype(np.float64), np.abs(np.where(ok, dist, 2.0 * voxel))


def _solve_displacement(lap, x: np.ndarray, target: np.ndarray, normal: np.ndarray, weight: np.ndarray,
                        d_pred: np.ndarray, smooth: float) -> np.ndarray:
    """argmin_d Σ w (n·(x + d − p))² + smooth·Σ_edges |Δd|² + μ|d − d_pred|² (one sparse solve, 3V unknowns).

    ``x`` is the previous frame's positions, so d is the whole displacement of this frame (smoothed as one field).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import cg, spsolve

    v = len(x)
    nn = weight[:, None, None] * normal[:, :, None] * normal[:, None, :]  # [V, 3, 3]
    rows = (3 * np.arange(v)[:, None, None] + np.arange(3)[None, :, None]).repeat(3, axis=2)
    cols = (3 * np.arange(v)[:, None, None] + np.arange(3)[None, None, :]).repeat(3, axis=1)
    a = sp.coo_matrix((nn.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * v, 3 * v)).tocsr()
    a = a + smooth * sp.kron(lap, sp.identity(3), format="csr") + TETHER * sp.identity(3 * v, format="csr")
    b = (np.einsum("vij,vj->vi", nn, target - x) + TETHER * d_pred).ravel()
    d, info = cg(a, b, x0=d_pred.ravel(), rtol=1e-7, maxiter=2000)  # SPD; warm-started it takes tens of iterations
    if info != 0:  # not converged: the same solution by a direct solve (slower, never different)
        d = spsolve(a.tocsc(), b)
    return np.asarray(d).reshape(v, 3)


def track_mesh(field: Any, base: Mesh, times: Sequence[float], threshold: float, voxel: float, iters: int = 8,
               smooth: float = 1.0, chunk: int = 1 << 16) -> TrackedMesh:
    """Carry ``base``'s vertices onto the iso-surface σ = threshold at each τ of ``times`` (module docstring).

    Args:
        field: the field (``density``).
        base: the mesh at ``times[0]`` (its own positions are frame 0).
        times: τ of each frame, in playing order.
        threshold: the iso-level.
        voxel: the extraction voxel (world units); steps and the gradient stencil scale with it.
        iters: Gauss–Newton iterations per frame.
        smooth: λ, weight of the displacement smoothness.
        chunk: points per field call (× 7 for the stencil).
    """
    if len(base.faces) == 0:
        raise InputError(f"no surface at τ={base.time} (σ never reaches mesh.threshold={threshold}); lower the threshold")
    lap = graph_laplacian(base.faces, len(base.vertices))
    prev = base.vertices.astype(np.float64)
    velocity = np.zeros_like(prev)
    positions, distances = [base.vertices.copy()], []
    _, _, _, dist0 = _newton_targets(field, prev, times[0], threshold, voxel, chunk)
    distances.append(float(dist0.mean()))
    for tau in times[1:]:
        x = prev + velocity
        for _ in range(max(1, iters)):
            target, normal, weight, _ = _newton_targets(field, x, tau, threshold, voxel, chunk)
            x = prev + _solve_displacement(lap, prev, target, normal, weight, velocity, smooth)
        for _ in range(SNAP_STEPS):  # the smoothness term biases the normal offset a little: snap onto the surface
            x, _, _, _ = _newton_targets(field, x, tau, threshold, voxel, chunk)
        _, _, _, dist = _newton_targets(field, x, tau, threshold, voxel, chunk)
        distances.append(float(dist.mean()))
        velocity, prev = x - prev, x
        positions.append(x.astype(np.float32))
    return TrackedMesh(base, [float(t) for t in times], positions, distances, voxel)

