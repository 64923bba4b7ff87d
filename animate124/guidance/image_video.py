"""Image-conditioned video SDS through Stable Video Diffusion (DynamiCrafter-style double conditioning).

The text-to-video prior only sees the prompt, so the object drifts away from the input image over time. SVD's UNet
(``UNetSpatioTemporalConditionModel``) conditions on the reference image twice: a CLIP image embedding in the
cross-attention and the image's VAE latent concatenated to every frame's noisy latent. This term distils that prior.

Derivation (EDM / v-prediction → the ε-form every other term uses)
------------------------------------------------------------------
SVD is trained with EDM preconditioning, σ_data = 1 (``EulerDiscreteScheduler(prediction_type="v_prediction",
timestep_type="continuous")``): for a clean latent z and noise level σ the noisy latent is z_n = z + σ·ε and

    c_in = 1/√(σ²+1),  c_skip = 1/(σ²+1),  c_out = −σ/√(σ²+1),  c_noise = ¼·ln σ,
    v = UNet(c_in·z_n, c_noise, …),        x̂₀ = c_skip·z_n + c_out·v.

Write ᾱ = 1/(1+σ²), α = √ᾱ = c_in, s = √(1−ᾱ) = σ·c_in. Then c_in·z_n = α·z + s·ε is exactly the variance-preserving
z_t of DDPM with that ᾱ, and the v-target is v = α·ε − s·z. Solving for ε gives the closed form

    ε̂ = s·z_t + α·v   ( = (z_n − x̂₀)/σ, without the 1/σ division ),

so the SDS gradient w(σ)·(ε̂ − ε) = w(σ)·(z − x̂₀)/σ is the usual ε-residual, and :func:`guided_sds` (VP form) applies
unchanged: we draw integer t like every other term, use ᾱ_t of SVD's training schedule (scaled-linear β
0.00085–0.012), hence σ_t = √((1−ᾱ_t)/ᾱ_t) (t ∈ [20, 980] → σ ∈ [0.14, 13.0]), feed the UNet z_t = c_in·z_n with
timestep c_noise, and convert its v to ε̂. DreamFusion's w = 1 − ᾱ_t = σ²/(1+σ²) (the default) keeps the gradient
bounded at small σ (w = 1 would blow up like 1/σ in the x̂₀ form). CFG is linear, so guiding v then converting equals
guiding ε.

Conditioning (checked against the diffusers 0.42 pipeline and sgm's svd.yaml)
-----------------------------------------------------------------------------
* CLIP stream: reference resized to 224 with antialiasing, normalised with CLIP mean/std by hand (transformers'
  ``CLIPImageProcessor`` falls back to a non-differentiable PIL path without torchvision), ``image_embeds`` → [1, 1, D].
* Latent stream: reference in [−1, 1] plus ``noise_aug_strength``·N(0, I) in pixel space, VAE ``.mode()``, **not**
  multiplied by the VAE scaling factor (while the noisy video latents are), repeated over F and concatenated on the
  channel dim of ``[B, F, C, h, w]``.
* ``added_time_ids`` = [fps − 1, motion_bucket_id, noise_aug_strength].
* Unconditional branch: zero CLIP embedding **and** zero conditioning latent, same time ids.
* The pipeline's per-frame guidance ramp linspace(1, 3, F) leaves frame 0 unguided because frame 0 ≈ the conditioning
  image when sampling. In SDS, frame 0 is the render at τ = 0, which must match the input image too, so we guide every
  frame with the same scale by default; ``cfg_ramp_min`` restores the pipeline's ramp.
* One noise level per clip (the UNet takes one timestep per batch element).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from animate124.config.guidance import ImageVideoGuidanceConfig
from animate124.config.schema import ModelsConfig
from animate124.guidance.base import (
    GuidanceTerm,
    TermInputs,
    check_images,
    clip_normalize,
    resize_frames,
    resolve_device,
    vae_encode,
)
from animate124.guidance.sds import TimestepSampler, guided_sds
from animate124.types import GuidanceContext, GuidanceOutput


def edm_coefficients(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM preconditioning with σ_data = 1: (c_in, c_skip, c_out, c_noise) for noise levels ``sigma``."""
    c_in = 1.0 / torch.sqrt(sigma**2 + 1.0)
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / torch.sqrt(sigma**2 + 1.0)
    c_noise = 0.25 * torch.log(sigma)
    return c_in, c_skip, c_out, c_noise


