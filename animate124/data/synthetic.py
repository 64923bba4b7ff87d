"""A synthetic dynamic scene in the D-NeRF layout: coloured Gaussian blobs moving over τ ∈ [0, 1].

The ground truth is rendered by this module's OWN small volume renderer (dense midpoint quadrature along each ray,
pure torch): it shares no code with ``animate124.render`` or ``animate124.ops``, so ``phase=fit`` on this scene is an
independent check of the field + renderer. The object stays inside [-0.6, 0.6]³; cameras sit at radius 2.7 with a
40° field of view. Three training layouts (``layout=``):

- ``dense``: ``n_train`` random views, each at its own time τ = k/(n_train−1) (dense in time);
- ``multicam``: a fixed rig of ``n_cams`` random cameras filming ``n_times`` times τ = k/(n_times−1) (sparse in time,
  like a small multi-camera capture);
- ``monocular``: one camera per time, moving on an orbit (τ = k/(n_train−1), azimuth sweeping one turn).

Test and val cameras are always other random views at times midway between train times (novel views AND novel times).

CLI: ``python -m animate124.data.synthetic out=DIR [size=96 n_train=100 n_test=20 n_val=5 seed=0 layout=dense
n_times=16 n_cams=8]``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from animate124.errors import InputError

RADIUS = 2.7
"""Camera distance to the origin."""
FOV = math.radians(40.0)
"""Horizontal (= vertical) field of view."""
SAMPLES = 128
"""Midpoint-quadrature samples per ray inside the bounding sphere (chord ≤ 1.7, so dt ≤ 0.014 ≪ the blob stds)."""
SPHERE = 0.85
"""Radius of a sphere holding every blob out to > 4 std (rays missing it are empty)."""


@dataclass
class BlobScene:
    """K Gaussian density blobs; blob k has centre ``base[k] + amp[k]·sin(2π·freq[k]·τ + phase[k])`` (per axis)."""

    base: Tensor
    """[K, 3] mean centres."""
    amp: Tensor
    """[K, 3] motion amplitudes."""
    freq: Tensor
    """[K, 3] cycles over τ ∈ [0, 1]."""
    phase: Tensor
    """[K, 3] phases (rad)."""
    std: Tensor
    """[K] Gaussian std."""
    peak: Tensor
    """[K] peak density."""
    color: Tensor
    """[K, 3] colour of each blob."""

    def centres(self, t: Tensor) -> Tensor:
        """[N, K, 3] blob centres at times t [N]."""
        return self.base + self.amp * torch.sin(2 * math.pi * self.freq * t[:, None, None] + self.phase)

    def query(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Density [N, S] and colour [N, S, 3] at points x [N, S, 3] of rays with times t [N]."""
        c = self.centres(t)  # [N, K, 3]
        # |x − c|² = |x|² + |c|² − 2 x·c, as one batched matmul
        d2 = (x.pow(2).sum(-1, keepdim=True) + c.pow(2).sum(-1)[:, None] - 2.0 * x @ c.transpose(1, 2)).clamp_min(0)
        sigma_k = self.peak * torch.exp(-0.5 * d2 / self.std**2)  # [N, S, K]
        sigma = sigma_k.sum(-1)
        color = (sigma_k @ self.color) / sigma.clamp_min(1e-8)[..., None]
        return sigma, color


def default_scene() -> BlobScene:
    """A body blob bobbing slowly plus four smaller satellites moving around it (all inside [-0.6, 0.6]³)."""
    f = lambda rows: torch.tensor(rows, dtype=torch.float32)  # noqa: E731
    return BlobScene(
        base=f([[0.0, 0.0, 0.0], [0.3, 0.0, 0.15], [-0.25, 0.2, -0.1], [0.0, -0.3, 0.1], [0.05, 0.1, -0.3]]),
        amp=f([[0.0, 0.0, 0.06], [0.0, 0.12, 0.0], [0.1, 0.0, 0.1], [0.12, 0.0, 0.0], [0.0, 0.0, 0.08]]),
        freq=f([[1.0, 1.0, 1.0]] * 5),
        phase=f([[0, 0, 0], [0, 0.5, 0], [1.0, 0, 2.0], [0, 0, 0], [0, 0, 3.0]]),
        std=f([0.16, 0.08, 0.09, 0.08, 0.07]),
        peak=f([40.0, 60.0, 50.0, 60.0, 70.0]),
        color=f([[0.9, 0.75, 0.3], [0.9, 0.15, 0.15], [0.15, 0.7, 0.2], [0.2, 0.3, 0.95], [0.75, 0.2, 0.85]]),
    )


