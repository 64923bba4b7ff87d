"""Camera paths × scene time for export: orbit, fixed views, turntable, spiral, keyframe files, D-NeRF camera files.

A path is a :class:`CameraPath`: N cameras and the scene time τ of each frame. Time control (start, end, speed,
forward/ping-pong looping) is :func:`time_schedule`; the camera paths take the schedule as an argument so any path can
be combined with any timing. Conventions of ``render/cameras.py``: z up, OpenGL camera-to-world, spherical
(elevation°, azimuth°, radius) with azimuth 0 on +x.

Example:
    >>> times = time_schedule(60, start=0.0, end=1.0, loop="pingpong", speed=2.0)
    >>> path = orbit_path(60, times, elevation=15.0, size=256)
    >>> len(path)   # 60 cameras, path.times is [60]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from animate124.errors import InputError
from animate124.io.run_dir import read_json
from animate124.render.cameras import Cameras, spherical_to_c2w

REF_ELEVATION, REF_AZIMUTH, REF_RADIUS, REF_FOVY = 0.0, 0.0, 1.8, 40.0
"""The reference view (DESIGN.md §5): defaults of every spherical keyframe value."""


@dataclass
class CameraPath:
    """N frames: a camera and a scene time each."""

    cameras: Cameras
    """N cameras (one image size)."""
    times: Tensor
    """[N] scene time τ ∈ [0, 1] of each frame."""

    def __len__(self) -> int:
        return len(self.cameras)


# ------------------------------------------------------------------------------------------------ time control
def time_schedule(
    n: int, start: float = 0.0, end: float = 1.0, loop: str = "forward", speed: float = 1.0
) -> Tensor:
    """Scene time of each of n frames.

    The playhead p_k = speed·k/(n−1) (p = 0 for n = 1) counts passes over [start, end]. ``forward`` plays each pass
    from start to end (f = p − ⌈p⌉ + 1 for p > 0, so a pass ends exactly on ``end`` and the next starts after it);
    ``pingpong`` bounces (f = triangle wave of period 2). τ_k = start + f_k·(end − start). With speed 1 both give
    n times evenly spaced over [start, end]. ``end < start`` plays backwards.

    Args:
        n: number of frames (≥ 1).
        start: τ of the first frame.
        end: τ at the end of a pass.
        loop: ``forward`` | ``pingpong``.
        speed: passes over [start, end] during the n frames (> 0).

    Returns:
        [n] float32 times.
    """
    if n < 1:
        raise InputError(f"frames must be >= 1 (got {n}); pass frames=N with N >= 1")
    if speed <= 0:
        raise InputError(f"time.speed must be > 0 (got {speed}); use time.start/time.end to reverse")
    for name, value in (("time.start", start), ("time.end", end)):
        if not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be in [0, 1] (got {value}); scene time runs over [0, 1]")
    k = torch.arange(n, dtype=torch.float64)
    p = speed * k / max(n - 1, 1)
    if loop == "forward":
        f = torch.where(p > 0, p - torch.ceil(p) + 1.0, torch.zeros_like(p))
    elif loop == "pingpong":
        r = torch.remainder(p, 2.0)
        f = torch.where(r > 1.0, 2.0 - r, r)
    else:
        raise InputError(f"time.loop must be forward or pingpong (got {loop!r}); pass time.loop=forward|pingpong")
    return (start + f * (end - start)).to(torch.float32)


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


# ------------------------------------------------------------------------------------------------ simple paths
def orbit_path(
    n: int,
    times: Tensor,
    elevation: float = 0.0,
    radius: float = REF_RADIUS,
    turns: float = 1.0,
    start_azimuth: float = 0.0,
    fovy_deg: float = REF_FOVY,
    size: int | Sequence[int] = 256,
) -> CameraPath:
    """Azimuth sweep while τ runs: frame k at azimuth start + 360°·turns·k/n (end point left out, so it loops).

    Args:
        n: frames.
        times: [n] scene times (see :func:`time_schedule`).
        elevation: degrees.
        radius: camera distance.
        turns: full turns over the video (negative turns clockwise).
        start_azimuth: degrees of frame 0.
        fovy_deg: vertical field of view.
        size: H or (H, W).

    Returns:
        The path.
    """
    azimuth = start_azimuth + 360.0 * turns * torch.arange(n, dtype=torch.float64) / n
    cams = Cameras.from_spherical(torch.full((n,), float(elevation)), azimuth.float(), radius, _size(size), fovy_deg)
    return CameraPath(cams, times)


def turntable_path(
    n: int, time: float = 0.0, **orbit_kwargs: Any
) -> CameraPath:
    """An orbit with τ frozen at ``time`` (all :func:`orbit_path` options apply)."""
    return orbit_path(n, torch.full((n,), float(time)), **orbit_kwargs)


def fixed_paths(
    n: int,
    times: Tensor,
    views: Sequence[Sequence[float]] = ((REF_ELEVATION, REF_AZIMUTH),),
    radius: float = REF_RADIUS,
    fovy_deg: float = REF_FOVY,
    size: int | Sequence[int] = 256,
) -> list[CameraPath]:
    """One still camera per view while τ runs.

    Args:
        n: frames per view.
        times: [n] scene times.
        views: (elevation°, azimuth°) or (elevation°, azimuth°, radius) per view.
        radius: default radius.
        fovy_deg: vertical field of view.
        size: H or (H, W).

    Returns:
        One path per view.
    """
    out = []
    for view in views:
        if len(view) not in (2, 3):
            raise InputError(f"fixed view {list(view)} must be [elevation, azimuth] or [elevation, azimuth, radius]")
        r = float(view[2]) if len(view) == 3 else radius
        cams = Cameras.from_spherical(torch.full((n,), float(view[0])), torch.full((n,), float(view[1])), r,
                                      _size(size), fovy_deg)
        out.append(CameraPath(cams, times))
    return out


def spiral_path(
    n: int,
    times: Tensor,
    elevation_range: Sequence[float] = (-15.0, 45.0),
    radius: float = REF_RADIUS,
    turns: float = 2.0,
    start_azimuth: float = 0.0,
    fovy_deg: float = REF_FOVY,
    size: int | Sequence[int] = 256,
) -> CameraPath:
    """Azimuth sweep of ``turns`` turns while the elevation rises from the low end of the range to the high end and
    back (e = lo + (hi − lo)·(1 − cos 2πk/n)/2), so the path loops.

    Returns:
        The path.
    """
    lo, hi = float(elevation_range[0]), float(elevation_range[1])
    u = torch.arange(n, dtype=torch.float64) / n
    elevation = lo + (hi - lo) * 0.5 * (1.0 - torch.cos(2.0 * math.pi * u))
    azimuth = start_azimuth + 360.0 * turns * u
    cams = Cameras.from_spherical(elevation.float(), azimuth.float(), radius, _size(size), fovy_deg)
    return CameraPath(cams, times)


# ------------------------------------------------------------------------------------------------ interpolation
def catmull_rom(values: Tensor, knots: Tensor, query: Tensor) -> Tensor:
    """Uniform Catmull-Rom spline through ``values`` at ``knots``, evaluated at ``query`` (C¹, passes through knots).

    Each segment [k_i, k_{i+1}] is parametrised by s ∈ [0, 1]; the end tangents use a duplicated end point. Queries
    outside [k_0, k_last] are clamped.

    Args:
        values: [K, D] keyframe values (K ≥ 1).
        knots: [K] increasing positions.
        query: [N] positions.

    Returns:
        [N, D].
    """
    k = values.shape[0]
    if k == 1:
        return values.expand(query.shape[0], -1).clone()
    q = query.clamp(knots[0], knots[-1])
    seg = torch.searchsorted(knots, q, right=True).clamp(1, k - 1) - 1  # [N] segment index i
    s = ((q - knots[seg]) / (knots[seg + 1] - knots[seg]))[:, None]
    p0 = values[(seg - 1).clamp_min(0)]
    p1, p2 = values[seg], values[seg + 1]
    p3 = values[(seg + 2).clamp_max(k - 1)]
    a, b, c = -p0 + p2, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
    return 0.5 * (2 * p1 + a * s + b * s**2 + c * s**3)


def matrix_to_quaternion(rot: Tensor) -> Tensor:
    """[N, 3, 3] rotation matrices → [N, 4] unit quaternions (w, x, y, z), w ≥ 0 (Shepperd's method)."""
    m = rot
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], m[:, 0, 1] + m[:, 1, 0],
                     m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                     m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], dim=1)  # [N, 4 candidates, 4]; the one with the largest norm is the best conditioned
    best = cands.norm(dim=-1).argmax(dim=1)
    q = cands[torch.arange(m.shape[0]), best]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[:, :1] < 0, -q, q)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """[N, 4] quaternions (w, x, y, z) → [N, 3, 3] rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def slerp(q0: Tensor, q1: Tensor, s: Tensor) -> Tensor:
    """Spherical linear interpolation of unit quaternions [N, 4] at fractions s [N] (shortest arc)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_t = torch.sin(theta)
    s = s[:, None]
    near = sin_t < 1e-6  # nearly identical rotations: lerp is exact to first order
    w0 = torch.where(near, 1 - s, torch.sin((1 - s) * theta) / sin_t.clamp_min(1e-12))
    w1 = torch.where(near, s, torch.sin(s * theta) / sin_t.clamp_min(1e-12))
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------------------------------------ keyframe files
def _keyframe_knots(keys: list[dict[str, Any]], source: str) -> Tensor:
    """Positions of the keyframes in the video in [0, 1]: their ``t`` values, else evenly spaced."""
    if all("t" in k for k in keys):
        knots = torch.tensor([float(k["t"]) for k in keys], dtype=torch.float64)
        if len(keys) > 1 and not bool((knots[1:] > knots[:-1]).all()):
            raise InputError(f"{source}: keyframe 't' values must increase strictly; fix the camera-path file")
        return knots
    if any("t" in k for k in keys):
        raise InputError(f"{source}: give 't' for every keyframe or for none; fix the camera-path file")
    if len(keys) == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(0.0, 1.0, len(keys), dtype=torch.float64)


