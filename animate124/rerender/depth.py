"""Metric render depth → the depth ControlNet's input: normalised inverse depth, near bright (MiDaS-like).

``lllyasviel/control_v11f1p_sd15_depth`` was trained on MiDaS / LeReS / ZoeD annotations, which the annotators hand over
as relative *inverse* depth (disparity) min-max normalised per image to [0, 1]: near = 1 (white), far background ≈ 0.
Our renderer gives the expected ray distance ``Σ w·t`` (not divided by opacity). We therefore:

1. recover the distance of each covered pixel, d = depth / alpha (alpha > ``min_alpha``);
2. take the disparity 1/d and min-max normalise it over the covered pixels (of each frame, or of the whole video so
   that every keyframe sees the same mapping) into [floor, 1] — the floor keeps the farthest surface point brighter
   than the empty background, as in a MiDaS map of an object in front of a far wall;
3. multiply by alpha, so the background (alpha 0) is 0 and silhouettes fade like the render's.

The value is affine in 1/d on the covered pixels (tests/test_rerender.py checks this, and the ordering).
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_ALPHA = 1e-3
"""Pixels with less accumulated opacity are background."""


def inverse_depth(depth: Tensor, alpha: Tensor, per_frame: bool = False, floor: float = 0.2,
                  min_alpha: float = MIN_ALPHA) -> Tensor:
    """Normalised inverse depth of rendered frames.

    Args:
        depth: [N, H, W, 1] expected distance Σ w·t (the renderer's ``depth``, not divided by alpha).
        alpha: [N, H, W, 1] accumulated opacity.
        per_frame: normalise each frame on its own (MiDaS annotators do) instead of over the whole video.
        floor: value of the farthest covered point (the nearest is 1).
        min_alpha: opacity below which a pixel is background.

    Returns:
        [N, H, W, 1] in [0, 1]: alpha·(floor + (1 − floor)·(1/d − 1/d_far)/(1/d_near − 1/d_far)), 0 on the background.
    """
    if depth.shape != alpha.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and alpha {tuple(alpha.shape)} differ")
    covered = alpha > min_alpha
    dist = depth / alpha.clamp_min(min_alpha)
    disp = torch.where(covered, 1.0 / dist.clamp_min(1e-6), torch.zeros_like(dist))
    dims = tuple(range(1, disp.dim())) if per_frame else tuple(range(disp.dim()))
    big = torch.finfo(disp.dtype).max
    lo = torch.where(covered, disp, torch.full_like(disp, big)).amin(dim=dims, keepdim=True)
    hi = torch.where(covered, disp, torch.zeros_like(disp)).amax(dim=dims, keepdim=True)
    span = (hi - lo).clamp_min(1e-8)
    norm = floor + (1.0 - floor) * (disp - lo) / span
    # A frame (or video) whose covered pixels all share one distance maps to 1.
    norm = torch.where(hi - lo > 1e-8, norm, torch.ones_like(norm))
    return torch.where(covered, norm.clamp(0.0, 1.0) * alpha.clamp(0.0, 1.0), torch.zeros_like(norm))
