"""Samplers of the re-rendering stage, written against an ε-predictor so that analytic denoisers can stand in.

All passes are DDIM with η = 0 on the variance-preserving schedule ᾱ_t (SD-1.5 and SVD share the scaled-linear
β 0.00085–0.012 training schedule; SVD's EDM σ = √((1−ᾱ)/ᾱ) maps onto it, guidance/image_video.py). DDIM(η = 0) is the
Euler step of the probability-flow ODE in the variables x/√ᾱ, i.e. the same ODE as SVD's Euler sampler.

- :func:`img2img`: keyframes. SDEdit at strength s (start t = s·(T−1) from √ᾱ·z₀ + √(1−ᾱ)·ε), with optional
  known-region replacement (RePaint / blended latent diffusion): inside a mask the latent is reset to the noised
  reference at every step while t ≥ ``known_until``.
- :func:`inbetween`: one segment between two keyframes (both included). The endpoints are pinned to the noised
  keyframe latents; the ε of a pass conditioned on keyframe A (forward) is fused at every step with the time-reversed
  ε of a pass conditioned on keyframe B on the reversed sequence, with weights w_f = 1 − f/(F−1) (time-reversal
  fusion, Feng et al. 2024); the start is the noised coarse render (SDEdit) and, in the low-noise steps, x̂₀ is blended
  toward the coarse latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

EpsFn = Callable[[Tensor, int], Tensor]
"""``(z_t [B, ...], t) → ε̂ [B, ...]`` (guidance already applied)."""


def timesteps(strength: float, steps: int, num_train: int = 1000) -> list[int]:
    """Descending integer timesteps of a pass at ``strength`` ∈ (0, 1]: round(steps·s) (≥ 1) of them, evenly from
    t = round(s·(T−1)) down to 0."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1] (got {strength})")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    start = round(strength * (num_train - 1))
    n = max(1, round(steps * strength))
    ts = torch.linspace(start, 0, n).round().long().tolist() if n > 1 else [start]
    return list(dict.fromkeys(int(t) for t in ts))  # unique, order kept


def add_noise(z0: Tensor, noise: Tensor, alphas_cumprod: Tensor, t: int) -> Tensor:
    """√ᾱ_t·z₀ + √(1−ᾱ_t)·ε."""
    a = float(alphas_cumprod[t])
    return a**0.5 * z0 + (1.0 - a) ** 0.5 * noise


def ddim_step(z: Tensor, eps: Tensor, a: float, a_prev: float) -> Tensor:
    """One DDIM (η = 0) step from ᾱ = a to ᾱ = a_prev (a_prev = 1 returns x̂₀)."""
    x0 = (z - (1.0 - a) ** 0.5 * eps) / a**0.5
    return a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps


@dataclass
class KnownRegion:
    """Known-region replacement for some batch items of an img2img pass."""

    latents: Tensor
    """[B, C, h, w] reference latents (rows not in ``index`` are ignored)."""
    mask: Tensor
    """[B, 1, h, w] in [0, 1]: 1 = keep the reference."""
    index: list[int]
    """Batch rows the replacement applies to."""
    until: int = 0
    """Replace while t ≥ until."""


def img2img(z0: Tensor, eps_fn: EpsFn, alphas_cumprod: Tensor, strength: float, steps: int, noise: Tensor,
            known: Optional[KnownRegion] = None) -> Tensor:
    """SDEdit / img2img of latents ``z0`` [B, ...] at ``strength``; returns the clean latents."""
    ts = timesteps(strength, steps, len(alphas_cumprod))
    z = add_noise(z0, noise, alphas_cumprod, ts[0])
    for i, t in enumerate(ts):
        if known is not None and t >= known.until:
            idx = known.index
            ref = add_noise(known.latents[idx], noise[idx], alphas_cumprod, t)
            z = z.clone()
            z[idx] = known.mask[idx] * ref + (1.0 - known.mask[idx]) * z[idx]
        a = float(alphas_cumprod[t])
        a_prev = float(alphas_cumprod[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        z = ddim_step(z, eps_fn(z, t), a, a_prev)
    return z


@dataclass
class InbetweenOptions:
    """Settings of :func:`inbetween` (see config/rerender.py::InbetweenConfig)."""

    strength: float = 0.7
    steps: int = 25
    bidirectional: bool = True
    blend: float = 0.0
    blend_below: int = 0
    """Blend x̂₀ toward the coarse latents in the steps with t < blend_below."""


def fusion_weights(frames: int, like: Tensor) -> Tensor:
    """[F, 1, ..] forward-pass weights 1 − f/(F−1) (exactly 1 − the reversed weights)."""
    f = torch.arange(frames, dtype=like.dtype, device=like.device)
    w = 1.0 - f / max(frames - 1, 1)
    return w.view(frames, *([1] * (like.dim() - 1)))


def inbetween(coarse: Tensor, key_a: Tensor, key_b: Tensor, eps_a: EpsFn, eps_b: EpsFn, alphas_cumprod: Tensor,
              opts: InbetweenOptions, noise: Tensor) -> Tensor:
    """Latents of one segment [F, ...] from keyframe A (frame 0) to keyframe B (frame F−1).

    Args:
        coarse: [F, ...] latents of the coarse render (SDEdit start and blend target).
        key_a, key_b: [...] keyframe latents (pinned at frames 0 and F−1).
        eps_a: ε-predictor conditioned on keyframe A, on sequences in forward order.
        eps_b: ε-predictor conditioned on keyframe B; applied to the time-reversed sequence.
        alphas_cumprod: [T] ᾱ.
        opts: strength (1 = start from pure noise, i.e. not guided by the render), steps, fusion, blend.
        noise: [F, ...] the sampling noise.

    Returns:
        [F, ...] clean latents; frames 0 and F−1 are exactly ``key_a`` and ``key_b``.
    """
    n = coarse.shape[0]
    ts = timesteps(opts.strength, opts.steps, len(alphas_cumprod))
    keys = torch.stack([key_a, key_b])
    ends = [0, n - 1]
    z = noise.clone() if opts.strength >= 1.0 else add_noise(coarse, noise, alphas_cumprod, ts[0])
    w = fusion_weights(n, coarse)
    for i, t in enumerate(ts):
        z[ends] = add_noise(keys, noise[ends], alphas_cumprod, t)
        a = float(alphas_cumprod[t])
        eps = eps_a(z, t)
        if opts.bidirectional:
            eps = w * eps + (1.0 - w) * eps_b(z.flip(0), t).flip(0)
        if opts.blend > 0.0 and t < opts.blend_below:
            x0 = (z - (1.0 - a) ** 0.5 * eps) / a**0.5
            x0 = (1.0 - opts.blend) * x0 + opts.blend * coarse
            eps = (z - a**0.5 * x0) / (1.0 - a) ** 0.5
        a_prev = float(alphas_cumprod[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        z = ddim_step(z, eps, a, a_prev)
    z[ends] = keys
    return z