def keyframe_path(
    spec: dict[str, Any], n: int, times: Tensor, size: int | Sequence[int] = 256, source: str = "camera path"
) -> CameraPath:
    """Interpolate a keyframe camera path: Catmull-Rom for positions/angles/radius/fov/time, slerp for rotations.

    ``spec = {"keyframes": [{...}, ...]}``; each keyframe either has ``c2w`` (4×4 or 3×4, OpenGL camera-to-world) or
    spherical ``elevation``/``azimuth``/``radius`` (degrees; missing values default to the reference view; azimuths are
    not wrapped, so 0 → 360 is one full turn), plus optional ``fov`` (vertical, degrees), ``time`` (scene τ) and ``t``
    (position in the video, [0, 1], increasing; default evenly spaced). Frame k sits at u = k/(n−1). Without ``time``
    on every keyframe, the frames use ``times`` (the time schedule of the export config).

    Args:
        spec: the parsed JSON object.
        n: frames.
        times: [n] scene times used when keyframes carry no ``time``.
        size: H or (H, W).
        source: name used in error messages.

    Returns:
        The path.
    """
    keys = spec.get("keyframes")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise InputError(f"{source}: 'keyframes' must be a non-empty list of objects; fix the camera-path file")
    knots = _keyframe_knots(keys, source)
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    u = knots[0] + u * (knots[-1] - knots[0])
    fov = torch.tensor([[float(k.get("fov", REF_FOVY))] for k in keys], dtype=torch.float64)
    fovy = catmull_rom(fov, knots, u)[:, 0]
    if all("c2w" in k for k in keys):
        c2w_keys = []
        for k in keys:
            m = torch.tensor(k["c2w"], dtype=torch.float64)
            if m.shape not in ((4, 4), (3, 4)):
                raise InputError(f"{source}: c2w must be 4x4 or 3x4 (got {list(m.shape)}); fix the camera-path file")
            c2w_keys.append(m[:3])
        mats = torch.stack(c2w_keys)
        pos = catmull_rom(mats[:, :, 3], knots, u)
        quats = matrix_to_quaternion(mats[:, :, :3])
        seg = torch.searchsorted(knots, u.clamp(knots[0], knots[-1]), right=True).clamp(1, max(len(keys) - 1, 1)) - 1
        if len(keys) == 1:
            rot = quaternion_to_matrix(quats.expand(n, -1))
        else:
            s = ((u - knots[seg]) / (knots[seg + 1] - knots[seg])).clamp(0.0, 1.0)
            rot = quaternion_to_matrix(slerp(quats[seg], quats[seg + 1], s))
        c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
        c2w[:, :3, :3], c2w[:, :3, 3] = rot, pos
    elif any("c2w" in k for k in keys):
        raise InputError(f"{source}: mix of c2w and spherical keyframes; use one kind for all keyframes")
    else:
        sph = torch.tensor([[float(k.get("elevation", REF_ELEVATION)), float(k.get("azimuth", REF_AZIMUTH)),
                             float(k.get("radius", REF_RADIUS))] for k in keys], dtype=torch.float64)
        e, a, r = catmull_rom(sph, knots, u).unbind(-1)
        c2w = spherical_to_c2w(e, a, r)
    if all("time" in k for k in keys):
        tk = torch.tensor([[float(k["time"])] for k in keys], dtype=torch.float64)
        times = catmull_rom(tk, knots, u)[:, 0].clamp(0.0, 1.0)
    elif any("time" in k for k in keys):
        raise InputError(f"{source}: give 'time' for every keyframe or for none; fix the camera-path file")
    h, w = _size(size)
    cams = Cameras(c2w.float(), torch.deg2rad(fovy).float(), h, w)
    return CameraPath(cams, times.float())


