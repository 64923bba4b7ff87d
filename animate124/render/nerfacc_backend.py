"""``render.backend=nerfacc``: the same render as :meth:`VolumeRenderer.render_rays`, sampled and composited by
nerfacc 0.5 (``OccGridEstimator`` + ``render_weight_from_density``), as a peer to measure our kernels against.

How the occupancy carries over: our :class:`~animate124.render.occupancy.OccupancyGrid` stays the single source of
truth (it is updated by the phase as usual); for each time slot present in the batch, the slot's bitfield is
converted to nerfacc's dense ``binaries`` [1, R, R, R] (indexed [x, y, z] over the same box) and loaded into one
cached estimator, which then samples the rays of that slot. So time-dependent fields use the current grid of each
frame's slot, exactly like the CUDA backend; nerfacc's own ``update_every_n_steps`` is never used.

Differences from our kernels (documented, not bugs): nerfacc's lattice starts at ``near`` (+ a uniform jitter when
``perturb``) with samples at the midpoints of [t_start, t_end]; its early stop (``early_stop_eps`` = t_thresh) runs
on a no-grad density pass (``sigma_fn``) during sampling, and the compositing itself has no transmittance cut-off.
nerfacc cannot sample on the CPU: CPU rays raise :class:`~animate124.errors.ConfigError`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from animate124.config.schema import RenderConfig
from animate124.errors import ConfigError
from animate124.render.cameras import autocast_off
from animate124.render.march import evaluate, is_dynamic, normals_needed, shade, step_size
from animate124.types import RenderOutput, RenderRequest

if TYPE_CHECKING:
    from torch import nn

    from animate124.render.occupancy import OccupancyGrid

_HINT = "render.backend=nerfacc needs a CUDA device and nerfacc>=0.5; use render.backend=auto"
_ESTIMATORS: "weakref.WeakKeyDictionary[OccupancyGrid, Any]" = weakref.WeakKeyDictionary()


def _estimator(occupancy: "OccupancyGrid", device: torch.device):
    """One OccGridEstimator per OccupancyGrid (kept outside the module tree, so checkpoints are unaffected)."""
    import nerfacc

    est = _ESTIMATORS.get(occupancy)
    if est is None or est.binaries.device != device:
        b = occupancy.bound
        est = nerfacc.OccGridEstimator(roi_aabb=[-b, -b, -b, b, b, b], resolution=occupancy.resolution,
                                       levels=1).to(device)
        _ESTIMATORS[occupancy] = est
    return est


def _sample(field: "nn.Module", occupancy: "OccupancyGrid", cfg: RenderConfig, rays_o: Tensor, rays_d: Tensor,
            slots: Tensor, use_times: Tensor | None, perturb: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(ray_indices [M] int64 sorted, t_starts [M], t_ends [M]) over all slots present in the batch."""
    est = _estimator(occupancy, rays_o.device)
    parts = []
    for slot in torch.unique(slots).tolist():
        idx = (slots == slot).nonzero().squeeze(1)
        est.binaries = occupancy.occupied(int(slot))[None].to(rays_o.device)
        o, d = rays_o[idx], rays_d[idx]
        t_slot = None if use_times is None else use_times[idx]

        def sigma_fn(t0: Tensor, t1: Tensor, ri: Tensor, o=o, d=d, t_slot=t_slot) -> Tensor:
            x = o[ri] + d[ri] * ((t0 + t1) / 2)[:, None]
            return field.density(x, None if t_slot is None else t_slot[ri]).float()

        ri, t0, t1 = est.sampling(o, d, sigma_fn=sigma_fn, near_plane=cfg.min_near,
                                  render_step_size=step_size(float(occupancy.bound), cfg.max_steps),
                                  stratified=perturb, early_stop_eps=cfg.t_thresh, alpha_thre=0.0)
        parts.append((idx[ri.long()], t0, t1))
    ray_ids = torch.cat([p[0] for p in parts])
    order = torch.argsort(ray_ids, stable=True)  # nerfacc's packed format wants each ray's samples contiguous
    return ray_ids[order], torch.cat([p[1] for p in parts])[order], torch.cat([p[2] for p in parts])[order]


def _nerfacc(rays_o: Tensor):
    """The nerfacc module, after checking that the rays are on CUDA (its sampler and packed scans are CUDA-only)."""
    if not rays_o.is_cuda:
        raise ConfigError(_HINT)
    try:
        import nerfacc
    except ImportError as exc:
        raise ConfigError(f"{_HINT} ({exc})") from exc
    return nerfacc


def render_rays_nerfacc(field: "nn.Module", occupancy: "OccupancyGrid", cfg: RenderConfig, rays_o: Tensor,
                        rays_d: Tensor, times: Tensor | None = None, request: RenderRequest | None = None,
                        need_normals: bool | None = None) -> RenderOutput:
    """Render N rays of ``field`` through ``occupancy`` with nerfacc; the rays, times, request and result as
    ``VolumeRenderer.render_rays`` (``cfg``: its step count, near plane and transmittance threshold).

    Raises:
        ConfigError: rays on the CPU, or nerfacc not importable.
    """
    nerfacc = _nerfacc(rays_o)
    req = request if request is not None else RenderRequest()
    rays_o, rays_d = rays_o.to(torch.float32), rays_d.to(torch.float32)
    n, dev = rays_o.shape[0], rays_o.device
    bg = torch.ones(3, device=dev) if req.background is None else req.background
    bg = bg.expand(n, 3) if bg.shape == (3,) else bg
    use_times = times if (times is not None and is_dynamic(field)) else None
    slots = occupancy.slots_of(times) if times is not None else torch.zeros(n, dtype=torch.long, device=dev)
    with autocast_off():
        ray_ids, t0, t1 = _sample(field, occupancy, cfg, rays_o, rays_d, slots, use_times, req.perturb)
    t_mid = (t0 + t1) / 2
    xyzs = rays_o[ray_ids] + rays_d[ray_ids] * t_mid[:, None]
    field_out = evaluate(field, xyzs, ray_ids, times, normals_needed(req.shading, req.ambient, need_normals))
    with autocast_off():  # as in VolumeRenderer: shading and compositing in float32
        sigmas, albedo = field_out.sigmas.float(), field_out.albedo.float()
        normals = field_out.normals.float() if field_out.normals is not None else None
        light = req.light_dir.float() if req.light_dir is not None else None
        rgbs = shade(req.shading, albedo, normals, req.ambient, light, rays_o, ray_ids)
        weights, _, _ = nerfacc.render_weight_from_density(t0, t1, sigmas, ray_indices=ray_ids, n_rays=n)
        opacity = nerfacc.accumulate_along_rays(weights, None, ray_indices=ray_ids, n_rays=n)
        image = nerfacc.accumulate_along_rays(weights, rgbs, ray_indices=ray_ids, n_rays=n)
        depth = nerfacc.accumulate_along_rays(weights, t_mid[:, None], ray_indices=ray_ids, n_rays=n)
        normal_image = None
        if normals is not None:
            normal_image = nerfacc.accumulate_along_rays(weights.detach(), (normals + 1.0) / 2.0,
                                                         ray_indices=ray_ids, n_rays=n)
    return RenderOutput(rgb=image + (1.0 - opacity) * bg.float(), opacity=opacity, depth=depth, normals=normal_image,
                        sample_weights=weights, sample_normals=normals, sample_dirs=rays_d[ray_ids])
