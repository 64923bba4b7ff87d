"""Pinhole cameras, rays and camera sampling (DESIGN.md §5, spec §5.1, §6).

Conventions:
- World: right-handed, +z up, the object inside [-1, 1]³.
- Camera-to-world 4×4 matrices in the OpenGL/Blender convention: the camera looks down its −z axis, +y is up,
  +x is right (the D-NeRF / nerfstudio convention).
- Spherical coordinates (elevation°, azimuth°, radius): position = r·(cos e·cos a, cos e·sin a, sin e); azimuth 0 puts
  the camera on +x looking at the origin. The orientation is ``look_at(position, 0, up=+z)`` (so a camera that moves
  over a pole keeps the world up, like the original).
- Reference view: elevation 0, azimuth 0, radius 1.8, fovy 40°.

Ray directions are unit vectors (the original left them unnormalised, spec §14.15), so the marcher's ``t`` is a
Euclidean distance and α = 1 − exp(−σ·dt) does not depend on the pixel position.

Geometry is float32 whatever the autocast state: every function here that builds poses or rays runs under
:func:`autocast_off` (via :func:`fp32_geometry`), because CUDA autocast runs ``einsum``/``matmul`` in fp16 (and CPU
autocast in bf16), which would give fp16 ray directions next to fp32 origins and a ~1e-3 relative direction error.
The renderer (render/volume.py) and phase=fit use the same guard around their geometric parts; only field and
guidance networks run under autocast.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, TypeVar, cast

import torch
from torch import Tensor

_F = TypeVar("_F", bound=Callable[..., object])

AUTOCAST_DEVICES = ("cpu", "cuda")
"""Device types whose autocast state :func:`autocast_off` switches off."""


def autocast_off() -> ExitStack:
    """A context in which neither CPU nor CUDA autocast is active (geometry, marching, compositing).

    Only the autocast modes that are enabled are entered, so this is free (and warning-free) on CPU-only builds.
    """
    stack = ExitStack()
    for device_type in AUTOCAST_DEVICES:
        if torch.is_autocast_enabled(device_type):
            stack.enter_context(torch.autocast(device_type, enabled=False))
    return stack


def fp32_geometry(fn: _F) -> _F:
    """Decorator: run ``fn`` under :func:`autocast_off` (it must itself keep its tensors in float32 or wider)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with autocast_off():
            return fn(*args, **kwargs)

    return cast(_F, wrapper)


def geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 when the input is float64 (never a half type)."""
    return torch.float64 if dtype == torch.float64 else torch.float32

_POLE_EPS = 1e-6
"""|cos(elevation)| below this counts as a pole (look_at's up vector is parallel to the view axis)."""


@dataclass
class Cameras:
    """A batch of N pinhole cameras sharing one image size.

    Example:
        >>> cams = reference_camera(64)
        >>> origins, dirs = get_rays(cams)   # [1, 64, 64, 3] each
    """

    c2w: Tensor
    """[N, 4, 4] camera-to-world matrices (OpenGL convention)."""
    fovy: Tensor
    """[N] vertical field of view in radians."""
    height: int
    """Image height H in pixels."""
    width: int
    """Image width W in pixels."""

    def __post_init__(self) -> None:
        if self.c2w.dim() != 3 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras.c2w must be [N, 4, 4], got {tuple(self.c2w.shape)}")
        if self.fovy.dim() == 0:
            self.fovy = self.fovy.expand(self.c2w.shape[0]).clone()
        if self.fovy.shape != (self.c2w.shape[0],):
            raise ValueError(f"Cameras.fovy must be [N] = [{self.c2w.shape[0]}], got {tuple(self.fovy.shape)}")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Cameras:
        """Cameras selected by an int, a slice or an index / mask tensor (always keeps the batch dim)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        if isinstance(index, Tensor):
            index = index.to(self.c2w.device)
        return Cameras(self.c2w[index], self.fovy[index], self.height, self.width)

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def origins(self) -> Tensor:
        """[N, 3] camera centres in world coordinates."""
        return self.c2w[:, :3, 3]

    @property
    def focal(self) -> Tensor:
        """[N] focal length in pixels, H / (2·tan(fovy/2))."""
        return self.height / (2.0 * torch.tan(self.fovy / 2.0))

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.c2w.to(device), self.fovy.to(device), self.height, self.width)

    def resized(self, height: int, width: int | None = None) -> Cameras:
        """The same cameras rendering a different image size (same field of view)."""
        return Cameras(self.c2w, self.fovy, height, width if width is not None else height)

    @classmethod
    def from_spherical(
        cls,
        elevation: Tensor | float,
        azimuth: Tensor | float,
        radius: Tensor | float = 1.8,
        size: int | tuple[int, int] = 128,
        fovy_deg: float | Tensor = 40.0,
    ) -> Cameras:
        """Cameras on a sphere looking at the origin.

        Args:
            elevation: [N] or scalar, degrees.
            azimuth: [N] or scalar, degrees.
            radius: [N] or scalar.
            size: H (square) or (H, W).
            fovy_deg: vertical field of view in degrees (scalar or [N]).

        Returns:
            N cameras (N = the broadcast length of the angles).
        """
        c2w = spherical_to_c2w(elevation, azimuth, radius)
        h, w = (size, size) if isinstance(size, int) else size
        fovy = torch.deg2rad(torch.as_tensor(fovy_deg, dtype=c2w.dtype, device=c2w.device))
        return cls(c2w, fovy.expand(c2w.shape[0]).clone(), int(h), int(w))


@fp32_geometry
def get_rays(cams: Cameras) -> tuple[Tensor, Tensor]:
    """Pinhole rays through the pixel centres (float32 under any autocast; float64 for float64 cameras).

    focal = H / (2·tan(fovy/2)), principal point at the image centre, pixel (i, j) = (column, row) has centre
    (i + 0.5, j + 0.5); camera-space direction ((i+0.5−cx)/f, −(j+0.5−cy)/f, −1), rotated to world and normalised.

    Args:
        cams: N cameras.

    Returns:
        origins: [N, H, W, 3] ray origins (the camera centres).
        dirs: [N, H, W, 3] unit ray directions.
    """
    dev, dtype = cams.c2w.device, geometry_dtype(cams.c2w.dtype)
    h, w = cams.height, cams.width
    j, i = torch.meshgrid(
        torch.arange(h, device=dev, dtype=dtype) + 0.5, torch.arange(w, device=dev, dtype=dtype) + 0.5, indexing="ij"
    )
    f = cams.focal.to(dtype).view(-1, 1, 1)
    x = (i - w / 2.0) / f  # [N, H, W]
    y = -(j - h / 2.0) / f
    cam_dirs = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
    rot = cams.c2w[:, :3, :3].to(dtype)
    dirs = torch.einsum("nij,nhwj->nhwi", rot, cam_dirs)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cams.origins.to(dtype).view(-1, 1, 1, 3).expand_as(dirs)
    return origins, dirs


@fp32_geometry  # float32 rays under AMP (an fp16 einsum would give fp16 directions next to fp32 origins)
def pixel_rays(c2w: Tensor, pixel: Tensor, width: int, height: int, focal: float) -> tuple[Tensor, Tensor]:
    """Rays through the centres of single pixels of N views (the convention of :func:`get_rays`, without building
    every ray of every image: what a supervised fit samples).

    Args:
        c2w: [N, 4, 4] camera-to-world of each ray's view.
        pixel: [N] flat pixel indices row·W + col.
        width, height: image size; focal: focal length in pixels.

    Returns:
        origins [N, 3], unit directions [N, 3].
    """
    w, h = width, height
    row, col = (pixel // w).float(), (pixel % w).float()
    cam = torch.stack([(col + 0.5 - 0.5 * w) / focal, -(row + 0.5 - 0.5 * h) / focal, -torch.ones_like(col)], -1)
    dirs = torch.einsum("nij,nj->ni", c2w[:, :3, :3], cam)
    return c2w[:, :3, 3], dirs / dirs.norm(dim=-1, keepdim=True)


@fp32_geometry
def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """Camera-to-world matrices of cameras at ``eye`` looking at ``target`` (OpenGL: view axis −z, +y up).

    At a pole (view axis parallel to ``up``) the right vector falls back to +y world, which is the limit of
    ``spherical_to_c2w`` at azimuth 0.

    Args:
        eye: [N, 3] camera centres.
        target: [N, 3] or [3] points to look at (default the origin).
        up: [3] world up (default +z).

    Returns:
        c2w: [N, 4, 4].
    """
    eye = torch.as_tensor(eye, dtype=torch.float32) if not isinstance(eye, Tensor) else eye
    target = torch.zeros(3, dtype=eye.dtype, device=eye.device) if target is None else target.to(eye)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device) if up is None else up.to(eye)
    back = eye - target  # camera +z points away from the target
    back = back / back.norm(dim=-1, keepdim=True)
    right = torch.cross(up.expand_as(back), back, dim=-1)
    norm = right.norm(dim=-1, keepdim=True)
    fallback = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(right)
    right = torch.where(norm > _POLE_EPS, right / norm.clamp_min(_POLE_EPS), fallback)
    cam_up = torch.cross(back, right, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, cam_up, back, eye
    return c2w


@fp32_geometry
def spherical_to_c2w(elevation: Tensor | float, azimuth: Tensor | float, radius: Tensor | float = 1.8) -> Tensor:
    """Camera-to-world matrices of cameras on a sphere looking at the origin (world up +z).

    Closed form of ``look_at(r·(cos e cos a, cos e sin a, sin e))``: right = s·(−sin a, cos a, 0),
    up = s·(−sin e cos a, −sin e sin a, cos e) with s = sign(cos e) (s = 1 at the poles), back = position / r.

    Args:
        elevation: [N] or scalar, degrees (values beyond ±90° go over the pole).
        azimuth: [N] or scalar, degrees.
        radius: [N] or scalar.

    Returns:
        c2w: [N, 4, 4] float32 (or the dtype of a tensor argument).
    """
    tensors = [x for x in (elevation, azimuth, radius) if isinstance(x, Tensor)]
    dtype = tensors[0].dtype if tensors and tensors[0].is_floating_point() else torch.float32
    device = tensors[0].device if tensors else None
    e, a, r = (torch.as_tensor(x, dtype=dtype, device=device) for x in (elevation, azimuth, radius))
    e, a, r = torch.broadcast_tensors(e.reshape(-1), a.reshape(-1), r.reshape(-1))
    er, ar = torch.deg2rad(e), torch.deg2rad(a)
    ce, se, ca, sa = torch.cos(er), torch.sin(er), torch.cos(ar), torch.sin(ar)
    s = torch.where(ce < -_POLE_EPS, -torch.ones_like(ce), torch.ones_like(ce))
    zero = torch.zeros_like(ce)
    back = torch.stack([ce * ca, ce * sa, se], dim=-1)
    right = s[:, None] * torch.stack([-sa, ca, zero], dim=-1)
    up = s[:, None] * torch.stack([-se * ca, -se * sa, ce], dim=-1)
    c2w = torch.eye(4, dtype=dtype, device=device).repeat(e.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, back, back * r[:, None]
    return c2w


def c2w_to_spherical(c2w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Spherical coordinates of the camera centres (assumes cameras looking at the origin).

    Args:
        c2w: [N, 4, 4].

    Returns:
        elevation: [N] degrees in [−90, 90].
        azimuth: [N] degrees in (−180, 180].
        radius: [N].
    """
    pos = c2w[:, :3, 3]
    radius = pos.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((pos[:, 2] / radius.clamp_min(1e-12)).clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(pos[:, 1], pos[:, 0]))
    return elevation, azimuth, radius


def wrap_degrees(angle: Tensor) -> Tensor:
    """Angles wrapped to [−180, 180)."""
    return torch.remainder(angle + 180.0, 360.0) - 180.0


def reference_camera(
    size: int | tuple[int, int], radius: float = 1.8, fovy_deg: float = 40.0, device: torch.device | str | None = None
) -> Cameras:
    """The input view: elevation 0, azimuth 0 (camera on +x looking at the origin), radius 1.8, fovy 40°."""
    cams = Cameras.from_spherical(0.0, 0.0, radius, size, fovy_deg)
    return cams.to(device) if device is not None else cams


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def sample_random_views(
    n: int,
    generator: torch.Generator | None = None,
    uniform_sphere_rate: float = 0.5,
    elevation_range: tuple[float, float] = (-45.0, 45.0),
    azimuth_range: tuple[float, float] = (-180.0, 180.0),
    radius: float | tuple[float, float] = 1.8,
    uniform_hemisphere: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Random training views (spec §6.2), converted to z-up.

    With probability ``uniform_sphere_rate`` (per view) the direction is the original's "uniform sphere" draw
    normalize(U(−1,1), U(−1,1), U(0,1)): upper hemisphere only and NOT uniform (denser towards the cube's corners,
    spec §14.20). ``uniform_hemisphere=True`` replaces it by a truly uniform upper-hemisphere draw
    (sin e ~ U(0,1), azimuth ~ U(−180,180)). Otherwise elevation ~ U(elevation_range), azimuth ~ U(azimuth_range).

    Args:
        n: number of views.
        generator: CPU torch generator (None: the global RNG).
        uniform_sphere_rate: probability of the hemisphere branch.
        elevation_range: degrees, for the other branch.
        azimuth_range: degrees, for the other branch.
        radius: fixed radius or a (low, high) range.
        uniform_hemisphere: use the uniform hemisphere draw instead of the original's normalised cube.

    Returns:
        elevation: [n] degrees; azimuth: [n] degrees in [−180, 180); radius: [n]. CPU float32.
    """
    use_sphere = torch.rand(n, generator=generator) < uniform_sphere_rate
    if uniform_hemisphere:
        z = torch.rand(n, generator=generator)
        sph_elev = torch.rad2deg(torch.asin(z))
        sph_azim = _uniform(n, -180.0, 180.0, generator)
    else:
        d = torch.stack([_uniform(n, -1.0, 1.0, generator), _uniform(n, -1.0, 1.0, generator),
                         torch.rand(n, generator=generator)], dim=-1)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sph_elev = torch.rad2deg(torch.asin(d[:, 2].clamp(-1.0, 1.0)))
        sph_azim = torch.rad2deg(torch.atan2(d[:, 1], d[:, 0]))
    box_elev = _uniform(n, elevation_range[0], elevation_range[1], generator)
    box_azim = _uniform(n, azimuth_range[0], azimuth_range[1], generator)
    elevation = torch.where(use_sphere, sph_elev, box_elev)
    azimuth = wrap_degrees(torch.where(use_sphere, sph_azim, box_azim))
    if isinstance(radius, (tuple, list)):
        rad = _uniform(n, float(radius[0]), float(radius[1]), generator)
    else:
        rad = torch.full((n,), float(radius))
    return elevation, azimuth, rad


def moving_trajectory(
    n_frames: int,
    generator: torch.Generator | None = None,
    dynamic_cam_rate: float = 0.9,
    d_elev: float = 45.0,
    d_azim: float = 90.0,
    **view_kwargs: Any,
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Camera path of one training clip (spec §6.3).

    With probability ``dynamic_cam_rate``: start (e₀, a₀) drawn by :func:`sample_random_views`, Δe ~ U(±d_elev),
    Δa ~ U(±d_azim), frame i at (e₀ + (i/F)·Δe, a₀ + (i/F)·Δa) with the same radius (no clamping: the elevation may
    leave the sampling range, as in the original). Otherwise the camera is fixed for all frames.

    Args:
        n_frames: F.
        generator: CPU torch generator.
        dynamic_cam_rate: probability of a moving camera.
        d_elev: half-range of the elevation change over the clip, degrees.
        d_azim: half-range of the azimuth change, degrees.
        **view_kwargs: passed to :func:`sample_random_views` (ranges, radius, ...).

    Returns:
        elevation: [F] degrees; azimuth: [F] degrees in [−180, 180); radius: [F]; moving: whether the camera moves.
    """
    elev0, azim0, rad0 = sample_random_views(1, generator=generator, **view_kwargs)
    moving = bool(torch.rand(1, generator=generator).item() < dynamic_cam_rate)
    frac = torch.arange(n_frames, dtype=torch.float32) / n_frames
    if moving:
        de = _uniform(1, -d_elev, d_elev, generator)
        da = _uniform(1, -d_azim, d_azim, generator)
    else:
        de = da = torch.zeros(1)
    elevation = elev0 + frac * de
    azimuth = wrap_degrees(azim0 + frac * da)
    return elevation, azimuth, rad0.expand(n_frames).clone(), moving


def orbit(
    n: int, elevation: float = 0.0, radius: float = 1.8, turns: float = 1.0, start_azimuth: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """An azimuth sweep: view k at start_azimuth + 360°·turns·k/n (the end point is left out, so it loops).

    Returns:
        elevation: [n]; azimuth: [n] degrees in [−180, 180); radius: [n].
    """
    azimuth = wrap_degrees(start_azimuth + 360.0 * turns * torch.arange(n, dtype=torch.float32) / n)
    return torch.full((n,), float(elevation)), azimuth, torch.full((n,), float(radius))

