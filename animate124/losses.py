"""Reference-view losses and regularisers (spec §7.2, §7.8). Pure functions returning unweighted scalars.

Phases multiply by their λ's (the original's: rgb 5, mask 0.5, depth 0.01, entropy 1e-3 with a ramp,
orientation 1e-2, normal TV 0.5, normal blur 0.5). Shapes are free unless stated: every image argument
may be ``[..., H, W, C]`` channels-last or any layout, as long as ``pred``, ``gt`` and ``mask`` broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ENTROPY_CLAMP = 1e-5
"""Weights are clamped to [ε, 1 − ε] before the binary entropy (the original's value)."""
NORMAL_BLUR_KERNEL = 9
NORMAL_BLUR_SIGMA = 3.0
"""Gaussian blur of the normal-smoothness term: 9×9, σ = 3 (stable-dreamfusion's kornia call)."""


def masked_rgb_loss(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """``MSE(pred·M, gt·M)`` averaged over all elements (spec §7.2; gt and pred composited on white)."""
    return F.mse_loss(pred * mask, gt * mask)


def mask_loss(opacity: Tensor, mask: Tensor) -> Tensor:
    """``MSE(opacity, M)`` of the accumulated weights against the binary mask."""
    return F.mse_loss(opacity, mask.to(opacity.dtype))


def nonzero_normalize_depth(depth: Tensor, mask: Tensor, eps: float = 1e-9) -> Tensor:
    """The original's ``nonzero_normalize_depth``: ``clamp((d − min_{M} d) / max d, 0, 1)``.

    Args:
        depth: any shape.
        mask: broadcastable boolean/float mask; the minimum is taken over masked pixels (0 if none).

    Returns:
        Same shape as ``depth``.
    """
    m = mask.expand_as(depth) > 0.5 if mask.dtype != torch.bool else mask.expand_as(depth)
    dmin = depth[m].min() if bool(m.any()) else depth.new_zeros(())
    return ((depth - dmin) / (depth.max() + eps)).clamp(0.0, 1.0)


def pearson(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two flattened tensors (scalar in [−1, 1])."""
    x = x.flatten().float()
    y = y.flatten().float()
    xc = x - x.mean()
    yc = y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm() + eps)


def depth_pearson_loss(pred_depth: Tensor, gt_depth: Tensor, mask: Tensor) -> Tensor:
    """``(1 − Pearson(pred[M], gt[M]))/2``: a scale/shift-invariant depth-ordering loss (0 when < 2 masked pixels)."""
    m = mask.expand_as(pred_depth) > 0.5 if mask.dtype != torch.bool else mask.expand_as(pred_depth)
    if int(m.sum()) < 2:
        return pred_depth.sum() * 0.0
    return (1.0 - pearson(pred_depth[m], gt_depth.expand_as(pred_depth)[m])) / 2.0


def opacity_entropy(weights: Tensor) -> Tensor:
    """``mean(−w log₂ w − (1 − w) log₂(1 − w))`` with w clamped to [1e-5, 1 − 1e-5] (spec §7.8)."""
    w = weights.float().clamp(ENTROPY_CLAMP, 1.0 - ENTROPY_CLAMP)
    return (-w * torch.log2(w) - (1.0 - w) * torch.log2(1.0 - w)).mean()


def orientation_loss(weights: Tensor, normals: Tensor, dirs: Tensor) -> Tensor:
    """``mean_i(sg(w_i)·max(0, n_i·d_i)²)``: penalise normals facing away from the camera.

    Args:
        weights: [M] per-sample compositing weights.
        normals: [M, 3] unit normals.
        dirs: [M, 3] unit ray directions (camera → point).
    """
    if weights.numel() == 0:
        return normals.sum() * 0.0
    nd = (normals * dirs).sum(-1).clamp(min=0.0)
    return (weights.detach().reshape(nd.shape) * nd**2).mean()


def normal_tv_loss(normal_image: Tensor) -> Tensor:
    """``mean(Δ_y²) + mean(Δ_x²)`` of a ``[N, C, H, W]`` normal image (2D smoothness, spec §7.8)."""
    dy = normal_image[..., 1:, :] - normal_image[..., :-1, :]
    dx = normal_image[..., :, 1:] - normal_image[..., :, :-1]
    return dy.square().mean() + dx.square().mean()


def normal_blur_loss(normal_image: Tensor) -> Tensor:
    """``MSE(N, GaussianBlur_9×9,σ=3(N))`` of a ``[N, C, H, W]`` normal image (kornia)."""
    import kornia

    k = NORMAL_BLUR_KERNEL
    blurred = kornia.filters.gaussian_blur2d(normal_image, (k, k), (NORMAL_BLUR_SIGMA, NORMAL_BLUR_SIGMA))
    return F.mse_loss(normal_image, blurred)


def ramp_weight(step: int, ramp_steps: int, value: float) -> float:
    """``value·min(1, step/ramp_steps)``; the original's entropy ramp is ``ramp_steps = max_steps/2``.

    The original used the cumulative ``--iters`` (spec §14.4); phases pass their own step counts.
    """
    if ramp_steps <= 0:
        return value
    return value * min(1.0, step / ramp_steps)
