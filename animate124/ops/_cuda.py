"""CUDA implementations of the public ops (the compiled ``animate124._C``, resolved lazily by ``_backend.get()``).

Same names, signatures and semantics as ``ops/_reference.py``; the public wrappers in ``ops/{raymarch,composite,
grid,hashgrid,inference}.py`` validate inputs and dispatch here only for CUDA tensors when the extension is usable.
Importing this module never imports or builds the extension. Differentiable ops are private
``torch.autograd.Function`` classes (STYLE.md §B); their backward passes are hand-written kernels and are not
themselves differentiable (double backward raises).
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from animate124.ops import _backend
from animate124.types import RaySamples

_AMP_FWD = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
_AMP_BWD = torch.amp.custom_bwd(device_type="cuda")


def _ext() -> ModuleType:
    module = _backend.get()
    if module is None:
        raise RuntimeError(f"animate124 CUDA kernels are unavailable: {_backend.backend_info()}")
    return module


def _f32(t: Tensor) -> Tensor:
    return t.to(torch.float32).contiguous()


# ----------------------------------------------------------------------------------------------------- ray marching
def near_far_from_aabb(rays_o: Tensor, rays_d: Tensor, aabb: Tensor, min_near: float = 0.2) -> tuple[Tensor, Tensor]:
    """CUDA `ops.raymarch.near_far_from_aabb` (float32 arithmetic; outputs cast back to ``rays_o.dtype``)."""
    nears, fars = _ext().near_far_from_aabb(_f32(rays_o), _f32(rays_d), _f32(aabb), float(min_near))
    return nears.to(rays_o.dtype), fars.to(rays_o.dtype)


def march_rays_train(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
                     noise: Tensor, bound: float, grid_res: int, dt: float, max_steps: int) -> RaySamples:
    """CUDA `ops.raymarch.march_rays_train`: count pass, exclusive scan, write pass (one host sync for M).

    Not differentiable.
    """
    xyzs, dirs, ts, rays = _ext().march_rays_train(
        _f32(rays_o), _f32(rays_d), _f32(nears), _f32(fars), bitfield.contiguous(), slots.long().contiguous(),
        _f32(noise), float(bound), int(grid_res), float(dt), int(max_steps))
    return RaySamples(xyzs=xyzs, dirs=dirs, ts=ts, rays=rays, times=None)


def march_rays(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
               alive: Tensor, rays_k: Tensor, rays_n: Tensor, bound: float, grid_res: int, dt: float, n_step: int,
               max_steps: int, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """CUDA `ops.inference.march_rays` (updates ``rays_k`` and ``rays_n`` in place). Not differentiable."""
    return _ext().march_rays(
        _f32(rays_o), _f32(rays_d), _f32(nears), _f32(fars), bitfield.contiguous(), slots.long().contiguous(),
        None if noise is None else _f32(noise), alive.long().contiguous(), rays_k, rays_n, float(bound),
        int(grid_res), float(dt), int(n_step), int(max_steps))


# ------------------------------------------------------------------------------------------------------ compositing
class _CompositeRaysTrain(torch.autograd.Function):
    @staticmethod
    @_AMP_FWD
    def forward(ctx, sigmas: Tensor, rgbs: Tensor, ts: Tensor, rays: Tensor, t_thresh: float):
        sigmas, rgbs, ts, rays = _f32(sigmas), _f32(rgbs), _f32(ts), rays.to(torch.int32).contiguous()
        weights, weights_sum, depth, image = _ext().composite_rays_train_forward(sigmas, rgbs, ts, rays, t_thresh)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(sigmas, rgbs, ts, rays)
        ctx.t_thresh = t_thresh
        return weights, weights_sum, depth, image

    @staticmethod
    @once_differentiable
    @_AMP_BWD
    def backward(ctx, grad_weights: Tensor, grad_weights_sum: Tensor, grad_depth: Tensor, grad_image: Tensor):
        sigmas, rgbs, ts, rays = ctx.saved_tensors
        grad_sigmas, grad_rgbs = _ext().composite_rays_train_backward(
            _f32(grad_weights), _f32(grad_weights_sum), _f32(grad_depth), _f32(grad_image), sigmas, rgbs, ts, rays,
            ctx.t_thresh)
        return (
            grad_sigmas if ctx.needs_input_grad[0] else None,
            grad_rgbs if ctx.needs_input_grad[1] else None,
            None,  # ts
            None,  # rays
            None,  # t_thresh
        )


def composite_rays_train(sigmas: Tensor, rgbs: Tensor, ts: Tensor, rays: Tensor,
                         t_thresh: float = 1e-4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CUDA `ops.composite.composite_rays_train` (hand-written backward w.r.t. sigmas and rgbs).

    Warning: not differentiable w.r.t. ``ts`` or ``rays``; the backward is not differentiable (no double backward).
    """
    return _CompositeRaysTrain.apply(sigmas, rgbs, ts, rays, float(t_thresh))


