"""A closed-form "denoiser" for testing the SDS machinery without weights (DESIGN.md §7).

For a data distribution concentrated on one target ``x*`` the optimal ε-prediction is exact:

    ε̂(z_t, t) = (z_t − √ᾱ_t·z*) / √(1 − ᾱ_t),      z* = E(x*)

so the SDS gradient becomes ``w(t)·(ε̂ − ε) = w(t)·√(ᾱ_t/(1−ᾱ_t))·(z − z*)``: a pull of the rendered latents
towards the target's. Optimising a field only with this term must converge to the target view/video.

The "encoder" E is pixel space (``2x − 1``) followed by an optional fixed linear map ``[C, 3]`` per pixel and an
optional average-pool downsampling (a linear stand-in for a VAE). It works for images ``[B, 1, 3, H, W]`` and
videos ``[B, F, 3, H, W]`` (one timestep per clip).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from animate124.config.guidance import Weighting
from animate124.guidance.base import GuidanceTerm, check_images, resize_frames
from animate124.guidance.sds import TimestepSampler, guided_sds
from animate124.types import GuidanceContext, GuidanceOutput


def sd_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:
    """ᾱ of SD-1.5's scaled-linear schedule (β from 0.00085 to 0.012), [T] fp32 — no diffusers needed."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class AnalyticGuidance(GuidanceTerm):
    """SDS against the exact denoiser of a single target image or video.

    Args:
        target: [F, 3, H, W] or [B, F, 3, H, W] target in [0, 1] (a single image is F = 1).
        weight: λ.
        t_min: lower timestep fraction.
        t_max: upper timestep fraction.
        weighting: w(t).
        encoder: optional [C, 3] fixed linear map applied per pixel to ``2x − 1`` (a linear "VAE").
        downsample: average-pool factor of the "VAE" (1 = none).
        alphas_cumprod: [T] ᾱ (default: SD's schedule).
    """

    name = "analytic"

    def __init__(
        self,
        target: Tensor,
        weight: float = 1.0,
        t_min: float = 0.02,
        t_max: float = 0.98,
        weighting: Weighting = Weighting.one_minus_alpha,
        encoder: Optional[Tensor] = None,
        downsample: int = 1,
        alphas_cumprod: Optional[Tensor] = None,
    ) -> None:
        super().__init__()
        if target.dim() == 4:
            target = target.unsqueeze(0)
        check_images(target)
        self.weight = weight
        self.weighting = Weighting(weighting)
        self.downsample = downsample
        self.register_buffer("encoder", None if encoder is None else encoder.float(), persistent=False)
        acp = sd_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod.float()
        self.register_buffer("alphas_cumprod", acp, persistent=False)
        self.register_buffer("target", target.float(), persistent=False)
        self.sampler = TimestepSampler(self.alphas_cumprod.shape[0], t_min, t_max)

    def encode(self, images: Tensor) -> Tensor:
        """[B, F, 3, H, W] in [0, 1] → latents [B, F, C, H/d, W/d] (differentiable, linear)."""
        b, f = images.shape[:2]
        x = images.reshape(b * f, *images.shape[2:]) * 2.0 - 1.0
        if self.encoder is not None:
            x = torch.einsum("cd,ndhw->nchw", self.encoder, x)
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        return x.reshape(b, f, *x.shape[1:])

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:
        """SDS loss pulling ``images`` [B, F, 3, H, W] towards the target (resized to the target's size)."""
        check_images(images)
        b, f = images.shape[:2]
        size = tuple(self.target.shape[-2:])
        frames = resize_frames(images.reshape(b * f, *images.shape[2:]), size).reshape(b, f, 3, *size)
        latents = self.encode(frames)
        with torch.no_grad():
            z_star = self.encode(self.target.to(latents)).expand_as(latents)
        acp = self.alphas_cumprod

        def predict_eps(z_t: Tensor, t: Tensor) -> Tensor:
            a = acp[t].reshape(-1, *([1] * (z_t.dim() - 1)))
            return (z_t - a.sqrt() * z_star) / (1.0 - a).sqrt()

        t = self.sampler.sample(ctx.step, b, device=latents.device)
        res = guided_sds(latents, acp, t, predict_eps, cfg_scale=1.0, weighting=self.weighting, scale=self.weight)
        stats = res.stats(self.name)
        stats[f"{self.name}/mse"] = F.mse_loss(frames.detach(), self.target.to(frames).expand_as(frames))
        return GuidanceOutput(loss=res.loss, stats=stats)
