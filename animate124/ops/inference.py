"""Inference ray marching with alive-ray compaction: march a few samples per alive ray, evaluate, composite in place.

Per-ray state (all [N], on the rays' device) lives in an :class:`InferenceState`:
``rays_k`` (int32, next lattice index; -1 once the ray is past ``far`` or capped at ``max_steps``), ``rays_n`` (int32,
samples emitted so far), ``optical_depth`` (float64, Σσ·dt so far, so ``T = exp(-optical_depth)``), and the outputs
``weights_sum``, ``depth``, ``image``. The lattice, the occupancy test and the compositing arithmetic are exactly the
training ops' (``march_rays_train`` + ``composite_rays_train``), so for the same noise an inference render equals the
training render of the same rays. Not differentiable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from animate124.ops._checks import check_float, check_int, check_same_device, check_tensor, dispatch

__all__ = ["InferenceState", "march_rays", "composite_rays", "render_rays_inference"]


@dataclass
class InferenceState:
    """Per-ray marching/compositing state of :func:`render_rays_inference` (see the module docstring)."""

    rays_k: Tensor
    rays_n: Tensor
    optical_depth: Tensor
    weights_sum: Tensor
    depth: Tensor
    image: Tensor

    @classmethod
    def create(cls, n_rays: int, channels: int, device: torch.device | str) -> "InferenceState":
        """Fresh state: every ray at lattice index 0, transmittance 1, black image."""
        return cls(rays_k=torch.zeros(n_rays, dtype=torch.int32, device=device),
                   rays_n=torch.zeros(n_rays, dtype=torch.int32, device=device),
                   optical_depth=torch.zeros(n_rays, dtype=torch.float64, device=device),
                   weights_sum=torch.zeros(n_rays, device=device), depth=torch.zeros(n_rays, device=device),
                   image=torch.zeros(n_rays, channels, device=device))


def march_rays(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
               alive: Tensor, rays_k: Tensor, rays_n: Tensor, bound: float, grid_res: int, dt: float, n_step: int,
               max_steps: int, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """March up to ``n_step`` occupied samples for each alive ray (updates ``rays_k``/``rays_n`` in place).

    Ray ``alive[a]`` continues its lattice ``t_k = near + (k + noise)·dt`` (as in ``march_rays_train``) from
    ``k = rays_k[r]`` and emits at most ``min(n_step, max_steps − rays_n[r])`` occupied samples into row ``a``.
    Afterwards ``rays_k[r]`` is the next lattice index if the row was filled, else -1 (finished).

    Args:
        rays_o, rays_d: [N, 3] float32 origins and unit directions.
        nears, fars: [N] float32 from ``near_far_from_aabb``.
        bitfield: [S, R³/8] uint8 occupancy bits (Morton order).
        slots: [N] int64 time slot of each ray.
        alive: [A] int64 indices of the rays to march.
        rays_k: [N] int32 next lattice index (-1: finished); updated in place.
        rays_n: [N] int32 samples emitted so far; updated in place.
        bound, grid_res, dt, max_steps: as in ``march_rays_train``.
        n_step: rows per alive ray.
        noise: [N] float32 lattice jitter in [0, 1), or None (0).

    Returns:
        xyzs [A, n_step, 3], dirs [A, n_step, 3], ts [A, n_step, 2] (t, dt); unused rows are all zero (dt = 0).
    """
    n = check_float("rays_o", rays_o, (None, 3)).shape[0]
    for name, v, shape in (("rays_d", rays_d, (n, 3)), ("nears", nears, (n,)), ("fars", fars, (n,))):
        check_float(name, v, shape)
    check_tensor("bitfield", bitfield, (None, None), (torch.uint8,))
    check_int("slots", slots, (n,))
    check_int("alive", alive, (None,))
    check_tensor("rays_k", rays_k, (n,), (torch.int32,))
    check_tensor("rays_n", rays_n, (n,), (torch.int32,))
    tensors = dict(rays_o=rays_o, rays_d=rays_d, nears=nears, fars=fars, bitfield=bitfield, slots=slots, alive=alive,
                   rays_k=rays_k, rays_n=rays_n)
    if noise is not None:
        tensors["noise"] = check_float("noise", noise, (n,))
    check_same_device(**tensors)
    if bitfield.shape[1] * 8 != grid_res ** 3 or n_step < 1 or max_steps < 1 or dt <= 0 or bound <= 0:
        raise ValueError(f"bad march parameters: bitfield {list(bitfield.shape)}, grid_res {grid_res}, "
                         f"n_step {n_step}, max_steps {max_steps}, dt {dt}, bound {bound}")
    fn = dispatch("march_rays", rays_o, rays_d, bitfield, alive, rays_k)
    return fn(rays_o.contiguous(), rays_d.contiguous(), nears.contiguous(), fars.contiguous(), bitfield.contiguous(),
              slots.long().contiguous(), alive.long().contiguous(), rays_k, rays_n, float(bound), int(grid_res),
              float(dt), int(n_step), int(max_steps), None if noise is None else noise.contiguous())


def composite_rays(sigmas: Tensor, rgbs: Tensor, ts: Tensor, alive: Tensor, optical_depth: Tensor,
                   weights_sum: Tensor, depth: Tensor, image: Tensor, t_thresh: float = 1e-4) -> None:
    """Composite the rows of :func:`march_rays` into the per-ray accumulators, in place.

    Row a belongs to ray ``r = alive[a]``; its samples are taken in order until the first unused one (dt = 0) or
    until ``T = exp(−optical_depth[r]) < t_thresh``; each adds ``w = (1 − exp(−σ·dt))·T`` to weights_sum/depth/image
    and ``σ·dt`` to optical_depth. Not differentiable.

    Args:
        sigmas: [A, n_step] densities. rgbs: [A, n_step, C]. ts: [A, n_step, 2] from :func:`march_rays`.
        alive: [A] int64 ray indices. optical_depth: [N] float64. weights_sum, depth: [N]. image: [N, C].
        t_thresh: transmittance below which a ray stops.
    """
    a, s = check_float("sigmas", sigmas, (None, None)).shape
    check_float("rgbs", rgbs, (a, s, None))
    check_float("ts", ts, (a, s, 2))
    check_int("alive", alive, (a,))
    n = check_tensor("optical_depth", optical_depth, (None,), (torch.float64,)).shape[0]
    for name, v, shape in (("weights_sum", weights_sum, (n,)), ("depth", depth, (n,)),
                           ("image", image, (n, rgbs.shape[2]))):
        check_tensor(name, v, shape, (torch.float32,))
    check_same_device(sigmas=sigmas, rgbs=rgbs, ts=ts, alive=alive, optical_depth=optical_depth,
                      weights_sum=weights_sum, depth=depth, image=image)
    fn = dispatch("composite_rays", sigmas, rgbs, ts, alive, optical_depth)
    fn(sigmas.contiguous(), rgbs.contiguous(), ts.contiguous(), alive.long().contiguous(), optical_depth,
       weights_sum, depth, image, float(t_thresh))


RadianceFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""fn(xyzs [P, 3], dirs [P, 3], ray_index [P]) -> (sigmas [P], rgbs [P, C])."""