def dnerf_path(spec: dict[str, Any], size: int | Sequence[int] | None, source: str = "camera file") -> CameraPath:
    """Every frame of a D-NeRF-style camera file, in file order.

    Uses each frame's ``transform_matrix`` (OpenGL c2w, z-up: no conversion), ``time`` (default 0) and the file's
    ``camera_angle_x`` (horizontal fov, radians; fovy = 2·atan(tan(fovx/2)·H/W)). The size comes from the file's
    ``h``/``w`` keys when present, else ``size``.

    Args:
        spec: the parsed JSON object.
        size: H or (H, W) when the file has no ``h``/``w``.
        source: name used in error messages.

    Returns:
        The path.
    """
    frames = spec.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{source} has no frames; give a D-NeRF transforms file with a non-empty 'frames' list")
    if "camera_angle_x" not in spec:
        raise InputError(f"{source} has no camera_angle_x; add the horizontal field of view (radians)")
    if "h" in spec and "w" in spec:
        h, w = int(spec["h"]), int(spec["w"])
    elif size is not None:
        h, w = _size(size)
    else:
        raise InputError(f"{source} has no h/w keys and no dataset size is known; pass size=N")
    try:
        c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32)
        times = torch.tensor([float(f.get("time", 0.0)) for f in frames], dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: every frame needs a 4x4 transform_matrix ({exc}); fix the camera file") from exc
    if c2w.shape[1:] != (4, 4):
        raise InputError(f"{source}: transform_matrix must be 4x4 (got {list(c2w.shape[1:])}); fix the camera file")
    fovx = float(spec["camera_angle_x"])
    fovy = 2.0 * math.atan(math.tan(fovx / 2.0) * h / w)
    return CameraPath(Cameras(c2w, torch.full((len(frames),), fovy), h, w), times)


def read_path_file(path: str | Path) -> dict[str, Any]:
    """Parse a camera-path JSON object file (InputError naming the file when missing, invalid or not an object)."""
    return read_json(path)


def is_dnerf_spec(spec: dict[str, Any]) -> bool:
    """True for a D-NeRF transforms file (has 'frames'), False for a keyframe file."""
    return "frames" in spec and "keyframes" not in spec