def composite_rays(sigmas: Tensor, rgbs: Tensor, ts: Tensor, alive: Tensor, optical_depth: Tensor,
                   weights_sum: Tensor, depth: Tensor, image: Tensor, t_thresh: float = 1e-4) -> None:
    """CUDA `ops.inference.composite_rays` (in place on optical_depth/weights_sum/depth/image). Not differentiable."""
    _ext().composite_rays(_f32(sigmas), _f32(rgbs), _f32(ts), alive.long().contiguous(), optical_depth, weights_sum,
                          depth, image, float(t_thresh))


# ---------------------------------------------------------------------------------------------- occupancy grid bits
def morton3d(coords: Tensor) -> Tensor:
    """CUDA `ops.grid.morton3d`."""
    return _ext().morton3d(coords.long().contiguous())


def morton3d_invert(idx: Tensor) -> Tensor:
    """CUDA `ops.grid.morton3d_invert`."""
    return _ext().morton3d_invert(idx.long().contiguous())


def packbits(grid: Tensor, thresh: float | Tensor) -> Tensor:
    """CUDA `ops.grid.packbits` (a float threshold is broadcast to every slot)."""
    if not isinstance(thresh, Tensor):
        thresh = torch.full((grid.shape[0],), float(thresh), dtype=torch.float32, device=grid.device)
    return _ext().packbits(_f32(grid), _f32(thresh))


# ------------------------------------------------------------------------------------------------- grid encodings
class _GridEncode(torch.autograd.Function):
    @staticmethod
    @_AMP_FWD
    def forward(ctx, x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor, kind: str,
                t: Tensor | None):
        x, emb = _f32(x), _f32(embeddings)
        offsets, resolutions = offsets.long().contiguous(), resolutions.long().contiguous()
        t = None if (t is None or emb.shape[0] == 1) else _f32(t)
        out = _ext().grid_encode_forward(x, emb, offsets, resolutions, kind == "hash", t)
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(x, offsets, resolutions, t)
        ctx.kind, ctx.shape = kind, tuple(emb.shape)
        return out

    @staticmethod
    @once_differentiable
    @_AMP_BWD
    def backward(ctx, grad_out: Tensor):
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None, None
        x, offsets, resolutions, t = ctx.saved_tensors
        k, total, f = ctx.shape
        grad_emb = _ext().grid_encode_backward(_f32(grad_out), x, k, total, f, offsets, resolutions,
                                               ctx.kind == "hash", t)
        return (
            None,  # x: not differentiable (as in the reference, which detaches x)
            grad_emb,
            None,  # offsets
            None,  # resolutions
            None,  # kind
            None,  # t: not differentiable
        )


def grid_encode(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor, kind: str,
                t: Tensor | None = None) -> Tensor:
    """CUDA `ops.hashgrid.grid_encode`: one thread per (point, level), keyframe lerp fused, atomics in backward.

    Differentiable w.r.t. ``embeddings`` only (not ``x`` or ``t``); no double backward (use the reference path,
    ``ANIMATE124_FORCE_REFERENCE=1``, for that). Features per level F must be 1, 2, 4 or 8.
    """
    return _GridEncode.apply(x, embeddings, offsets, resolutions, kind, t)


class _KeyframeTV(torch.autograd.Function):
    @staticmethod
    @_AMP_FWD
    def forward(ctx, embeddings: Tensor):
        emb = _f32(embeddings)
        count = (emb.shape[0] - 1) * emb.shape[1]
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(emb)
        ctx.count = count
        return (_ext().keyframe_tv_forward(emb) / count).to(torch.float32)

    @staticmethod
    @once_differentiable
    @_AMP_BWD
    def backward(ctx, grad_out: Tensor):
        (emb,) = ctx.saved_tensors
        scale = (grad_out.to(torch.float32) / ctx.count).reshape(1).contiguous()
        return _ext().keyframe_tv_backward(emb, scale)


def keyframe_tv(embeddings: Tensor) -> Tensor:
    """CUDA `ops.hashgrid.keyframe_tv`: fused reduction (float64 accumulator) and a fused elementwise backward.

    Plain torch needs ``E[1:] - E[:-1]`` plus its square, i.e. two (K−1)·total·F temporaries (≈0.9 GB each for the
    full 64-keyframe grid) in the forward and more in the backward; the kernels read E once and allocate only the
    gradient. Returns 0 (attached to the graph) for K == 1, like the reference.
    """
    if embeddings.shape[0] < 2:
        return embeddings.sum() * 0.0
    return _KeyframeTV.apply(embeddings)
