"""The three stages of a training render, nerfacc-style, as plain functions: :func:`march` (occupancy-skipping packed
samples) → :func:`evaluate` (one field call at the samples) → :func:`shade_and_composite` (colour, front-to-back
compositing, background).

:class:`~animate124.render.volume.VolumeRenderer` is exactly march → evaluate → shade_and_composite;
:class:`~animate124.render.instances.InstancesRenderer` marches and evaluates each instance in its own frame, merges
the samples per ray and shades and composites them once; the nerfacc backend (which samples with nerfacc's own
estimator) shares :func:`evaluate`, :func:`shade` and :func:`normals_needed`. This module imports no renderer, so
every renderer can import it (no import cycle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from animate124 import ops
from animate124.errors import ConfigError
from animate124.ops._checks import check_values
from animate124.render.cameras import autocast_off, fp32_geometry
from animate124.render.occupancy import OccupancyGrid
from animate124.types import RenderOutput, RenderRequest

SHADING_MODES = ("albedo", "lambertian", "textureless", "normal")
"""albedo: c = albedo; lambertian: albedo·(a + (1−a)·max(0, n·l)); textureless: (a + (1−a)·max(0, n·l))·(1,1,1);
normal: (n + 1)/2."""


@dataclass
class Samples:
    """Packed samples of N rays (one entry per sample, each ray's samples contiguous), the output of :func:`march`."""

    xyzs: Tensor
    """[M, 3] sample positions (in the frame the rays were marched in)."""
    dirs: Tensor
    """[M, 3] unit ray directions of the samples."""
    ts: Tensor
    """[M, 2] (t, dt): distance along the ray and the step length."""
    rays: Tensor
    """[N, 2] int32 (offset, count) of each ray's samples in the packed arrays."""
    ray_ids: Tensor
    """[M] int64 ray index of every sample."""


@dataclass
class FieldSamples:
    """The field at the samples, the output of :func:`evaluate` (in the field's dtype: fp16/bf16 under autocast)."""

    sigmas: Tensor
    """[M] density."""
    albedo: Tensor
    """[M, 3] albedo."""
    normals: Tensor | None
    """[M, 3] world-space unit normals, or None when the render does not need them."""


def check_shading(shading: str) -> None:
    """Raise ConfigError unless ``shading`` is one of :data:`SHADING_MODES`."""
    if shading not in SHADING_MODES:
        raise ConfigError(f"unknown shading mode {shading!r}; use one of {', '.join(SHADING_MODES)}")


def step_size(bound: float, max_steps: int) -> float:
    """Constant marching step dt = 2√3·bound / max_steps (≈ 0.00338 for bound 1, 1024 steps)."""
    return 2.0 * math.sqrt(3.0) * bound / max_steps


def is_dynamic(field: nn.Module) -> bool:
    """Whether the field takes a time (``field.is_dynamic``; False when absent)."""
    return bool(getattr(field, "is_dynamic", False))


def normals_needed(shading: str, ambient: float, need_normals: bool | None) -> bool:
    """Whether a render needs per-sample normals (6 extra field passes, spec §14.7).

    ``need_normals=None`` means: only for ``normal`` shading, or lambertian/textureless with ambient < 1
    (with ambient 1 both reduce to albedo / white, whatever the normals).
    """
    if need_normals is not None:
        return need_normals
    return shading == "normal" or (shading in ("lambertian", "textureless") and ambient < 1.0)


def sample_ray_indices(rays: Tensor, n_samples: int) -> Tensor:
    """Ray index of every packed sample, from the per-ray (offset, count) table.

    Works whatever order the marcher assigned the offsets in (the CUDA marcher allocates them atomically). No host
    sync: the output size is the known ``n_samples``, and the packing check is a device-side assert on the GPU
    (:func:`animate124.ops._checks.check_values`; a ``ValueError`` on the CPU).

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


def per_ray(value: Tensor | None, n: int, default: Callable[[], Tensor], name: str) -> Tensor:
    """A [3] or [N, 3] tensor as [N, 3]."""
    v = default() if value is None else value
    if v.shape == (3,):
        return v.expand(n, 3)
    if v.shape != (n, 3):
        raise ValueError(f"{name} must be [3] or [N, 3] = [{n}, 3], got {tuple(v.shape)}")
    return v


@fp32_geometry
def march(
    rays_o: Tensor,
    rays_d: Tensor,
    occupancy: OccupancyGrid,
    times: Tensor | None,
    aabb: Tensor,
    min_near: float,
    max_steps: int,
    perturb: bool,
    generator: torch.Generator | None = None,
) -> Samples:
    """Packed samples of N rays in the occupied cells of each ray's time slot (float32, autocast off).

    Args:
        rays_o: [N, 3] float32 origins; rays_d: [N, 3] unit directions (in the occupancy grid's frame).
        occupancy: the grid (its bound sets dt = :func:`step_size`).
        times: [N] scene time of each ray, which picks its slot (None: slot 0).
        aabb: [6] float32 (−b, −b, −b, b, b, b) of the grid.
        min_near: nearest t a sample may have.
        max_steps: samples per ray at most (and the lattice: dt = 2√3·bound / max_steps).
        perturb: random start offset in [0, dt) per ray (one ``torch.rand(N)``); False uses dt/2.
        generator: generator of that draw (None: the global one).
    """
    n, dev = rays_o.shape[0], rays_o.device
    nears, fars = ops.near_far_from_aabb(rays_o, rays_d, aabb, min_near)
    slots = occupancy.slots_of(times) if times is not None else torch.zeros(n, dtype=torch.long, device=dev)
    noise = torch.rand(n, device=dev, generator=generator) if perturb else torch.full((n,), 0.5, device=dev)
    bound = float(occupancy.bound)
    rs = ops.march_rays_train(rays_o.contiguous(), rays_d.contiguous(), nears, fars, occupancy.bitfield, slots, noise,
                              bound, occupancy.resolution, step_size(bound, max_steps), max_steps)
    return Samples(rs.xyzs, rs.dirs, rs.ts, rs.rays, sample_ray_indices(rs.rays, rs.xyzs.shape[0]))


def evaluate(field: nn.Module, xyzs: Tensor, ray_ids: Tensor, times: Tensor | None,
             with_normals: bool) -> FieldSamples:
    """ONE field call at the samples, with per-sample τ = times[ray_ids] for a dynamic field (spec §5.3).

    The field's networks are the only part of a render that runs under the caller's autocast; the normals (central
    differences of σ, eps ~1e-3: geometry) run with autocast off. No samples: the field is not called (some
    encodings dislike empty batches).

    Args:
        field: ``field(x, t) -> FieldOutput``, with ``normals(x, t)`` and ``is_dynamic``.
        xyzs: [M, 3] positions; ray_ids: [M] ray of each sample; times: [N] scene time per ray (None: static).
        with_normals: also the field normals (else ``normals`` is None).
    """
    m, dev = xyzs.shape[0], xyzs.device
    t_samples = times[ray_ids] if (times is not None and is_dynamic(field)) else None
    if m > 0:
        out = field(xyzs, t_samples)
        sigmas, albedo = out.density, out.albedo
    else:
        sigmas = torch.zeros(0, device=dev)
        albedo = torch.zeros(0, 3, device=dev)
    normals = None
    if with_normals:
        with autocast_off():
            normals = field.normals(xyzs, t_samples) if m > 0 else torch.zeros_like(albedo)
    return FieldSamples(sigmas, albedo, normals)


def shade(
    shading: str,
    albedo: Tensor,
    normals: Tensor | None,
    ambient: float,
    light_dir: Tensor | None,
    rays_o: Tensor,
    ray_ids: Tensor,
) -> Tensor:
    """Per-sample colour [M, 3] (spec §4.5); shared by every renderer.

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
    light = per_ray(light_dir, rays_o.shape[0], lambda: rays_o, "light_dir")
    light = light / light.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = (normals * light[ray_ids]).sum(-1, keepdim=True).clamp_min(0.0)
    lum = ambient + (1.0 - ambient) * cos  # [M, 1]
    return albedo * lum if shading == "lambertian" else lum.expand(-1, 3)


@fp32_geometry
def shade_and_composite(samples: Samples, field_out: FieldSamples, rays_o: Tensor, request: RenderRequest,
                        t_thresh: float) -> RenderOutput:
    """Shading and front-to-back compositing in float32 with autocast off (fp16/bf16 field outputs are upcast).

    Args:
        samples: the packed samples (``ts`` in world units, each ray's samples contiguous and sorted by t).
        field_out: the field at the samples.
        rays_o: [N, 3] world ray origins (the default light direction).
        request: background ([3] or [N, 3], default white), shading, ambient, light_dir ([3] or [N, 3]); its
            ``perturb`` was the marcher's.
        t_thresh: compositing stops once the transmittance falls below it.

    Returns:
        RenderOutput with rgb [N, 3], opacity [N, 1], depth [N, 1] (Σ w·t), normals [N, 3] ((n+1)/2 composited with
        detached weights, no background) or None, and per-sample weights [M], normals [M, 3] | None, dirs [M, 3].
    """
    n, dev = rays_o.shape[0], rays_o.device
    sigmas, albedo = field_out.sigmas.float(), field_out.albedo.float()
    normals = field_out.normals.float() if field_out.normals is not None else None
    light = request.light_dir.float() if request.light_dir is not None else None
    bg = per_ray(request.background, n, lambda: torch.ones(3, device=dev), "background").float()
    rgbs = shade(request.shading, albedo, normals, request.ambient, light, rays_o, samples.ray_ids)
    weights, weights_sum, depth, image = ops.composite_rays_train(sigmas, rgbs, samples.ts, samples.rays,
                                                                  t_thresh)
    rgb = image + (1.0 - weights_sum).unsqueeze(-1) * bg
    normal_image = None
    if normals is not None:
        contrib = weights.detach().unsqueeze(-1) * (normals + 1.0) / 2.0
        normal_image = torch.zeros(n, 3, device=dev, dtype=contrib.dtype).index_add(0, samples.ray_ids, contrib)
    return RenderOutput(rgb=rgb, opacity=weights_sum.unsqueeze(-1), depth=depth.unsqueeze(-1),
                        normals=normal_image, sample_weights=weights, sample_normals=normals,
                        sample_dirs=samples.dirs)
