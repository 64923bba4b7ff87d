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

``render.backend=nerfacc`` calls ``animate124.render.nerfacc_backend.render_rays_nerfacc(renderer, rays_o, rays_d,
times, background, shading, ambient, light_dir, perturb, need_normals) -> RenderOutput`` (CUDA only), imported lazily.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from animate124 import ops
from animate124.config.schema import RenderBackend, RenderConfig
from animate124.errors import ConfigError
from animate124.ops import inference as ops_inference
from animate124.ops.raymarch import check_values
from animate124.render.cameras import Cameras, autocast_off, fp32_geometry, get_rays
from animate124.render.occupancy import OccupancyGrid
from animate124.types import RaySamples, RenderOutput

SHADING_MODES = ("albedo", "lambertian", "textureless", "normal")
"""albedo: c = albedo; lambertian: albedo·(a + (1−a)·max(0, n·l)); textureless: (a + (1−a)·max(0, n·l))·(1,1,1);
normal: (n + 1)/2."""

_NERFACC_HINT = "render.backend=nerfacc needs CUDA and nerfacc; use render.backend=auto"


def sample_ray_indices(rays: Tensor, n_samples: int) -> Tensor:
    """Ray index of every packed sample, from the per-ray (offset, count) table.

    Works whatever order the marcher assigned the offsets in (the CUDA marcher allocates them atomically). No host
    sync: the output size is the known ``n_samples``, and the packing check is a device-side assert on the GPU
    (:func:`animate124.ops.raymarch.check_values`; a ``ValueError`` on the CPU).

    Args:
        rays: [N, 2] int (offset, count).
        n_samples: M, the number of packed samples.

    Returns:
        [M] int64 ray index of each sample.
    """
    offsets, counts = rays[:, 0].long(), rays[:, 1].long()
    order = torch.argsort(offsets, stable=True)  # empty rays repeat nothing, wherever they sort
    starts, sorted_counts = offsets[order], counts[order]
    nonempty = sorted_counts > 0
    base = torch.where(nonempty, starts, starts.new_full((), torch.iinfo(torch.int64).max)).amin() if len(order) else 0
    packed = ((torch.cumsum(sorted_counts, 0) - sorted_counts == starts - base) | ~nonempty).all()
    check_values(packed & (sorted_counts.sum() == n_samples),
                 f"the ray table must cover the {n_samples} marched samples, packed contiguously per ray")
    return torch.repeat_interleave(order, sorted_counts, output_size=n_samples)


def _per_ray(value: Tensor | None, n: int, default: Callable[[], Tensor], name: str) -> Tensor:
    """A [3] or [N, 3] tensor as [N, 3]."""
    v = default() if value is None else value
    if v.shape == (3,):
        return v.expand(n, 3)
    if v.shape != (n, 3):
        raise ValueError(f"{name} must be [3] or [N, 3] = [{n}, 3], got {tuple(v.shape)}")
    return v


def shade(
    shading: str,
    albedo: Tensor,
    normals: Tensor | None,
    ambient: float,
    light_dir: Tensor | None,
    rays_o: Tensor,
    ray_ids: Tensor,
) -> Tensor:
    """Per-sample colour [M, 3] (spec §4.5); shared by VolumeRenderer and render.instances.

    Args:
        shading: albedo | lambertian | textureless | normal.
        albedo: [M, 3]; normals: [M, 3] world-space unit normals, or None when the mode does not need them.
        ambient: ambient ratio a of lambertian / textureless shading.
        light_dir: [3] or [N, 3] direction towards the light (default normalize(rays_o)).
        rays_o: [N, 3] ray origins; ray_ids: [M] ray of every sample.
    """
    if shading == "albedo":
        return albedo
    if normals is None:
        if shading != "normal" and ambient >= 1.0:  # lambertian/textureless with a = 1 need no normals
            return albedo if shading == "lambertian" else torch.ones_like(albedo)
        raise ValueError(f"shading={shading!r} with ambient {ambient} needs normals but need_normals=False")
    if shading == "normal":
        return (normals + 1.0) / 2.0
    light = _per_ray(light_dir, rays_o.shape[0], lambda: rays_o, "light_dir")
    light = light / light.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = (normals * light[ray_ids]).sum(-1, keepdim=True).clamp_min(0.0)
    lum = ambient + (1.0 - ambient) * cos  # [M, 1]
    return albedo * lum if shading == "lambertian" else lum.expand(-1, 3)


