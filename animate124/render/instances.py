"""Scene editing at render time: several rigidly placed, time-shifted copies of trained objects in ONE volume render.

Instance i maps its local object space (the cube [−bound, bound]³ its field was trained in) to the world by
x_w = s·R·x_l + T. A world ray (o, d) becomes the local ray (R^T(o − T)/s, R^T d) with t_l = t_w / s, so each
instance is marched through its own occupancy grid in its own frame. Every sample is then expressed in world units
(t_w = s·t_l, dt_w = s·dt_l, σ_w = σ_l / s so that σ_w·dt_w = σ_l·dt_l: the opacity of a sample does not depend on
the scale), the samples of all instances are merged per ray and sorted by t_w, and ONE front-to-back compositing pass
(``ops.composite_rays_train``) produces the pixel. So copies occlude each other correctly. (Where two instances
overlap in space their samples interleave; each keeps its own dt, a first-order approximation of summing densities.)

Shading (lambertian / textureless / normal) uses each instance's field normals rotated into the world.
Each instance has its own clock: τ_i = wrap(time_offset + time_speed·τ) with wrap loop | pingpong | clamp.

Example:
    >>> a = Instance(field, occ, translation=torch.tensor([0.0, -0.6, 0.0]), scale=0.6)
    >>> b = Instance(field, occ, translation=torch.tensor([0.0, 0.6, 0.0]), scale=0.6, time_offset=0.5)
    >>> out = InstancesRenderer([a, b], render_cfg).render_image(cams, times)   # rgb [1, F, H, W, 3]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from animate124.config.schema import RenderConfig
from animate124.errors import ConfigError
from animate124.render.cameras import Cameras, get_rays
from animate124.render.march import FieldSamples, Samples, check_shading, evaluate, march, normals_needed, shade_and_composite
from animate124.render.occupancy import OccupancyGrid
from animate124.types import RenderOutput, RenderRequest

TIME_WRAPS = ("loop", "pingpong", "clamp")


def euler_to_matrix(degrees: Sequence[float]) -> Tensor:
    """Rotation R = Rz·Ry·Rx of extrinsic rotations about x, then y, then z (degrees) → [3, 3] float32."""
    ax, ay, az = (math.radians(float(a)) for a in degrees)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return (rz @ ry @ rx).float()


def wrap_time(tau: Tensor, mode: str) -> Tensor:
    """Bring times back into [0, 1]: loop (period 1; positive integers map to 1, 0 to 0), pingpong (bounce), clamp."""
    if mode == "loop":
        return torch.where(tau > 0, tau - torch.ceil(tau) + 1.0, tau - torch.floor(tau))
    if mode == "pingpong":
        r = torch.remainder(tau.abs(), 2.0)
        return torch.where(r > 1.0, 2.0 - r, r)
    if mode == "clamp":
        return tau.clamp(0.0, 1.0)
    raise ConfigError(f"instance time_wrap must be one of {', '.join(TIME_WRAPS)} (got {mode!r})")


def _on(x: Tensor | None, like: Tensor) -> Tensor | None:
    """``x`` on the device and in the dtype of ``like`` (None stays None)."""
    return x.to(like) if x is not None else None


class Instance(nn.Module):
    """One placed copy of a trained object.

    Args:
        field: the object's field (``forward(x, t) -> FieldOutput``, ``is_dynamic``, ``bound``).
        occupancy: its occupancy grid.
        rotation: [3, 3] rotation R (default identity).
        translation: [3] world position T of the local origin.
        scale: uniform scale s > 0.
        time_offset: added to the instance clock.
        time_speed: multiplies the scene time.
        time_wrap: loop | pingpong | clamp.
    """

    def __init__(
        self,
        field: nn.Module,
        occupancy: OccupancyGrid,
        rotation: Tensor | None = None,
        translation: Tensor | None = None,
        scale: float = 1.0,
        time_offset: float = 0.0,
        time_speed: float = 1.0,
        time_wrap: str = "loop",
    ) -> None:
        super().__init__()
        if scale <= 0:
            raise ConfigError(f"instance scale must be > 0 (got {scale})")
        if time_wrap not in TIME_WRAPS:
            raise ConfigError(f"instance time_wrap must be one of {', '.join(TIME_WRAPS)} (got {time_wrap!r})")
        self.field = field
        self.occupancy = occupancy
        rot = torch.eye(3) if rotation is None else torch.as_tensor(rotation, dtype=torch.float32)
        if rot.shape != (3, 3):
            raise ConfigError(f"instance rotation must be 3x3, got {tuple(rot.shape)}")
        trans = torch.zeros(3) if translation is None else torch.as_tensor(translation, dtype=torch.float32)
        if trans.shape != (3,):
            raise ConfigError(f"instance translation must be [x, y, z], got {tuple(trans.shape)}")
        self.rotation: Tensor
        self.register_buffer("rotation", rot, persistent=False)
        self.translation: Tensor
        self.register_buffer("translation", trans, persistent=False)
        self.scale, self.time_offset, self.time_speed, self.time_wrap = float(scale), float(time_offset), \
            float(time_speed), time_wrap
        b = float(occupancy.bound)
        self.aabb: Tensor
        self.register_buffer("aabb", torch.tensor([-b, -b, -b, b, b, b]), persistent=False)

    @classmethod
    def from_config(cls, field: nn.Module, occupancy: OccupancyGrid, spec: Any) -> Instance:
        """From an ``InstanceConfig`` (rotation as Euler degrees)."""
        trans = torch.tensor(spec.translation, dtype=torch.float32)
        return cls(field, occupancy, euler_to_matrix(spec.rotation), trans,
                   spec.scale, spec.time_offset, spec.time_speed, getattr(spec.time_wrap, "value", spec.time_wrap))

    @property
    def dynamic(self) -> bool:
        return bool(getattr(self.field, "is_dynamic", False))

    def local_rays(self, rays_o: Tensor, rays_d: Tensor) -> tuple[Tensor, Tensor]:
        """World rays → local rays: o_l = R^T(o − T)/s, d_l = R^T d (still unit)."""
        o = ((rays_o - self.translation) @ self.rotation) / self.scale
        return o, rays_d @ self.rotation

    def local_times(self, times: Tensor) -> Tensor:
        """τ_i = wrap(time_offset + time_speed·τ)."""
        return wrap_time(self.time_offset + self.time_speed * times, self.time_wrap)


class InstancesRenderer(nn.Module):
    """Renders a list of instances together (same ``render_rays`` / ``render_image`` API as VolumeRenderer).

    Args:
        instances: the placed objects.
        cfg: render settings (step count, thresholds, chunking); dt_l = 2√3·bound_i / max_steps in each local frame.
    """

    def __init__(self, instances: Sequence[Instance], cfg: RenderConfig | None = None) -> None:
        super().__init__()
        if not instances:
            raise ConfigError("instances must not be empty; give at least one instance")
        self.instances = nn.ModuleList(instances)
        self.cfg = cfg if cfg is not None else RenderConfig()
        self._dummy: Tensor
        self.register_buffer("_dummy", torch.empty(0), persistent=False)

    def _march(self, inst: Instance, rays_o: Tensor, rays_d: Tensor, times: Tensor | None, perturb: bool,
               need_normals: bool) -> tuple[Samples, FieldSamples]:
        """One instance's samples (ray ids, t_w and dt_w in world units) and its field at them (σ_w = σ_l / s, world
        normals: rotated by R, which a uniform scale does not change; None unless ``need_normals``)."""
        o, d = inst.local_rays(rays_o, rays_d)
        tau = inst.local_times(times) if times is not None else None
        s = march(o, d, inst.occupancy, tau, inst.aabb, self.cfg.min_near / inst.scale, self.cfg.max_steps, perturb)
        f = evaluate(inst.field, s.xyzs, s.ray_ids, tau, need_normals)
        normals = f.normals @ inst.rotation.T if f.normals is not None else None
        return Samples(s.xyzs, s.dirs, s.ts * inst.scale, s.rays, s.ray_ids), \
            FieldSamples(f.sigmas / inst.scale, f.albedo, normals)

    def render_rays(self, rays_o: Tensor, rays_d: Tensor, times: Tensor | None = None,
                    request: RenderRequest | None = None) -> RenderOutput:
        """Render N world rays through all instances (see the module docstring).

        Args:
            rays_o: [N, 3] origins; rays_d: [N, 3] unit directions; times: [N] scene τ (None: static).
            request: as in ``VolumeRenderer.render_rays`` (normals only when the shading needs them); default
                ``RenderRequest(perturb=False)``.

        Returns:
            RenderOutput with rgb [N, 3], opacity [N, 1], depth [N, 1] (world distance Σ w·t_w), sample_weights [M].
        """
        req = request if request is not None else RenderRequest(perturb=False)
        req = dataclasses.replace(req, background=_on(req.background, rays_o), light_dir=_on(req.light_dir, rays_o))
        check_shading(req.shading)
        n = rays_o.shape[0]
        need = normals_needed(req.shading, req.ambient, None)
        parts = [self._march(inst, rays_o, rays_d, times, req.perturb, need) for inst in self.instances]
        ids = torch.cat([p[0].ray_ids for p in parts])
        ts = torch.cat([p[0].ts for p in parts])
        # sort by (ray, t): stable sort by t, then stable sort by ray id keeps the t order within each ray
        order = torch.argsort(ts[:, 0], stable=True)
        order = order[torch.argsort(ids[order], stable=True)]
        counts = torch.bincount(ids, minlength=n)
        offsets = torch.cumsum(counts, 0) - counts
        ids, ts = ids[order], ts[order]
        dirs = rays_d[ids]
        merged = Samples(rays_o[ids] + dirs * ts[:, :1], dirs, ts, torch.stack([offsets, counts], dim=-1).to(torch.int32),
                         ids)
        normals = torch.cat([p[1].normals for p in parts if p[1].normals is not None])[order] if need else None
        field_out = FieldSamples(torch.cat([p[1].sigmas for p in parts])[order],
                                 torch.cat([p[1].albedo for p in parts])[order], normals)
        return shade_and_composite(merged, field_out, rays_o, req, self.cfg.t_thresh)

    @torch.no_grad()
    def render_image(self, cameras: Cameras, times: Tensor | None = None, request: RenderRequest | None = None,
                     **_: Any) -> RenderOutput:
        """Inference render of F frames (one camera and one time per frame), chunked by ``cfg.chunk_rays``.

        Args:
            cameras: F cameras.
            times: [F] scene times (None: static).
            request: background [3] (default white), shading, ambient, light_dir [3] (default: towards each ray's
                origin); ``perturb`` is not used (no jitter).

        Returns:
            RenderOutput with rgb [1, F, H, W, 3], opacity / depth [1, F, H, W, 1] on the CPU.
        """
        req = dataclasses.replace(request if request is not None else RenderRequest(), perturb=False)
        cams = cameras.to(self._dummy.device)
        origins, dirs = get_rays(cams)
        f, h, w = len(cams), cams.height, cams.width
        rays_o, rays_d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        ray_t = times.to(rays_o).repeat_interleave(h * w) if times is not None else None
        chunk, outs = max(1, self.cfg.chunk_rays), []
        for s in range(0, rays_o.shape[0], chunk):
            sl = slice(s, s + chunk)
            o = self.render_rays(rays_o[sl], rays_d[sl], ray_t[sl] if ray_t is not None else None, req)
            outs.append((o.rgb.cpu(), o.opacity.cpu(), o.depth.cpu()))
        rgb, acc, depth = (torch.cat([p[k] for p in outs]) for k in range(3))
        return RenderOutput(rgb=rgb.reshape(1, f, h, w, 3), opacity=acc.reshape(1, f, h, w, 1),
                            depth=depth.reshape(1, f, h, w, 1))
