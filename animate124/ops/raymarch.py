"""Ray/box intersection and occupancy-guided ray marching (training). Not differentiable."""

from __future__ import annotations

import torch
from torch import Tensor

from animate124.ops._checks import check_float, check_int, check_same_device, check_tensor, check_values, dispatch
from animate124.types import RaySamples

__all__ = ["near_far_from_aabb", "march_rays_train"]


def near_far_from_aabb(rays_o: Tensor, rays_d: Tensor, aabb: Tensor,
                       min_near: float = 0.2) -> tuple[Tensor, Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab test).

    Per axis ``t = (plane - o) * (1 / d)``; ``near = max(max_axis(min(t0, t1)), min_near)``,
    ``far = min_axis(max(t0, t1))``. Rays that miss the box, or whose ``far <= near`` after the ``min_near``
    clamp (box behind the camera), get ``near = far = FLT_MAX`` (``torch.finfo(torch.float32).max``).
    Not differentiable.

    Args:
        rays_o: [N, 3] float32 ray origins.
        rays_d: [N, 3] float32 unit ray directions.
        aabb: [6] (xmin, ymin, zmin, xmax, ymax, zmax), same dtype/device.
        min_near: lower bound on ``near`` (distance from the origin).

    Returns:
        nears: [N] entry distances.
        fars: [N] exit distances.

    Example:
        >>> o = torch.tensor([[-3.0, 0.0, 0.0]]); d = torch.tensor([[1.0, 0.0, 0.0]])
        >>> near_far_from_aabb(o, d, torch.tensor([-1.0, -1, -1, 1, 1, 1]))
        (tensor([2.]), tensor([4.]))
    """
    check_float("rays_o", rays_o, (None, 3))
    check_float("rays_d", rays_d, (rays_o.shape[0], 3))
    check_float("aabb", aabb, (6,))
    check_same_device(rays_o=rays_o, rays_d=rays_d, aabb=aabb)
    if rays_d.dtype != rays_o.dtype or aabb.dtype != rays_o.dtype:
        raise ValueError(f"rays_o, rays_d, aabb must share a dtype, got {rays_o.dtype}, {rays_d.dtype}, {aabb.dtype}")
    fn = dispatch("near_far_from_aabb", rays_o, rays_d, aabb)
    return fn(rays_o.contiguous(), rays_d.contiguous(), aabb.contiguous(), float(min_near))


def march_rays_train(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
                     noise: Tensor, bound: float, grid_res: int, dt: float, max_steps: int) -> RaySamples:
    """Occupancy-guided fixed-step sample generation for training.

    Exact semantics (the CUDA kernel emits exactly the same samples). All arithmetic is float32 with one rounding
    per operation (no fused multiply-add), with ``dt``, ``bound`` and ``scale = grid_res / (2·bound)`` rounded to
    float32 once:

    - lattice ``t_k = near + ((float(k) + noise) * dt)`` for ``k = 0, 1, ...`` while ``t_k < far``;
    - position ``p = clamp(o + (t_k * d), -bound, bound)`` per axis;
    - cell ``c = clamp(floor((p + bound) * scale), 0, grid_res - 1)``, Morton index ``m = morton3d(c)``;
    - the sample is emitted iff bit ``m & 7`` of byte ``bitfield[slot, m >> 3]`` is set;
    - at most ``max_steps`` samples per ray (the first ones along the ray).

    Rays with ``near = FLT_MAX`` (misses) get no samples. Samples are packed in ray order.

    Args:
        rays_o: [N, 3] float32 origins.
        rays_d: [N, 3] float32 unit directions.
        nears: [N] float32 from :func:`near_far_from_aabb`.
        fars: [N] float32.
        bitfield: [S, R³/8] uint8 Morton-ordered occupancy bits of S time slots.
        slots: [N] int64 time slot of each ray (row of ``bitfield``).
        noise: [N] float32 in [0, 1): per-ray jitter of the lattice.
        bound: the box is [-bound, bound]³.
        grid_res: R, occupancy cells per axis (≤ 1024).
        dt: constant step length.
        max_steps: cap on emitted samples per ray.

    Returns:
        RaySamples with xyzs [M, 3], dirs [M, 3], ts [M, 2] = (t_k, dt), rays [N, 2] int32 (offset, count),
        times None.

    Example:
        >>> bits = packbits(torch.ones(1, 128 ** 3), 0.5)          # everything occupied
        >>> s = march_rays_train(o, d, nears, fars, bits, torch.zeros(N, dtype=torch.long), torch.rand(N),
        ...                      1.0, 128, 2 * 3 ** 0.5 / 1024, 1024)
    """
    n = check_float("rays_o", rays_o, (None, 3)).shape[0]
    check_float("rays_d", rays_d, (n, 3))
    check_float("nears", nears, (n,))
    check_float("fars", fars, (n,))
    check_float("noise", noise, (n,))
    check_tensor("bitfield", bitfield, (None, None), (torch.uint8,))
    check_int("slots", slots, (n,))
    check_same_device(rays_o=rays_o, rays_d=rays_d, nears=nears, fars=fars, bitfield=bitfield, slots=slots,
                      noise=noise)
    for name, v in (("rays_o", rays_o), ("rays_d", rays_d), ("nears", nears), ("fars", fars), ("noise", noise)):
        if v.dtype != torch.float32:
            raise ValueError(f"{name} must be float32, got {v.dtype}")
    if not 1 <= grid_res <= 1024:
        raise ValueError(f"grid_res must be in [1, 1024] (10-bit Morton codes), got {grid_res}")
    if bitfield.shape[1] * 8 != grid_res ** 3:
        raise ValueError(f"bitfield must have grid_res^3/8 = {grid_res ** 3 // 8} bytes per slot, "
                         f"got {bitfield.shape[1]}")
    if bound <= 0 or dt <= 0 or max_steps < 1:
        raise ValueError(f"need bound > 0, dt > 0, max_steps >= 1; got {bound}, {dt}, {max_steps}")
    if n:
        check_values(((slots >= 0) & (slots < bitfield.shape[0])).all(), f"slots must lie in [0, {bitfield.shape[0] - 1}]")
    fn = dispatch("march_rays_train", rays_o, rays_d, nears, fars, bitfield, slots, noise)
    return fn(rays_o.contiguous(), rays_d.contiguous(), nears.contiguous(), fars.contiguous(),
              bitfield.contiguous(), slots.long().contiguous(), noise.contiguous(), float(bound), int(grid_res),
              float(dt), int(max_steps))