class VolumeRenderer(nn.Module):
    """Renders a field through an occupancy grid.

    Args:
        field: ``field(x [N,3], t [N] | None) -> FieldOutput``, with ``normals(x, t) -> [N,3]`` and ``is_dynamic``.
        occupancy: the occupancy grid (its bound must equal the field's).
        cfg: render settings (step size, thresholds, backend, chunking).

    Example:
        >>> renderer = VolumeRenderer(field, OccupancyGrid(128, time_slots=16), RenderConfig())
        >>> out = renderer.render(cams, times, background=torch.rand(3))   # out.rgb [B, F, H, W, 3]
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
        self.register_buffer("aabb", torch.tensor([-b, -b, -b, b, b, b]), persistent=False)

    @property
    def dt(self) -> float:
        """Constant marching step 2√3·bound / max_steps."""
        return 2.0 * math.sqrt(3.0) * self.bound / self.cfg.max_steps

    def density_fn(self, x: Tensor, t: Tensor | None) -> Tensor:
        """σ(x, t) of the field (what :meth:`OccupancyGrid.update` expects)."""
        return self.field.density(x, t if self._dynamic else None)

    @property
    def _dynamic(self) -> bool:
        return bool(getattr(self.field, "is_dynamic", False))

    @staticmethod
    def normals_needed(shading: str, ambient: float, need_normals: bool | None) -> bool:
        """Whether a render needs per-sample normals (6 extra field passes, spec §14.7).

        ``need_normals=None`` means: only for ``normal`` shading, or lambertian/textureless with ambient < 1
        (with ambient 1 both reduce to albedo / white, whatever the normals).
        """
        if need_normals is not None:
            return need_normals
        return shading == "normal" or (shading in ("lambertian", "textureless") and ambient < 1.0)

    def _check_backend(self, rays_o: Tensor) -> None:
        if self.cfg.backend == RenderBackend.cuda and not ops._backend.use_cuda(rays_o):
            raise ConfigError("render.backend=cuda needs a CUDA device and the compiled kernels "
                              f"({ops._backend.backend_info()['how']}); use render.backend=auto")

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
        background: Tensor | None = None,
        shading: str = "albedo",
        ambient: float = 1.0,
        light_dir: Tensor | None = None,
        perturb: bool = True,
        need_normals: bool | None = None,
    ) -> RenderOutput:
        """Render N rays.

        Args:
            rays_o: [N, 3] origins.
            rays_d: [N, 3] unit directions.
            times: [N] scene time of each ray (None: static; ignored by static fields).
            background: [3] or [N, 3] colour behind the object (default white).
            shading: one of ``SHADING_MODES``.
            ambient: ambient ratio a of lambertian / textureless shading.
            light_dir: [3] or [N, 3] direction towards the light (normalised here; default: towards the camera
                centre from the origin, normalize(rays_o)).
            perturb: random start offset in [0, dt) per ray (training); False uses dt/2.
            need_normals: force (True) or skip (False) normals; None decides by :meth:`normals_needed`.

        Returns:
            RenderOutput with rgb [N, 3], opacity [N, 1], depth [N, 1] (Σ w·t), normals [N, 3] ((n+1)/2 composited
            with detached weights, no background) or None, and per-sample weights [M], normals [M, 3] | None,
            dirs [M, 3].
        """
        if shading not in SHADING_MODES:
            raise ConfigError(f"unknown shading mode {shading!r}; use one of {', '.join(SHADING_MODES)}")
        if self.cfg.backend == RenderBackend.nerfacc:
            return self._nerfacc_fn(rays_o)(self, rays_o, rays_d, times, background, shading, ambient, light_dir,
                                            perturb, need_normals)
        self._check_backend(rays_o)
        rays_o, rays_d = rays_o.to(torch.float32), rays_d.to(torch.float32)
        use_times = times if (times is not None and self._dynamic) else None
        samples, ray_ids = self._march(rays_o, rays_d, times, perturb)
        m, dev = samples.xyzs.shape[0], rays_o.device
        t_samples = use_times[ray_ids] if use_times is not None else None
        # the field's networks are the only part of a render that runs under the caller's autocast
        if m > 0:
            out = self.field(samples.xyzs, t_samples)
            sigmas, albedo = out.density, out.albedo
        else:  # nothing occupied along any ray: skip the field (some encodings dislike empty batches)
            sigmas = torch.zeros(0, device=dev)
            albedo = torch.zeros(0, 3, device=dev)
        normals = None
        if self.normals_needed(shading, ambient, need_normals):
            # central differences of σ (eps ~1e-3) are geometry: in fp16/bf16 they would be quantisation noise
            with autocast_off():
                normals = self.field.normals(samples.xyzs, t_samples) if m > 0 else torch.zeros_like(albedo)
        return self._shade_composite(samples, ray_ids, sigmas, albedo, normals, shading, ambient, light_dir, rays_o,
                                     background)

    @fp32_geometry
    def _march(self, rays_o: Tensor, rays_d: Tensor, times: Tensor | None,
               perturb: bool) -> tuple[RaySamples, Tensor]:
        """The geometric half of a training render, in float32 with autocast off: packed samples and their ray ids."""
        n, dev = rays_o.shape[0], rays_o.device
        nears, fars = ops.near_far_from_aabb(rays_o, rays_d, self.aabb.to(torch.float32), self.cfg.min_near)
        slots = self.occupancy.slots_of(times) if times is not None else torch.zeros(n, dtype=torch.long, device=dev)
        noise = torch.rand(n, device=dev) if perturb else torch.full((n,), 0.5, device=dev)
        samples = ops.march_rays_train(rays_o, rays_d, nears, fars, self.occupancy.bitfield, slots, noise,
                                       self.bound, self.occupancy.resolution, self.dt, self.cfg.max_steps)
        return samples, sample_ray_indices(samples.rays, samples.xyzs.shape[0])

    @fp32_geometry
    def _shade_composite(self, samples: RaySamples, ray_ids: Tensor, sigmas: Tensor, albedo: Tensor,
                         normals: Tensor | None, shading: str, ambient: float, light_dir: Tensor | None,
                         rays_o: Tensor, background: Tensor | None) -> RenderOutput:
        """Shading and compositing in float32 with autocast off (the field's fp16/bf16 outputs are upcast here)."""
        n, dev = rays_o.shape[0], rays_o.device
        sigmas, albedo = sigmas.float(), albedo.float()
        normals = normals.float() if normals is not None else None
        light = light_dir.float() if light_dir is not None else None
        bg = _per_ray(background, n, lambda: torch.ones(3, device=dev), "background").float()
        rgbs = shade(shading, albedo, normals, ambient, light, rays_o, ray_ids)
        weights, weights_sum, depth, image = ops.composite_rays_train(sigmas, rgbs, samples.ts, samples.rays,
                                                                      self.cfg.t_thresh)
        rgb = image + (1.0 - weights_sum).unsqueeze(-1) * bg
        normal_image = None
        if normals is not None:
            contrib = weights.detach().unsqueeze(-1) * (normals + 1.0) / 2.0
            normal_image = torch.zeros(n, 3, device=dev, dtype=contrib.dtype).index_add(0, ray_ids, contrib)
        return RenderOutput(rgb=rgb, opacity=weights_sum.unsqueeze(-1), depth=depth.unsqueeze(-1),
                            normals=normal_image, sample_weights=weights, sample_normals=normals,
                            sample_dirs=samples.dirs)

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
        self, cameras: Cameras, times: Tensor | None, background: Tensor | None, light_dir: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None, tuple[int, int, int, int]]:
        """Rays of all frames: (rays_o, rays_d, times, background, light_dir) per ray + (B, F, H, W)."""
        cams, tflat, b, f = self._frames(cameras, times)
        cams = cams.to(self.aabb.device)
        origins, dirs = get_rays(cams)
        h, w = cams.height, cams.width
        per_frame = h * w
        ray_t = tflat.to(origins.device).repeat_interleave(per_frame) if tflat is not None else None
        bg = None
        if background is not None:
            bg = background.to(origins)
            if bg.dim() == 2:  # [B, 3]
                bg = bg[:, None, None, None]
            elif bg.dim() == 3:  # [B, F, 3]
                bg = bg[:, :, None, None]
            bg = bg.expand(b, f, h, w, 3).reshape(-1, 3) if bg.dim() > 1 else bg
        light = None
        if light_dir is not None:
            light = light_dir.to(origins)
            if light.dim() > 1:  # [B, F, 3] or [B·F, 3]
                light = light.reshape(b * f, 3).repeat_interleave(per_frame, dim=0)
        return origins.reshape(-1, 3), dirs.reshape(-1, 3), ray_t, bg, light, (b, f, h, w)

    def render(
        self,
        cameras: Cameras,
        times: Tensor | None = None,
        background: Tensor | None = None,
        shading: str = "albedo",
        ambient: float = 1.0,
        light_dir: Tensor | None = None,
        perturb: bool = True,
        need_normals: bool | None = None,
    ) -> RenderOutput:
        """Render B clips × F frames with gradients (training).

        Args:
            cameras: B·F or B cameras (see the module docstring).
            times: [B, F], [F] or None.
            background: [3], [B, 3], [B, F, 3] or [B, F, H, W, 3] (default white).
            shading, ambient, perturb, need_normals: as in :meth:`render_rays`.
            light_dir: [3], [B, F, 3] or [B·F, 3] (default: towards each frame's camera).

        Returns:
            RenderOutput with rgb [B, F, H, W, 3], opacity / depth [B, F, H, W, 1], normals [B, F, H, W, 3] | None;
            the per-sample fields stay packed.
        """
        rays_o, rays_d, ray_t, bg, light, (b, f, h, w) = self._frame_rays(cameras, times, background, light_dir)
        chunk = self.cfg.checkpoint_frames
        if chunk and torch.is_grad_enabled() and b * f > chunk:
            out = self._render_checkpointed(rays_o, rays_d, ray_t, bg, light, chunk * h * w, shading, ambient, perturb,
                                            need_normals)
        else:
            out = self.render_rays(rays_o, rays_d, ray_t, bg, shading, ambient, light, perturb, need_normals)
        return _reshape(out, (b, f, h, w))

    def _render_checkpointed(self, rays_o: Tensor, rays_d: Tensor, ray_t: Tensor | None, bg: Tensor | None,
                             light: Tensor | None, chunk: int, shading: str, ambient: float, perturb: bool,
                             need_normals: bool | None) -> RenderOutput:
        """:meth:`render_rays` over chunks of ``chunk`` rays, each under non-reentrant gradient checkpointing.

        The memory lever ``render.checkpoint_frames``: each chunk's per-sample activations are recomputed in backward
        (the RNG state is restored, so the recomputation marches the same samples) instead of kept for every frame.
        """
        from torch.utils.checkpoint import checkpoint

        n = rays_o.shape[0]

        def per_ray(x: Tensor | None, s: slice, dims: int) -> Tensor | None:
            return x[s] if x is not None and x.dim() == dims else x  # [N] times, [N, 3] background / light

        outs = []
        for i in range(0, n, chunk):
            s = slice(i, min(i + chunk, n))
            outs.append(checkpoint(self.render_rays, rays_o[s], rays_d[s], per_ray(ray_t, s, 1), per_ray(bg, s, 2),
                                   shading, ambient, per_ray(light, s, 2), perturb, need_normals, use_reentrant=False))

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
        background: Tensor | None = None,
        shading: str = "albedo",
        ambient: float = 1.0,
        light_dir: Tensor | None = None,
        to_cpu: bool = True,
        alive_marching: bool | None = None,
    ) -> RenderOutput:
        """Inference render (no grad, no jitter: lattice offset dt/2), chunked by ``cfg.chunk_rays`` rays.

        Same arguments and layout as :meth:`render`; per-sample fields are None. With ``alive_marching`` each chunk
        uses the alive-ray loop of ``ops.inference`` (the original's inference marcher, spec §5.6: rays stop being
        evaluated once opaque, at the price of one small march/field call per iteration); otherwise the training
        marcher (every occupied sample is evaluated in one call). Both give the same image. Default (None): alive
        marching on CUDA, the training marcher on the CPU, where the per-iteration overhead of the torch reference
        dominates (measured ~10 ms per iteration, hundreds of iterations per chunk). The nerfacc backend always uses
        its own ``render_rays``. With ``to_cpu`` each chunk's result is moved to the CPU as soon as it is done (long
        videos do not accumulate on the GPU).
        """
        rays_o, rays_d, ray_t, bg, light, (b, f, h, w) = self._frame_rays(cameras, times, background, light_dir)
        n, chunk = rays_o.shape[0], max(1, self.cfg.chunk_rays)
        alive_marching = rays_o.is_cuda if alive_marching is None else alive_marching
        use_alive = alive_marching and self.cfg.backend != RenderBackend.nerfacc
        move = (lambda x: x.cpu()) if to_cpu else (lambda x: x)
        parts: list[RenderOutput] = []
        for s in range(0, n, chunk):
            sl = slice(s, s + chunk)
            args = (rays_o[sl], rays_d[sl], ray_t[sl] if ray_t is not None else None,
                    bg[sl] if bg is not None and bg.dim() == 2 else bg, shading, ambient,
                    light[sl] if light is not None and light.dim() == 2 else light)
            o = self._render_rays_alive(*args) if use_alive else self.render_rays(*args, perturb=False)
            parts.append(RenderOutput(rgb=move(o.rgb), opacity=move(o.opacity), depth=move(o.depth),
                                      normals=move(o.normals) if o.normals is not None else None))
        has_normals = bool(parts) and parts[0].normals is not None
        out = RenderOutput(
            rgb=torch.cat([p.rgb for p in parts]),
            opacity=torch.cat([p.opacity for p in parts]),
            depth=torch.cat([p.depth for p in parts]),
            normals=torch.cat([p.normals for p in parts]) if has_normals else None,  # type: ignore[misc]
        )
        return _reshape(out, (b, f, h, w))

    def _render_rays_alive(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        times: Tensor | None,
        background: Tensor | None,
        shading: str,
        ambient: float,
        light_dir: Tensor | None,
    ) -> RenderOutput:
        """:meth:`render_rays` (perturb=False) through ``ops.inference.render_rays_inference``; no per-sample data.

        The normal image rides along as 3 extra composited channels (inference weights need no detaching).
        """
        if shading not in SHADING_MODES:
            raise ConfigError(f"unknown shading mode {shading!r}; use one of {', '.join(SHADING_MODES)}")
        self._check_backend(rays_o)
        n, dev = rays_o.shape[0], rays_o.device
        bg = _per_ray(background, n, lambda: torch.ones(3, device=dev, dtype=rays_o.dtype), "background")
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


def _reshape(out: RenderOutput, lead: tuple[int, ...]) -> RenderOutput:
    """Per-ray fields [N, C] → [*lead, C]; per-sample fields unchanged."""
    def r(x: Tensor | None) -> Tensor | None:
        return x.reshape(*lead, x.shape[-1]) if x is not None else None

    return RenderOutput(rgb=r(out.rgb), opacity=r(out.opacity), depth=r(out.depth), normals=r(out.normals),
                        sample_weights=out.sample_weights, sample_normals=out.sample_normals,
                        sample_dirs=out.sample_dirs)
