"""Functional ops (ray marching, compositing, occupancy bits, grid encodings).

Each public op validates its inputs, then runs the compiled CUDA kernel when the inputs are on CUDA and the
extension is available (``ops/_backend.py``), else its pure-PyTorch twin in ``ops/_reference.py``.
"""

from animate124.ops.composite import composite_rays_train
from animate124.ops.grid import morton3d, morton3d_invert, packbits
from animate124.ops.hashgrid import grid_encode, grid_layout, keyframe_tv
from animate124.ops.inference import InferenceState, composite_rays, march_rays, render_rays_inference
from animate124.ops.raymarch import march_rays_train, near_far_from_aabb

__all__ = [
    "InferenceState",
    "composite_rays",
    "composite_rays_train",
    "grid_encode",
    "grid_layout",
    "keyframe_tv",
    "march_rays",
    "march_rays_train",
    "morton3d",
    "morton3d_invert",
    "near_far_from_aabb",
    "packbits",
    "render_rays_inference",
]