def look_at(position: Tensor) -> Tensor:
    """[4, 4] OpenGL camera-to-world at ``position`` looking at the origin, +z world up."""
    forward = -position / position.norm()
    up = torch.tensor([0.0, 0.0, 1.0])
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    cam_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, position
    return c2w


def spherical_position(elevation_deg: float, azimuth_deg: float, radius: float) -> Tensor:
    """r·(cos e·cos a, cos e·sin a, sin e) (DESIGN.md §5)."""
    e, a = math.radians(elevation_deg), math.radians(azimuth_deg)
    return torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]) * radius


def pixel_rays(c2w: Tensor, size: int, fov: float) -> tuple[Tensor, Tensor]:
    """Origins and unit directions [size², 3] through pixel centres (OpenGL: −z forward, +y up)."""
    focal = 0.5 * size / math.tan(0.5 * fov)
    j, i = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dirs = torch.stack([(i - 0.5 * size) / focal, -(j - 0.5 * size) / focal, -torch.ones_like(i)], -1).reshape(-1, 3)
    dirs = dirs @ c2w[:3, :3].T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(dirs), dirs


@torch.no_grad()
def render_view(scene: BlobScene, c2w: Tensor, time: float, size: int, chunk: int = 4096) -> Tensor:
    """Render [size, size, 4] straight-alpha RGBA with midpoint quadrature of the emission-absorption integral.

    Only rays hitting the bounding sphere are integrated, between their two sphere intersections.
    """
    origins, dirs = pixel_rays(c2w, size, FOV)
    b = (origins * dirs).sum(-1)  # ray-sphere: |o + t d|² = R²  →  t = −b ± √(b² − |o|² + R²)
    disc = b * b - origins.pow(2).sum(-1) + SPHERE**2
    hit = torch.nonzero(disc > 0).squeeze(-1)
    rgba = torch.zeros(origins.shape[0], 4)
    u = (torch.arange(SAMPLES) + 0.5) / SAMPLES
    for s in range(0, hit.numel(), chunk):
        idx = hit[s : s + chunk]
        root = disc[idx].sqrt()
        near, far = -b[idx] - root, -b[idx] + root
        mids = near[:, None] + (far - near)[:, None] * u  # [n, S]
        delta = ((far - near) / SAMPLES)[:, None]
        x = origins[idx, None] + dirs[idx, None] * mids[..., None]
        sigma, color = scene.query(x, torch.full((idx.numel(),), float(time)))
        alpha = 1.0 - torch.exp(-sigma * delta)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], 1), 1)
        weights = alpha * trans
        acc = weights.sum(1, keepdim=True)
        premult = (weights[..., None] * color).sum(1)
        rgba[idx] = torch.cat([premult / acc.clamp_min(1e-6), acc], -1)
    return rgba.clamp(0, 1).reshape(size, size, 4)


LAYOUTS = ("dense", "multicam", "monocular")
"""Training layouts of :func:`make_synthetic_scene`."""


def _random_camera(rng: np.random.Generator) -> Tensor:
    elevation = float(rng.uniform(-20.0, 55.0))
    return look_at(spherical_position(elevation, float(rng.uniform(0.0, 360.0)), RADIUS))


def _split_cameras(n: int, rng: np.random.Generator, novel: bool, n_times: int | None = None
                   ) -> list[tuple[Tensor, float]]:
    """n random views. Train (``novel`` false): τ = k/(n−1). Novel: τ midway between the ``n_times`` (default n)
    regularly spaced train times, cycling through those midpoints when n exceeds them (never a train time)."""
    cams = []
    for k in range(n):
        if not novel:
            time = k / max(n - 1, 1)
        elif n_times:
            time = ((k % (n_times - 1)) + 0.5) / (n_times - 1)
        else:
            time = (k + 0.5) / n
        cams.append((_random_camera(rng), time))
    return cams


