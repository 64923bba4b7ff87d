"""Front-to-back volume compositing of packed ray samples (training, differentiable)."""

from __future__ import annotations

from torch import Tensor

from animate124.ops._checks import check_float, check_int, check_same_device, check_values, dispatch

__all__ = ["composite_rays_train"]


def composite_rays_train(sigmas: Tensor, rgbs: Tensor, ts: Tensor, rays: Tensor,
                         t_thresh: float = 1e-4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Composite packed samples into per-ray opacity, depth and colour.

    ``α_i = 1 − exp(−σ_i·dt_i)``, ``T_i = Π_{j<i} (1 − α_j)`` within the ray; sample i contributes iff
    ``T_i ≥ t_thresh`` (``w_i = α_i·T_i``, else 0; so the sample that pushes T below the threshold still counts).

    Differentiable w.r.t. ``sigmas`` and ``rgbs``. Warning: not differentiable w.r.t. ``ts`` or ``rays``, and the
    cut-off set ``{i: T_i ≥ t_thresh}`` is treated as constant.

    Args:
        sigmas: [M] densities σ ≥ 0.
        rgbs: [M, C] sample colours (any C ≥ 1).
        ts: [M, 2] (t, dt) of each sample.
        rays: [N, 2] int32/int64 (offset, count) of each ray's samples.
        t_thresh: transmittance below which the remaining samples are ignored.

    Returns:
        weights: [M] per-sample weights w_i (0 for culled or unreferenced samples).
        weights_sum: [N] Σ w (opacity).
        depth: [N] Σ w·t.
        image: [N, C] Σ w·c.

    Example:
        >>> w, acc, depth, rgb = composite_rays_train(sigmas, rgbs, samples.ts, samples.rays)
        >>> pixel = rgb + (1 - acc[:, None]) * background
    """
    m = check_float("sigmas", sigmas, (None,)).shape[0]
    check_float("rgbs", rgbs, (m, None))
    check_float("ts", ts, (m, 2))
    check_int("rays", rays, (None, 2))
    check_same_device(sigmas=sigmas, rgbs=rgbs, ts=ts, rays=rays)
    if rgbs.dtype != sigmas.dtype or ts.dtype != sigmas.dtype:
        raise ValueError(f"sigmas, rgbs, ts must share a dtype, got {sigmas.dtype}, {rgbs.dtype}, {ts.dtype}")
    if rays.shape[0]:  # a device-side assert on CUDA (no host sync in the step)
        check_values((rays[:, 0].long() + rays[:, 1].long()).max() <= m, f"rays (offset + count) point past the {m} samples")
    fn = dispatch("composite_rays_train", sigmas, rgbs, ts, rays)
    return fn(sigmas.contiguous(), rgbs.contiguous(), ts.contiguous(), rays.contiguous(), float(t_thresh))
