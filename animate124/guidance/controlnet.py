"""ControlNet-1.1-Tile SDS with the textual-inversion token (spec §7.6; the refine phase's semantic term).

Per call: the chosen frames of the clip (default {0, 8} of 16, with grad) are bilinearly upsampled to ``size``
(1024), VAE-encoded, noised at one t ∈ [200, 800] per clip; the UNet (prompt with the TI token) gets the ControlNet
residuals computed from the *control images* — the same frames rendered by a frozen copy of the dynamic-phase model
(``ctx.control_images``, produced by the refine phase) — with the ControlNet branch's own text ("best quality, high
resolution"), conditioning scale 1. Standard CFG (7.5), weighting from the config (default sqrt((1−ᾱ)/ᾱ): the
original's x0-target loss), and, unlike the original, λ = ``weight`` is applied (spec §14.12).

Example:
    >>> inputs = TermInputs(device="cuda", models_cfg=cfg.models, prompt="a _panda_ is dancing", learned_embeds=embeds)
    >>> term = ControlNetTileGuidance(cfg.guidance.controlnet, inputs)
    >>> idx = term.frame_indices(16)                       # [0, 8]
    >>> out = term(video, GuidanceContext(..., control_images=frozen_render[:, idx]))
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from animate124.config.guidance import ControlNetGuidanceConfig
from animate124.config.schema import ModelsConfig
from animate124.errors import ConfigError
from animate124.guidance.base import GuidanceTerm, TermInputs, check_images, resize_frames, resolve_device, vae_encode
from animate124.guidance.models import (
    encode_prompts,
    load,
    load_sd_components,
    random_unet,
    resolve_dtype,
    tiny_unet,
)
from animate124.guidance.sds import TimestepSampler, guided_sds
from animate124.guidance.textual_inversion import load_token
from animate124.types import GuidanceContext, GuidanceOutput

log = logging.getLogger(__name__)


def tiny_controlnet() -> nn.Module:
    """ControlNetModel mirroring :func:`tiny_unet`; its conditioning embedding downsamples ×8 like the tiny f8 VAE."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(tiny_unet(), conditioning_embedding_out_channels=(8, 8, 16, 16))
    # The real ControlNet starts from zero convolutions; a tiny random one gets small random ones instead so that
    # tests can see the control image reach the UNet.
    gen = torch.Generator().manual_seed(0)
    for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
    return net