@torch.no_grad()
def render_rays_inference(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor,
                          slots: Tensor, fn: RadianceFn, *, bound: float, grid_res: int, dt: float, max_steps: int,
                          channels: int = 3, t_thresh: float = 1e-4, max_n_step: int = 8,
                          noise: Tensor | None = None) -> InferenceState:
    """Render rays with alive-ray compaction (the original's inference loop, spec §5.6).

    Each iteration marches ``n_step = clamp(N // n_alive, 1, max_n_step)`` samples per alive ray, evaluates ``fn``
    on the emitted ones only, composites them in place and drops rays that finished (past far / max_steps) or
    became opaque (T < t_thresh).

    Returns:
        The final :class:`InferenceState` (``weights_sum`` [N], ``depth`` [N], ``image`` [N, C] are the render).
    """
    n = rays_o.shape[0]
    state = InferenceState.create(n, channels, rays_o.device)
    alive = torch.arange(n, device=rays_o.device)
    while alive.numel():
        n_step = max(min(n // alive.numel(), max_n_step), 1)
        xyzs, dirs, ts = march_rays(rays_o, rays_d, nears, fars, bitfield, slots, alive, state.rays_k, state.rays_n,
                                    bound, grid_res, dt, n_step, max_steps, noise)
        used = ts[..., 1] > 0
        sigmas = xyzs.new_zeros(used.shape)
        rgbs = xyzs.new_zeros(*used.shape, channels)
        if bool(used.any()):
            ray_index = alive[:, None].expand_as(used)[used]
            s, c = fn(xyzs[used], dirs[used], ray_index)
            sigmas[used], rgbs[used] = s.to(sigmas.dtype), c.to(rgbs.dtype)
        composite_rays(sigmas, rgbs, ts, alive, state.optical_depth, state.weights_sum, state.depth, state.image,
                       t_thresh)
        trans = torch.exp(-state.optical_depth[alive]).to(torch.float32)
        alive = alive[(state.rays_k[alive] >= 0) & (trans >= t_thresh)]
    return state
