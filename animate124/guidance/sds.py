"""Score distillation sampling (SDS) math shared by every guidance term. Pure torch, no model weights.

Every term follows the same recipe (spec §7.3–§7.7, DESIGN.md §3):

1. draw one timestep ``t`` per batch element (:class:`TimestepSampler`);
2. noise the latents: ``z_t = √ᾱ_t·z + √(1−ᾱ_t)·ε`` (:func:`add_noise`);
3. predict ε with classifier-free guidance (:func:`cfg_combine`, standard form ``ε_u + s(ε_c − ε_u)``; the original's
   ``ε_c + s(ε_c − ε_u)`` equals the standard form with ``s + 1``, so config defaults are the *effective* scales);
4. ``grad = λ·w(t)·(ε̂ − ε)`` (:func:`sds_weight`, :func:`sds_grad`);
5. inject it through the reparameterised loss ``0.5·‖z − sg(z − grad)‖²`` (:func:`sds_loss`), so AMP scaling,
   clipping and logging treat SDS like any other loss. The original's static stage called ``latents.backward(grad)``
   instead, which bypassed the GradScaler (spec §14.2); nothing here does that.

:func:`guided_sds` runs steps 2–5 given a callable that predicts ε, so all terms share one implementation.

Example:
    >>> sampler = TimestepSampler(1000, t_min=0.2, t_max=0.6)
    >>> t = sampler.sample(step=0, batch=1)
    >>> out = guided_sds(latents, alphas_cumprod, t, lambda z_t, t: (eps_u(z_t, t), eps_c(z_t, t)),
    ...                  cfg_scale=7.5, weighting=Weighting.one_minus_alpha)
    >>> out.loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

from animate124.config.guidance import SDSConfig, Weighting

EpsPrediction = Union[Tensor, Tuple[Tensor, Tensor]]
"""What an ε-predictor returns: the final ε̂, or ``(ε_uncond, ε_cond)`` to be combined with CFG."""


class TimestepSampler:
    """Uniform integer timesteps in ``[round(t_min·T), round(t_max·T)]`` (both ends included, like the original).

    Optionally the upper bound is annealed linearly from ``t_max`` to ``t_max_final`` over ``anneal_steps`` steps
    (DreamTime-style; off by default, the original does not anneal).

    Args:
        num_train_timesteps: T of the diffusion model (1000 for SD / ModelScope / Zero123).
        t_min: Lower end as a fraction of T.
        t_max: Upper end as a fraction of T (at step 0).
        anneal_steps: Steps over which the upper end moves to ``t_max_final`` (None = no annealing).
        t_max_final: Upper end after annealing (must be ≥ t_min).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        t_min: float = 0.02,
        t_max: float = 0.98,
        anneal_steps: Optional[int] = None,
        t_max_final: Optional[float] = None,
    ) -> None:
        if not 0.0 <= t_min <= t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1, got t_min={t_min}, t_max={t_max}")
        if anneal_steps is not None and (t_max_final is None or not t_min <= t_max_final <= 1.0):
            raise ValueError("annealing needs t_min <= t_max_final <= 1")
        self.num_train_timesteps = num_train_timesteps
        self.t_min, self.t_max = t_min, t_max
        self.anneal_steps, self.t_max_final = anneal_steps, t_max_final

    @classmethod
    def from_config(cls, cfg: SDSConfig, num_train_timesteps: int = 1000) -> "TimestepSampler":
        """The sampler of a guidance term's config (t_min, t_max, t_anneal_steps, t_max_final)."""
        return cls(num_train_timesteps, cfg.t_min, cfg.t_max, cfg.t_anneal_steps, cfg.t_max_final)

    def bounds(self, step: int) -> Tuple[int, int]:
        """Integer (low, high) timestep bounds at ``step``, both inclusive."""
        t_max = self.t_max
        if self.anneal_steps:
            frac = min(max(step, 0) / self.anneal_steps, 1.0)
            t_max = self.t_max + frac * (self.t_max_final - self.t_max)  # type: ignore[operator]
        lo = int(round(self.t_min * self.num_train_timesteps))
        hi = int(round(t_max * self.num_train_timesteps))
        hi = min(max(hi, lo), self.num_train_timesteps - 1)
        return min(lo, hi), hi

    def sample(
        self,
        step: int,
        batch: int = 1,
        generator: Optional[torch.Generator] = None,
        device: Union[str, torch.device, None] = None,
    ) -> Tensor:
        """Draw ``batch`` timesteps (int64, on ``device``) for global phase step ``step``."""
        lo, hi = self.bounds(step)
        gen_device = generator.device if generator is not None else "cpu"
        t = torch.randint(lo, hi + 1, (batch,), generator=generator, device=gen_device)
        return t.to(device) if device is not None else t


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Standard classifier-free guidance ``ε_u + s·(ε_c − ε_u)``.

    The original's SD/ModelScope/ControlNet form ``ε_c + s'(ε_c − ε_u)`` equals this with ``s = s' + 1``.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sds_weight(alphas_cumprod: Tensor, t: Tensor, weighting: Weighting) -> Tensor:
    """w(t) per batch element, float32 on ``t``'s device.

    Args:
        alphas_cumprod: [T] ᾱ of the scheduler.
        t: [B] integer timesteps.
        weighting: 1 − ᾱ_t, sqrt((1 − ᾱ_t)/ᾱ_t) (the x0-target form) or 1.

    Returns:
        [B] weights.
    """
    a = alphas_cumprod.to(device=t.device, dtype=torch.float32)[t.long()]
    weighting = Weighting(weighting)
    if weighting == Weighting.one_minus_alpha:
        return 1.0 - a
    if weighting == Weighting.sqrt_snr_inv:
        return torch.sqrt((1.0 - a) / a)
    return torch.ones_like(a)


