"""Occupancy-grid-accelerated volume rendering: march → one field call → shade → composite (spec §4.5, §5).

All numerics go through :mod:`animate124.ops` (CUDA kernels when available, else the pure-torch reference); this
module only arranges the data. Step size dt = 2√3·bound / max_steps (constant, ≈ 0.00338 for bound 1, 1024 steps);
samples are emitted only in occupied cells of the ray's time slot; compositing stops when T < t_thresh.

Batch convention of :meth:`VolumeRenderer.render` (B clips × F frames):
- ``times`` [B, F]: ``cameras`` has B·F entries, frame-major within each clip (entry b·F + f is clip b, frame f), or
  B entries, each reused for all F frames of its clip (a fixed camera).
- ``times`` [F]: the same as [1, F] (cameras has F entries or 1).
- ``times`` None: a static render, F = 1 and B = len(cameras).
All frames of all clips are marched together and evaluated by ONE field call with per-sample τ (spec §5.3).

A render is :func:`~animate124.render.march.march` → :func:`~animate124.render.march.evaluate` →
:func:`~animate124.render.march.shade_and_composite` (shared with ``render.instances``). What is asked for besides
cameras and times (background, shading, ambient, light, perturb) is one :class:`~animate124.types.RenderRequest`.

``render.backend=nerfacc`` calls ``animate124.render.nerfacc_backend.render_rays_nerfacc(field, occupancy, cfg,
rays_o, rays_d, times, request, need_normals) -> RenderOutput`` (CUDA only), imported lazily.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn

from animate124 import ops
from animate124.config.schema import RenderBackend, RenderConfig
from animate124.errors import ConfigError
from animate124.ops import _backend
from animate124.ops import inference as ops_inference
from animate124.render.cameras import Cameras, autocast_off, fp32_geometry, get_rays
from animate124.render.march import (
    SHADING_MODES,
    check_shading,
    evaluate,
    is_dynamic,
    march,
    normals_needed,
    per_ray,
    sample_ray_indices,
    shade,
    shade_and_composite,
    step_size,
)
from animate124.render.occupancy import OccupancyGrid
from animate124.types import RenderOutput, RenderRequest

__all__ = ["SHADING_MODES", "VolumeRenderer", "sample_ray_indices", "shade"]

_NERFACC_HINT = "render.backend=nerfacc needs CUDA and nerfacc; use render.backend=auto"


class VolumeRenderer(nn.Module):
    """Renders a field through an occupancy grid.

    Args:
        field: ``field(x [N,3], t [N] | None) -> FieldOutput``, with ``normals(x, t) -> [N,3]`` and ``is_dynamic``.
        occupancy: the occupancy grid (its bound must equal the field's).
        cfg: render settings (step size, thresholds, backend, chunking).

    Example:
        >>> renderer = VolumeRenderer(field, OccupancyGrid(128, time_slots=16), RenderConfig())
        >>> out = renderer.render(cams, times, RenderRequest(background=torch.rand(3)))   # out.rgb [B, F, H, W, 3]
    """

    def __init__(self, field: nn.Module, occupancy: OccupancyGrid, cfg: RenderConfig | None = None) -> None:
        super().__init__()
        self.field = field
        self.occupancy = occupancy
        self.cfg = cfg if cfg is not None else RenderConfig()
        self.bound = float(occupancy.bound)
        field_bound = getattr(field, "bound", getattr(getattr(field, "cfg", None), "bound", None))
        if field_bound is not None and abs(float(field_bound) - self.bound) > 1e-6:
            raise ConfigError(f"field bound {field_bound} != occupancy bound {self.bound}; "
                              "build the OccupancyGrid with bound=field.bound")
        if self.cfg.max_steps < 1:
            raise ConfigError(f"render.max_steps must be >= 1, got {self.cfg.max_steps}; the original uses 1024")
        b = self.bound
        self.aabb: Tensor
        # born on the grid's device, so callers need not move the renderer: a CPU aabb sent every render's cameras
        # back to the CPU, next to a CUDA bitfield (issue 11)
        self.register_buffer("aabb", torch.tensor([-b, -b, -b, b, b, b], device=occupancy.bitfield.device),
                             persistent=False)

    @property
    def dt(self) -> float:
        """Constant marching step 2√3·bound / max_steps."""
        return step_size(self.bound, self.cfg.max_steps)

    def density_fn(self, x: Tensor, t: Tensor | None) -> Tensor:
        """σ(x, t) of the field (what :meth:`OccupancyGrid.update` expects)."""
        return self.field.density(x, t if self._dynamic else None)

    @property
    def _dynamic(self) -> bool:
        return is_dynamic(self.field)

    normals_needed = staticmethod(normals_needed)

    def _check_backend(self, rays_o: Tensor) -> None:
        if self.cfg.backend == RenderBackend.cuda and not _backend.use_cuda(rays_o):
            raise ConfigError("render.backend=cuda needs a CUDA device and the compiled kernels "
                              f"({_backend.backend_info()['how']}); use render.backend=auto")

    def _nerfacc_fn(self, rays_o: Tensor) -> Callable[..., RenderOutput]:
        """nerfacc_backend.render_rays_nerfacc (which raises ConfigError for CPU rays or a missing nerfacc)."""
        try:
            from animate124.render.nerfacc_backend import render_rays_nerfacc
        except ImportError as exc:
            raise ConfigError(f"{_NERFACC_HINT} ({exc})") from exc
        return render_rays_nerfacc

    def render_rays(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        times: Tensor | None = None,
        request: RenderRequest | None = None,
        need_normals: bool | None = None,
    ) -> RenderOutput:
        """Render N rays: :func:`march` → :func:`evaluate` → :func:`shade_and_composite`.

        Args:
            rays_o: [N, 3] origins.
            rays_d: [N, 3] unit directions.
            times: [N] scene time of each ray (None: static; ignored by static fields).
            request: what is asked for (default ``RenderRequest()``): background [3] or [N, 3] (default white),
                shading (one of ``SHADING_MODES``), ambient, light_dir [3] or [N, 3] (normalised here; default:
                towards the camera centre from the origin, normalize(rays_o)), perturb (random start offset in
                [0, dt) per ray; False uses dt/2).
            need_normals: force (True) or skip (False) normals; None decides by :func:`normals_needed`.

        Returns:
            RenderOutput with rgb [N, 3], opacity [N, 1], depth [N, 1] (Σ w·t), normals [N, 3] ((n+1)/2 composited
            with detached weights, no background) or None, and per-sample weights [M], normals [M, 3] | None,
            dirs [M, 3].
        """
        req = request if request is not None else RenderRequest()
        check_shading(req.shading)
        if self.cfg.backend == RenderBackend.nerfacc:
            return self._nerfacc_fn(rays_o)(self.field, self.occupancy, self.cfg, rays_o, rays_d, times, req,
                                            need_normals)
        self._check_backend(rays_o)
        rays_o, rays_d = rays_o.to(torch.float32), rays_d.to(torch.float32)
        samples = march(rays_o, rays_d, self.occupancy, times, self.aabb.to(torch.float32), self.cfg.min_near,
                        self.cfg.max_steps, req.perturb)
        field_out = evaluate(self.field, samples.xyzs, samples.ray_ids, times,
                             self.normals_needed(req.shading, req.ambient, need_normals))
        return shade_and_composite(samples, field_out, rays_o, req, self.cfg.t_thresh)

    def _frames(self, cameras: Cameras, times: Tensor | None) -> tuple[Cameras, Tensor | None, int, int]:
        """Expand cameras to one per (clip, frame) and times to [B·F] (see the module docstring)."""
        if times is None:
            return cameras, None, len(cameras), 1
        tb = times.unsqueeze(0) if times.dim() == 1 else times
        if tb.dim() != 2:
            raise ValueError(f"times must be [F] or [B, F], got {tuple(times.shape)}")
        b, f = tb.shape
        if len(cameras) == b * f:
            cams = cameras
        elif len(cameras) == b:
            cams = cameras[torch.arange(b).repeat_interleave(f)]
        else:
            raise ValueError(f"{len(cameras)} cameras for times {tuple(tb.shape)}: need B·F = {b * f} or B = {b}")
        return cams, tb.reshape(-1), b, f

    @fp32_geometry
    def _frame_rays(
        self, cameras: Cameras, times: Tensor | None, request: RenderRequest
    ) -> tuple[Tensor, Tensor, Tensor | None, RenderRequest, tuple[int, int, int, int]]:
        """Rays of all frames: (rays_o, rays_d, times, the request with background / light_dir per ray) + (B, F, H, W)."""
        cams, tflat, b, f = self._frames(cameras, times)
        cams = cams.to(self.aabb.device)
        origins, dirs = get_rays(cams)
        h, w = cams.height, cams.width
        per_frame = h * w
        ray_t = tflat.to(origins.device).repeat_interleave(per_frame) if tflat is not None else None
        bg = None
        if request.background is not None:
            bg = request.background.to(origins)
            if bg.dim() == 2:  # [B, 3]
                bg = bg[:, None, None, None]
            elif bg.dim() == 3:  # [B, F, 3]
                bg = bg[:, :, None, None]
            bg = bg.expand(b, f, h, w, 3).reshape(-1, 3) if bg.dim() > 1 else bg
        light = None
        if request.light_dir is not None:
            light = request.light_dir.to(origins)
            if light.dim() > 1:  # [B, F, 3] or [B·F, 3]
                light = light.reshape(b * f, 3).repeat_interleave(per_frame, dim=0)
        rays_req = dataclasses.replace(request, background=bg, light_dir=light)
        return origins.reshape(-1, 3), dirs.reshape(-1, 3), ray_t, rays_req, (b, f, h, w)

    def render(
        self,
        cameras: Cameras,
        times: Tensor | None = None,
        request: RenderRequest | None = None,
        need_normals: bool | None = None,
    ) -> RenderOutput:
        """Render B clips × F frames with gradients (training).

        Args:
            cameras: B·F or B cameras (see the module docstring).
            times: [B, F], [F] or None.
            request: as in :meth:`render_rays`, with background [3], [B, 3], [B, F, 3] or [B, F, H, W, 3] (default
                white) and light_dir [3], [B, F, 3] or [B·F, 3] (default: towards each frame's camera).
            need_normals: as in :meth:`render_rays`.

        Returns:
            RenderOutput with rgb [B, F, H, W, 3], opacity / depth [B, F, H, W, 1], normals [B, F, H, W, 3] | None;
            the per-sample fields stay packed.
        """
        req = request if request is not None else RenderRequest()
        rays_o, rays_d, ray_t, rays_req, (b, f, h, w) = self._frame_rays(cameras, times, req)
        chunk = self.cfg.checkpoint_frames
        if chunk and torch.is_grad_enabled() and b * f > chunk:
            out = self._render_checkpointed(rays_o, rays_d, ray_t, rays_req, chunk * h * w, need_normals)
        else:
            out = self.render_rays(rays_o, rays_d, ray_t, rays_req, need_normals)
        return _reshape(out, (b, f, h, w))

    def _render_checkpointed(self, rays_o: Tensor, rays_d: Tensor, ray_t: Tensor | None, request: RenderRequest,
                             chunk: int, need_normals: bool | None) -> RenderOutput:
        """:meth:`render_rays` over chunks of ``chunk`` rays, each under non-reentrant gradient checkpointing.

        The memory lever ``render.checkpoint_frames``: each chunk's per-sample activations are recomputed in backward
        (the RNG state is restored, so the recomputation marches the same samples) instead of kept for every frame.
        """
        from torch.utils.checkpoint import checkpoint

        n = rays_o.shape[0]
        outs = []
        for i in range(0, n, chunk):
            s = slice(i, min(i + chunk, n))
            outs.append(checkpoint(self.render_rays, rays_o[s], rays_d[s], _rows(ray_t, s, 1), _rows_of(request, s),
                                   need_normals, use_reentrant=False))

        def cat(name: str) -> Tensor | None:
            parts = [getattr(o, name) for o in outs]
            return None if any(p is None for p in parts) else torch.cat(parts)

        return RenderOutput(rgb=cat("rgb"), opacity=cat("opacity"), depth=cat("depth"), normals=cat("normals"),
                            sample_weights=cat("sample_weights"), sample_normals=cat("sample_normals"),
                            sample_dirs=cat("sample_dirs"))

    @torch.no_grad()
    def render_image(
        self,
        cameras: Cameras,
        times: Tensor | None = None,
        request: RenderRequest | None = None,
        to_cpu: bool = True,
        alive_marching: bool | None = None,
    ) -> RenderOutput:
        """Inference render (no grad, no jitter: lattice offset dt/2, ``request.perturb`` is not used), chunked by
        ``cfg.chunk_rays`` rays.

        Same arguments and layout as :meth:`render`; per-sample fields are None. With ``alive_marching`` each chunk
        uses the alive-ray loop of ``ops.inference`` (the original's inference marcher, spec §5.6: rays stop being
        evaluated once opaque, at the price of one small march/field call per iteration); otherwise the training
        marcher (every occupied sample is evaluated in one call). Both give the same image. Default (None): alive
        marching on CUDA, the training marcher on the CPU, where the per-iteration overhead of the torch reference
        dominates (measured ~10 ms per iteration, hundreds of iterations per chunk). The nerfacc backend always uses
        its own ``render_rays``. With ``to_cpu`` each chunk's result is moved to the CPU as soon as it is done (long
        videos do not accumulate on the GPU).
        """
        req = dataclasses.replace(request if request is not None else RenderRequest(), perturb=False)
        rays_o, rays_d, ray_t, rays_req, (b, f, h, w) = self._frame_rays(cameras, times, req)
        n, chunk = rays_o.shape[0], max(1, self.cfg.chunk_rays)
        alive_marching = rays_o.is_cuda if alive_marching is None else alive_marching
        use_alive = alive_marching and self.cfg.backend != RenderBackend.nerfacc
        move = (lambda x: x.cpu()) if to_cpu else (lambda x: x)
        parts: list[RenderOutput] = []
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            args = (rays_o[sl], rays_d[sl], _rows(ray_t, sl, 1), _rows_of(rays_req, sl))
            o = self._render_rays_alive(*args) if use_alive else self.render_rays(*args)
            parts.append(RenderOutput(rgb=move(o.rgb), opacity=move(o.opacity), depth=move(o.depth),
                                      normals=move(o.normals) if o.normals is not None else None))
        normal_parts = [p.normals for p in parts if p.normals is not None]
        out = RenderOutput(
            rgb=torch.cat([p.rgb for p in parts]),
            opacity=torch.cat([p.opacity for p in parts]),
            depth=torch.cat([p.depth for p in parts]),
            normals=torch.cat(normal_parts) if parts and len(normal_parts) == len(parts) else None,
        )
        return _reshape(out, (b, f, h, w))

    def _render_rays_alive(self, rays_o: Tensor, rays_d: Tensor, times: Tensor | None,
                           request: RenderRequest) -> RenderOutput:
        """:meth:`render_rays` (perturb=False) through ``ops.inference.render_rays_inference``; no per-sample data.

        The normal image rides along as 3 extra composited channels (inference weights need no detaching).
        """
        shading, ambient, light_dir = request.shading, request.ambient, request.light_dir
        check_shading(shading)
        self._check_backend(rays_o)
        n, dev = rays_o.shape[0], rays_o.device
        bg = per_ray(request.background, n, lambda: torch.ones(3, device=dev, dtype=rays_o.dtype), "background")
        use_times = times if (times is not None and self._dynamic) else None
        with_normals = self.normals_needed(shading, ambient, None)
        rays_o, rays_d = rays_o.to(torch.float32), rays_d.to(torch.float32)
        with autocast_off():
            nears, fars = ops.near_far_from_aabb(rays_o, rays_d, self.aabb.to(torch.float32), self.cfg.min_near)
        slots = self.occupancy.slots_of(times) if times is not None else torch.zeros(n, dtype=torch.long, device=dev)

        def radiance(xyzs: Tensor, dirs: Tensor, ray_index: Tensor) -> tuple[Tensor, Tensor]:
            t = use_times[ray_index] if use_times is not None else None
            out = self.field(xyzs, t)
            normals = self.field.normals(xyzs, t).float() if with_normals else None
            rgbs = shade(shading, out.albedo.float(), normals, ambient, light_dir, rays_o, ray_index)
            if normals is not None:
                rgbs = torch.cat([rgbs, (normals + 1.0) / 2.0], dim=-1)
            return out.density.float(), rgbs

        state = ops_inference.render_rays_inference(
            rays_o, rays_d, nears, fars, self.occupancy.bitfield, slots, radiance, bound=self.bound,
            grid_res=self.occupancy.resolution, dt=self.dt, max_steps=self.cfg.max_steps,
            channels=6 if with_normals else 3, t_thresh=self.cfg.t_thresh, noise=torch.full((n,), 0.5, device=dev),
        )
        opacity = state.weights_sum.unsqueeze(-1)
        return RenderOutput(rgb=state.image[:, :3] + (1.0 - opacity) * bg, opacity=opacity,
                            depth=state.depth.unsqueeze(-1), normals=state.image[:, 3:] if with_normals else None)


def _rows(x: Tensor | None, s: slice, dims: int) -> Tensor | None:
    """Rows ``s`` of a per-ray tensor ([N] times, [N, 3] background / light); a shared [3] one unchanged."""
    return x[s] if x is not None and x.dim() == dims else x


def _rows_of(request: RenderRequest, s: slice) -> RenderRequest:
    """The request of rays ``s`` (per-ray background / light_dir sliced)."""
    return dataclasses.replace(request, background=_rows(request.background, s, 2),
                               light_dir=_rows(request.light_dir, s, 2))


def _reshape(out: RenderOutput, lead: tuple[int, ...]) -> RenderOutput:
    """Per-ray fields [N, C] → [*lead, C]; per-sample fields unchanged."""
    def r(x: Tensor | None) -> Tensor | None:
        return x.reshape(*lead, x.shape[-1]) if x is not None else None

    return RenderOutput(rgb=r(out.rgb), opacity=r(out.opacity), depth=r(out.depth), normals=r(out.normals),
                        sample_weights=out.sample_weights, sample_normals=out.sample_normals,
                        sample_dirs=out.sample_dirs)