def random_controlnet() -> nn.Module:
    """ControlNet v1.1 for SD-1.5 (full-size architecture, random weights; cond embedding 16-32-96-256, ×8)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(random_unet(), load_weights_from_unet=False)


def even_frames(num_clip_frames: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices k·F/n (F=16, n=2 → [0, 8]; the original's ``cn_frame_method='even'``)."""
    n = max(1, min(n, num_clip_frames))
    return sorted({(k * num_clip_frames) // n for k in range(n)})


class ControlNetTileGuidance(GuidanceTerm):
    """ControlNet-Tile SDS term; all models frozen.

    Args:
        cfg: term config (``cfg.device`` overrides ``inputs.device``).
        inputs: the phase's inputs: ``prompt`` (the UNet prompt containing the token, without suffix, e.g.
            "a _panda_dance_ is dancing"), ``learned_embeds`` (token file {token: tensor}; None = no token: the
            prompt is used as is and a warning is logged), ``models_cfg``, ``device``.

    Loads SD-1.5 + the tile ControlNet through ``guidance.models.load``, adds the TI token and encodes the prompts;
    :meth:`from_parts` builds the term around given components.
    """

    name = "controlnet"

    def __init__(self, cfg: ControlNetGuidanceConfig, inputs: TermInputs) -> None:
        from diffusers import ControlNetModel

        super().__init__()
        models_cfg, prompt, learned_embeds = inputs.models_cfg, inputs.prompt, inputs.learned_embeds
        device = resolve_device(cfg.device, inputs.device)
        dtype = resolve_dtype((models_cfg or ModelsConfig()).dtype, device)
        sd = load_sd_components(cfg.base_model, models_cfg, device, dtype)
        controlnet = load(ControlNetModel, cfg.model, None, dtype, models_cfg, tiny_controlnet, random_controlnet,
                          device)
        if learned_embeds is not None:
            token = load_token(sd.tokenizer, sd.text_encoder, learned_embeds)
            if token not in prompt:
                log.warning("ControlNet prompt %r does not contain the learned token %r", prompt, token)
        else:
            log.warning("ControlNet guidance without a learned token: the prompt %r is used as is", prompt)
        unet_emb = encode_prompts(sd.tokenizer, sd.text_encoder, [cfg.negative_prompt, prompt + cfg.prompt_suffix])
        cn_emb = encode_prompts(sd.tokenizer, sd.text_encoder, [cfg.negative_prompt, cfg.control_prompt])
        self._setup(cfg, sd.vae, sd.unet, controlnet, sd.scheduler.alphas_cumprod, unet_emb, cn_emb)

    @classmethod
    def from_parts(cls, cfg: ControlNetGuidanceConfig, vae: nn.Module, unet: nn.Module, controlnet: nn.Module,
                   alphas_cumprod: Tensor, unet_embeddings: Tensor, control_embeddings: Tensor) -> "ControlNetTileGuidance":
        """The term around given components.

        Args:
            cfg: the term's config (frames, size, CFG, t range, weighting, weight, conditioning scale).
            vae, unet, controlnet: SD-1.5 VAE/UNet and the tile ControlNet (same device and dtype).
            alphas_cumprod: [T] ᾱ of SD's scheduler.
            unet_embeddings: [2, 77, D] (negative, prompt-with-token) text embeddings for the UNet.
            control_embeddings: [2, 77, D] (negative, control prompt) embeddings for the ControlNet branch.
        """
        term = cls.__new__(cls)
        GuidanceTerm.__init__(term)
        term._setup(cfg, vae, unet, controlnet, alphas_cumprod, unet_embeddings, control_embeddings)
        return term

    def _setup(self, cfg: ControlNetGuidanceConfig, vae: nn.Module, unet: nn.Module, controlnet: nn.Module,
               alphas_cumprod: Tensor, unet_embeddings: Tensor, control_embeddings: Tensor) -> None:
        self.cfg = cfg
        self.vae, self.unet, self.controlnet = vae, unet, controlnet
        device = next(unet.parameters()).device  # the scheduler's ᾱ is a CPU tensor: bring it to the models
        self.alphas_cumprod: Tensor
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone().to(device), persistent=False)
        self.unet_embeddings: Tensor
        self.register_buffer("unet_embeddings", unet_embeddings.detach().clone(), persistent=False)
        self.control_embeddings: Tensor
        self.register_buffer("control_embeddings", control_embeddings.detach().clone(), persistent=False)
        self.sampler = TimestepSampler.from_config(cfg, len(alphas_cumprod))
        self.freeze()
        self._dummy = self._dummy.to(device)

    def frame_indices(self, num_clip_frames: int) -> list[int]:
        """Which frames of an F-frame clip get the term (validated against F)."""
        if self.cfg.frames is None:
            return even_frames(num_clip_frames, self.cfg.num_frames)
        frames = [int(f) for f in self.cfg.frames]
        if not frames or min(frames) < 0 or max(frames) >= num_clip_frames:
            raise ConfigError(
                f"guidance.controlnet.frames={frames} is out of range for {num_clip_frames}-frame clips; "
                f"use indices in [0, {num_clip_frames - 1}] or frames=null"
            )
        return frames

    def _predict(self, control: Tensor, n: int):
        """ε-predictor for :func:`guided_sds`: (ε_u, ε_c) from one batched CFG pass with ControlNet residuals."""
        dtype = next(self.unet.parameters()).dtype
        cond = torch.cat([control, control]).to(dtype)
        text = self.unet_embeddings.to(dtype).repeat_interleave(n, dim=0)  # [2n, 77, D]: n uncond, n cond
        ctext = self.control_embeddings.to(dtype).repeat_interleave(n, dim=0)

        def predict(z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            z2, t2 = torch.cat([z_t, z_t]).to(dtype), torch.cat([t, t])
            down, mid = self.controlnet(z2, t2, encoder_hidden_states=ctext, controlnet_cond=cond,
                                        conditioning_scale=self.cfg.conditioning_scale, return_dict=False)
            eps = self.unet(z2, t2, encoder_hidden_states=text, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid).sample
            eps_u, eps_c = eps.chunk(2)
            return eps_u, eps_c

        return predict

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:
        """SDS loss of the chosen frames.

        Args:
            images: [B, F, 3, H, W] renders in [0, 1] with grad.
            ctx: ``ctx.control_images`` = frozen-model renders, [B, F, 3, H, W] or already the chosen frames
                [B, n, 3, H, W]; ``ctx.step`` drives the timestep schedule.

        Returns:
            λ-weighted loss (sum over latents / number of frames, as the original) and stats.
        """
        check_images(images)
        if ctx.control_images is None:
            raise ValueError("ControlNet guidance needs ctx.control_images (renders of the frozen model)")
        b, f = images.shape[:2]
        idx = self.frame_indices(f)
        control = ctx.control_images
        if control.shape[1] == f and len(idx) != f:
            control = control[:, idx]
        if control.shape[:2] != (b, len(idx)):
            raise ValueError(f"control images {tuple(control.shape)} do not match frames {idx} of {tuple(images.shape)}")
        out_device = images.device
        x = images[:, idx].flatten(0, 1).to(self.device)
        c = control.flatten(0, 1).detach().to(self.device)
        x = resize_frames(x, self.cfg.size)
        c = resize_frames(c, self.cfg.size).clamp(0.0, 1.0)
        latents = vae_encode(self.vae, x)
        n = len(idx)
        t = self.sampler.sample(ctx.step, b, device=self.device).repeat_interleave(n)  # one t per clip
        res = guided_sds(latents, self.alphas_cumprod, t, self._predict(c, b * n), self.cfg.cfg_scale,
                         self.cfg.weighting, scale=self.cfg.weight, batch_size=b * n)
        return GuidanceOutput(loss=res.loss.to(out_device), stats=res.stats(self.name))


__all__ = ["ControlNetTileGuidance", "even_frames", "random_controlnet", "tiny_controlnet"]