def _expand(w: Tensor, like: Tensor) -> Tensor:
    """[B] → [B, 1, 1, ...] broadcastable against ``like``."""
    return w.reshape(w.shape[0], *([1] * (like.dim() - 1)))


def add_noise(latents: Tensor, noise: Tensor, alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """``z_t = √ᾱ_t·z + √(1−ᾱ_t)·ε`` (fp32 math, result in ``latents.dtype``); ``t`` is [B], B = latents.shape[0]."""
    a = _expand(alphas_cumprod.to(device=latents.device, dtype=torch.float32)[t.long()], latents)
    return (a.sqrt() * latents.float() + (1.0 - a).sqrt() * noise.float()).to(latents.dtype)


def sds_grad(eps_pred: Tensor, noise: Tensor, weight: Tensor) -> Tensor:
    """``w·(ε̂ − ε)`` in fp32; ``weight`` is [B] (already including λ) or a scalar tensor."""
    w = weight.to(torch.float32)
    if w.dim() == 1:
        w = _expand(w, eps_pred)
    return w * (eps_pred.float() - noise.float())


def sds_loss(latents: Tensor, grad: Tensor, batch_size: Optional[int] = None) -> Tensor:
    """Reparameterised SDS loss ``0.5·Σ(z − sg(z − grad))² / B`` in fp32.

    ``∂loss/∂z = grad / B`` exactly (B = ``batch_size``, default ``latents.shape[0]``; the original always has B = 1).
    The value equals ``0.5·‖grad‖²/B``, which is what gets logged.

    Args:
        latents: [B, ...] latents with grad (any layout; a video term passes [B, C, F, h, w] or [B·F, C, h, w]
            with ``batch_size=B``).
        grad: same shape, the SDS gradient (detached inside).
        batch_size: normaliser B.
    """
    z = latents.float()
    target = (z - grad.float()).detach()
    b = latents.shape[0] if batch_size is None else batch_size
    return 0.5 * ((z - target) ** 2).sum() / b


@dataclass
class SDSResult:
    """Everything one SDS evaluation produced (for logging and tests)."""

    loss: Tensor
    """Scalar reparameterised loss (fp32)."""
    grad: Tensor
    """[B, ...] λ·w(t)·(ε̂ − ε) (detached)."""
    t: Tensor
    """[B] timesteps used."""
    noise: Tensor
    """[B, ...] ε that was added."""
    eps_pred: Tensor
    """[B, ...] guided ε̂ (fp32, detached)."""
    weight: Tensor
    """[B] λ·w(t)."""

    def stats(self, prefix: str) -> dict[str, Tensor]:
        """Scalars for logging: loss, mean |grad|, mean t (detached 0-dim tensors: no host sync in the step)."""
        return {
            f"{prefix}/loss": self.loss.detach(),
            f"{prefix}/grad_abs": self.grad.abs().mean(),
            f"{prefix}/t": self.t.float().mean(),
        }


def guided_sds(
    latents: Tensor,
    alphas_cumprod: Tensor,
    t: Tensor,
    predict_eps: Callable[[Tensor, Tensor], EpsPrediction],
    cfg_scale: float,
    weighting: Weighting,
    scale: Union[float, Tensor] = 1.0,
    noise: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    batch_size: Optional[int] = None,
) -> SDSResult:
    """Add noise → predict ε (with CFG) → weighted residual → reparameterised loss.

    Args:
        latents: [B, ...] latents with grad (B = number of timesteps drawn).
        alphas_cumprod: [T] ᾱ of the scheduler.
        t: [B] integer timesteps.
        predict_eps: ``(z_t [B, ...], t [B]) → ε̂`` or ``(ε_uncond, ε_cond)``; called under ``torch.no_grad``.
            It must cast to its model's dtype itself; the result is used in fp32.
        cfg_scale: standard CFG scale (used only when ``predict_eps`` returns a pair).
        weighting: w(t) kind.
        scale: λ, a float or a [B] tensor (e.g. Zero123's angle-scaled weight).
        noise: ε to add (default: standard normal drawn with ``generator``).
        generator: RNG for the noise.
        batch_size: loss normaliser (see :func:`sds_loss`).

    Returns:
        :class:`SDSResult`; ``result.loss.backward()`` puts ``grad / B`` on ``latents``.
    """
    if t.shape != (latents.shape[0],):
        raise ValueError(f"t must be [B]={latents.shape[0]}, got {tuple(t.shape)}")
    if noise is None:
        gen_device = generator.device if generator is not None else latents.device
        noise = torch.randn(latents.shape, generator=generator, device=gen_device, dtype=torch.float32)
        noise = noise.to(latents.device)
    with torch.no_grad():
        z_t = add_noise(latents.detach(), noise, alphas_cumprod, t)
        pred = predict_eps(z_t, t)
        eps = cfg_combine(pred[0].float(), pred[1].float(), cfg_scale) if isinstance(pred, tuple) else pred.float()
        w = sds_weight(alphas_cumprod, t, weighting)
        w = w * (scale.to(w) if isinstance(scale, Tensor) else float(scale))
        grad = sds_grad(eps, noise, w)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    loss = sds_loss(latents, grad, batch_size)
    return SDSResult(loss=loss, grad=grad, t=t, noise=noise, eps_pred=eps, weight=w)