def _train_cameras(layout: str, n_train: int, n_times: int, n_cams: int,
                   rng: np.random.Generator) -> list[tuple[Tensor, float]]:
    if layout == "dense":
        return _split_cameras(n_train, rng, novel=False)
    if layout == "multicam":
        rig = [_random_camera(rng) for _ in range(n_cams)]
        return [(c2w, k / max(n_times - 1, 1)) for k in range(n_times) for c2w in rig]
    cams = []  # monocular: one moving camera, azimuth one turn, elevation bobbing in [0°, 40°]
    for k in range(n_train):
        u = k / max(n_train - 1, 1)
        position = spherical_position(20.0 + 20.0 * math.sin(4 * math.pi * u), 360.0 * u, RADIUS)
        cams.append((look_at(position), u))
    return cams


def make_synthetic_scene(
    out_dir: str | Path, size: int = 96, n_train: int = 100, n_test: int = 20, n_val: int = 5, seed: int = 0,
    layout: str = "dense", n_times: int = 16, n_cams: int = 8,
) -> Path:
    """Write the blob scene as a D-NeRF folder: ``transforms_{train,val,test}.json`` + RGBA PNGs.

    Args:
        out_dir: Output folder (created).
        size: Square image size in pixels.
        n_train: Training views of the ``dense`` and ``monocular`` layouts (τ = k/(n_train−1)).
        n_test: Test views (other random cameras, τ midway between train times).
        n_val: Validation views (like test, further random cameras).
        seed: Camera sampling seed.
        layout: ``dense``, ``multicam`` or ``monocular`` (module docstring).
        n_times: Distinct train times of ``multicam``.
        n_cams: Rig cameras of ``multicam`` (each films every time).

    Returns:
        ``out_dir`` as a Path.
    """
    if size < 8 or n_train < 1 or n_test < 1:
        raise InputError(f"synthetic scene needs size >= 8 and at least one train/test view (got {size}, "
                         f"{n_train}, {n_test}); pass larger values")
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if layout == "multicam" and (n_times < 2 or n_cams < 1):
        raise InputError(f"layout=multicam needs n_times >= 2 and n_cams >= 1 (got {n_times}, {n_cams})")
    out = Path(out_dir)
    scene = default_scene()
    rng = np.random.default_rng(seed)
    times = n_times if layout == "multicam" else None
    splits = {"train": _train_cameras(layout, n_train, n_times, n_cams, rng),
              "test": _split_cameras(n_test, rng, novel=True, n_times=times)}
    if n_val > 0:
        splits["val"] = _split_cameras(n_val, rng, novel=True, n_times=times)
    for split, cams in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for k, (c2w, time) in enumerate(cams):
            rgba = render_view(scene, c2w, time, size)
            name = f"r_{k:03d}"
            iio.imwrite(out / split / f"{name}.png", (rgba.numpy() * 255.0 + 0.5).astype(np.uint8))
            frames.append({"file_path": f"./{split}/{name}", "time": time, "transform_matrix": c2w.tolist()})
        meta = {"camera_angle_x": FOV, "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=1))
    return out


def _parse_cli(argv: list[str]) -> dict[str, object]:
    kinds = {"out": str, "size": int, "n_train": int, "n_test": int, "n_val": int, "seed": int, "layout": str,
             "n_times": int, "n_cams": int}
    args: dict[str, object] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in kinds:
            raise InputError(f"unknown argument '{arg}'; use key=value with keys {', '.join(kinds)}")
        try:
            args[key] = kinds[key](value)
        except ValueError as exc:
            raise InputError(f"{key}={value} is not a valid {kinds[key].__name__}") from exc
    if "out" not in args:
        raise InputError("missing out=DIR; e.g. python -m animate124.data.synthetic out=outputs/blobs")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry: parse key=value arguments, write the scene, print its folder."""
    try:
        args = _parse_cli(sys.argv[1:] if argv is None else argv)
        out = make_synthetic_scene(args.pop("out"), **args)  # type: ignore[arg-type]
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
