"""Stable Diffusion 1.5 SDS with view-dependent prompts (spec §7.3).

Per call: renders ``[B, F, 3, H, W]`` → bilinear to ``cfg.resolution`` → VAE encode (posterior sample ×
scaling factor, gradients through the encoder) → one timestep per image, t ~ U{t_min·T..t_max·T} → UNet on
``[uncond, cond]`` → standard CFG (effective scale 101 = the original's 100) → ``λ·(1 − ᾱ_t)·(ε̂ − ε)`` →
reparameterised loss (sds.py). The loss is summed over frames and divided by B.

View-dependent text (exact embedding interpolation of the original): with Δφ the azimuth to the reference view
(first frame of each clip), ``|Δφ| < 90``: ``r = 1 − |Δφ|/90``, ``emb = r·front + (1 − r)·side``; otherwise
``r = 1 − (|Δφ| − 90)/90``, ``emb = r·side + (1 − r)·back``. Prompts are ``"<prompt><suffix>, front view"``
etc.; the negative embedding is shared.
"""

from __future__ import annotations

import torch
from torch import Tensor

from animate124.config.guidance import StableDiffusionGuidanceConfig
from animate124.guidance.base import GuidanceTerm, TermInputs, check_images, resize_frames, resolve_device, vae_encode
from animate124.guidance.models import encode_prompts, load_sd_components
from animate124.guidance.sds import TimestepSampler, guided_sds
from animate124.types import GuidanceContext, GuidanceOutput

VIEWS = ("front", "side", "back")


def view_weights(delta_azimuth: Tensor) -> Tensor:
    """Interpolation weights of the (front, side, back) embeddings.

    Args:
        delta_azimuth: [N] azimuth to the reference view in degrees (any range; wrapped to [−180, 180)).

    Returns:
        [N, 3] non-negative weights summing to 1.
    """
    d = (torch.remainder(delta_azimuth.float() + 180.0, 360.0) - 180.0).abs()
    front_r = (1.0 - d / 90.0).clamp(0.0, 1.0)
    back_r = ((d - 90.0) / 90.0).clamp(0.0, 1.0)
    side_r = 1.0 - front_r - back_r
    return torch.stack([front_r, side_r, back_r], dim=-1)


def view_prompts(prompt: str) -> list[str]:
    """``["<prompt>, front view", "<prompt>, side view", "<prompt>, back view"]``."""
    return [f"{prompt}, {v} view" for v in VIEWS]


class StableDiffusionGuidance(GuidanceTerm):
    """SD SDS term.

    Args:
        cfg: the term's config (model id, CFG, t range, resolution, view text, suffix, λ).
        inputs: the phase's inputs: ``prompt`` (the static prompt; the suffix is appended here), ``models_cfg``,
            ``device`` (``cfg.device`` overrides it).
    """

    name = "sd"

    def __init__(self, cfg: StableDiffusionGuidanceConfig, inputs: TermInputs) -> None:
        super().__init__()
        prompt = inputs.prompt
        self.cfg = cfg
        dev = resolve_device(cfg.device, inputs.device)
        parts = load_sd_components(cfg.model, inputs.models_cfg, dev)
        self.vae, self.unet = parts.vae, parts.unet
        self.alphas_cumprod: Tensor
        self.register_buffer("alphas_cumprod", parts.alphas_cumprod.to(dev), persistent=False)
        self.sampler = TimestepSampler.from_config(cfg, parts.alphas_cumprod.shape[0])
        self.prompt = prompt + cfg.prompt_suffix
        texts = [cfg.negative_prompt] + (view_prompts(self.prompt) if cfg.view_dependent else [self.prompt])
        emb = encode_prompts(parts.tokenizer, parts.text_encoder, texts)
        self.uncond_emb: Tensor
        self.register_buffer("uncond_emb", emb[:1], persistent=False)
        self.cond_embs: Tensor
        self.register_buffer("cond_embs", emb[1:], persistent=False)  # [3 or 1, 77, D]
        del parts  # the text encoder is not needed any more
        self.to(dev)
        self.freeze()

    def text_embeddings(self, delta_azimuth: Tensor) -> Tensor:
        """[N, 77, D] conditional embeddings for N views (view-interpolated when enabled)."""
        if self.cond_embs.shape[0] == 1:
            return self.cond_embs.expand(delta_azimuth.shape[0], -1, -1)
        w = view_weights(delta_azimuth.to(self.cond_embs.device)).to(self.cond_embs.dtype)
        return torch.einsum("nk,kld->nld", w, self.cond_embs)

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:
        """SDS loss of every frame of ``images`` [B, F, 3, H, W] in [0, 1] (λ applied)."""
        check_images(images)
        b, f = images.shape[:2]
        dev = self.device
        frames = resize_frames(images.reshape(b * f, *images.shape[2:]).to(dev), self.cfg.resolution)
        latents = vae_encode(self.vae, frames, sample=True, scale=True)
        # view text follows the first frame of each clip (spec §6.3), only for fixed cameras in video phases
        daz = ctx.delta_azimuth[:, :1].expand(b, f).reshape(-1)
        cond = self.text_embeddings(daz)
        uncond = self.uncond_emb.expand_as(cond)
        unet_dtype = next(self.unet.parameters()).dtype

        def predict_eps(z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            x = torch.cat([z_t, z_t]).to(unet_dtype)
            eps = self.unet(x, torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
            eps_u, eps_c = eps.chunk(2)
            return eps_u, eps_c

        t = self.sampler.sample(ctx.step, b * f, device=dev)
        res = guided_sds(latents, self.alphas_cumprod, t, predict_eps, self.cfg.cfg_scale, self.cfg.weighting,
                         scale=self.cfg.weight, batch_size=b)
        return GuidanceOutput(loss=res.loss.to(images.device), stats=res.stats(self.name))