def sigma_from_alphas_cumprod(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for integer timesteps ``t`` [B]."""
    a = alphas_cumprod.to(device=t.device, dtype=torch.float32)[t.long()]
    return torch.sqrt((1.0 - a) / a)


def v_to_eps(z_t: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """ε̂ = √(1−ᾱ)·z_t + √ᾱ·v for VP latents z_t and v-predictions v (``alpha_bar`` broadcastable)."""
    return torch.sqrt(1.0 - alpha_bar) * z_t + torch.sqrt(alpha_bar) * v


VPredictor = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
"""``(sample [B, F, 2C, h, w], timestep [B], encoder_hidden_states [B, 1, D], added_time_ids [B, 3]) → v``."""


@dataclass(frozen=True, eq=False)
class SVDCondition:
    """The conditioning of one reference image (:meth:`ImageVideoGuidance.condition`)."""

    embeds: Tensor
    """[1, 1, D] fp32 CLIP image embedding (cross-attention)."""
    latent: Tensor
    """[1, 4, h, w] fp32 unscaled VAE posterior mode of the noise-augmented image (concatenated to every frame)."""


class ImageVideoGuidance(GuidanceTerm):
    """SDS from Stable Video Diffusion conditioned on the reference image.

    Args:
        cfg: the term's settings (``guidance.image_video``).
        inputs: the phase's inputs: ``reference`` (required; taken at max(height, width)), ``models_cfg``,
            ``device`` (``cfg.device`` overrides it), ``seed`` (of the conditioning noise augmentation: the same
            reference gives the same condition), ``keep_image_encoder``.

    The reference's conditioning is computed here (:attr:`reference`); the CLIP image encoder then moves to the CPU
    unless ``inputs.keep_image_encoder`` (the rerender conditions on one keyframe per segment with
    :meth:`condition` and passes the value to :meth:`predict_eps`).
    """

    name = "image_video"

    def __init__(self, cfg: ImageVideoGuidanceConfig, inputs: TermInputs) -> None:
        super().__init__()
        from animate124.guidance import svd_models

        image = inputs.reference_rgb(self.name, max(cfg.height, cfg.width))
        self.cfg = cfg
        dev = resolve_device(cfg.device, inputs.device)
        parts = svd_models.load_svd(cfg.model, inputs.models_cfg or ModelsConfig(), dev)
        self.unet, self.vae, self.image_encoder = parts.unet, parts.vae, parts.image_encoder
        self.alphas_cumprod: Tensor
        self.register_buffer("alphas_cumprod", parts.alphas_cumprod.float(), persistent=False)
        self.sampler = TimestepSampler(len(parts.alphas_cumprod), cfg.t_min, cfg.t_max)
        self.seed = inputs.seed
        self.model_dtype: torch.dtype = next(parts.unet.parameters()).dtype
        self.freeze()
        self.to(dev)
        self._encoder_offloaded = False
        self.reference: SVDCondition = self.condition(image)
        """The conditioning of the phase's reference image (what :meth:`forward` uses)."""
        inputs.offload_image_encoder(self.image_encoder)
        self._encoder_offloaded = not inputs.keep_image_encoder

    @torch.no_grad()
    def condition(self, image: Tensor) -> SVDCondition:
        """Both conditioning streams of a reference image [3, H, W] in [0, 1] on white (pure: the term is unchanged;
        the noise augmentation draws from its own generator seeded with ``seed``)."""
        if self._encoder_offloaded:
            raise RuntimeError("the SVD image encoder was moved to the CPU after the reference embedding; build the "
                               "term with TermInputs(keep_image_encoder=True) to condition on more images")
        img = image.reshape(1, *image.shape[-3:]).to(self.device, torch.float32)
        embeds = self.image_encoder(clip_normalize(img, 224, "bilinear").to(self.model_dtype)).image_embeds  # [1, D]
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        small = resize_frames(img, (self.cfg.height, self.cfg.width))
        noisy = small * 2.0 - 1.0
        noisy = noisy + self.cfg.noise_aug_strength * torch.randn(noisy.shape, generator=gen).to(noisy)
        # The conditioning latent is the *unscaled* posterior mode of the noise-augmented image (sgm scale_factor 1.0).
        latent = self._encode_reference(noisy)
        return SVDCondition(embeds=embeds.float().unsqueeze(1), latent=latent)

    def _encode_reference(self, noisy: Tensor) -> Tensor:
        """VAE posterior mode (fp32) of the [1, 3, h, w] image in [-1, 1]. Like diffusers'
        StableVideoDiffusionPipeline, an fp16 VAE whose config sets ``force_upcast`` encodes in fp32 and is cast
        back to fp16 afterwards (the fp16 SVD VAE encoder overflows)."""
        vae = self.vae
        upcast = next(vae.parameters()).dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        if upcast:
            vae.to(dtype=torch.float32)
        try:
            dtype = torch.float32 if upcast else self.model_dtype
            return vae.encode(noisy.to(dtype)).latent_dist.mode().float()
        finally:
            if upcast:
                vae.to(dtype=torch.float16)

    def _time_ids(self, batch: int) -> Tensor:
        ids = [self.cfg.fps - 1, self.cfg.motion_bucket_id, self.cfg.noise_aug_strength]
        return torch.tensor([ids] * batch, device=self.device, dtype=self.model_dtype)

    def _guidance_scales(self, frames: int) -> Tensor:
        """[1, F, 1, 1, 1] per-frame CFG scales (constant unless ``cfg_ramp_min`` is set)."""
        if self.cfg.cfg_ramp_min is None:
            scales = torch.full((frames,), float(self.cfg.cfg_scale))
        else:
            scales = torch.linspace(float(self.cfg.cfg_ramp_min), float(self.cfg.cfg_scale), frames)
        return scales.view(1, frames, 1, 1, 1).to(self.device)

    def encode_frames(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """[B, F, 3, H, W] → scaled latents [B, F, 4, h, w]; only ``vae_grad_frames`` frames keep encoder gradients."""
        b, f = images.shape[:2]
        flat = resize_frames(images.reshape(b * f, *images.shape[2:]), (self.cfg.height, self.cfg.width))
        k = self.cfg.vae_grad_frames
        if k is None or k >= f:
            z = vae_encode(self.vae, flat, sample=True, scale=True, generator=generator)
            return z.reshape(b, f, *z.shape[1:])
        # frame picks are host integers (evenly spaced, first and last included): no nonzero() on the device
        picks = {round(i * (f - 1) / max(k - 1, 1)) for i in range(max(k, 1))}
        keep_idx = [c * f + i for c in range(b) for i in range(f) if i in picks]
        rest_idx = [c * f + i for c in range(b) for i in range(f) if i not in picks]
        keep_t = torch.tensor(keep_idx, device=flat.device)
        rest_t = torch.tensor(rest_idx, device=flat.device)
        z_grad = vae_encode(self.vae, flat[keep_t], sample=True, scale=True, generator=generator)
        with torch.no_grad():
            z_rest = vae_encode(self.vae, flat[rest_t], sample=True, scale=True, generator=generator)
        z = torch.empty(b * f, *z_grad.shape[1:], device=z_grad.device, dtype=z_grad.dtype)
        z = z.index_put((keep_t.to(z.device),), z_grad)
        z = z.index_put((rest_t.to(z.device),), z_rest)
        return z.reshape(b, f, *z.shape[1:])

    def predict_eps(self, z_t: Tensor, t: Tensor, reference: Optional[SVDCondition] = None) -> Tensor:
        """Guided ε̂ for VP latents z_t [B, F, 4, h, w] at integer timesteps t [B] (both CFG branches in one batch),
        conditioned on ``reference`` (a :meth:`condition` value; default: :attr:`reference`)."""
        c = self.reference if reference is None else reference
        embeds, latent = c.embeds, c.latent
        b, f = z_t.shape[:2]
        a = self.alphas_cumprod[t.long()].view(b, 1, 1, 1, 1)
        sigma = torch.sqrt((1.0 - a) / a).view(b)
        _, _, _, c_noise = edm_coefficients(sigma)
        cond = latent.unsqueeze(1).expand(b, f, *latent.shape[1:])
        # z_t = c_in·z_n is exactly the scaled model input; concat the conditioning latent on channels (dim 2).
        sample = torch.cat([torch.cat([z_t, torch.zeros_like(cond)], 2), torch.cat([z_t, cond], 2)], 0)
        ehs = torch.cat([torch.zeros_like(embeds).expand(b, -1, -1), embeds.expand(b, -1, -1)], 0)
        dt = self.model_dtype
        v = self.unet(sample.to(dt), torch.cat([c_noise, c_noise]).to(dt), encoder_hidden_states=ehs.to(dt),
                      added_time_ids=self._time_ids(2 * b)).sample.float()
        v_u, v_c = v.chunk(2)
        v_g = v_u + self._guidance_scales(f) * (v_c - v_u)
        return v_to_eps(z_t.float(), v_g, a)

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:
        check_images(images)
        out_device = images.device  # the loss goes back to the run's device, like every other term
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + ctx.step)
        latents = self.encode_frames(images.to(self.device), generator=gen)
        t = self.sampler.sample(ctx.step, batch=images.shape[0], generator=gen, device=self.device)
        noise = torch.randn(latents.shape, generator=gen).to(latents)
        res = guided_sds(latents, self.alphas_cumprod, t, self.predict_eps, cfg_scale=1.0,
                         weighting=self.cfg.weighting, scale=self.cfg.weight, noise=noise)
        return GuidanceOutput(loss=res.loss.to(out_device), stats=res.stats(self.name))
