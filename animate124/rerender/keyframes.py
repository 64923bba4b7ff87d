"""Keyframes: SD-1.5 img2img at strength s with ControlNet-depth (+ optional Tile), the run's TI token, extended
self-attention across keyframes, and known-region replacement of the first keyframe at the input camera."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from animate124.config.rerender import AnchorMode, KeyframeConfig
from animate124.config.schema import ModelsConfig
from animate124.guidance.base import vae_encode
from animate124.guidance.models import SDComponents, encode_prompts, load_sd_components, resolve_dtype
from animate124.guidance.textual_inversion import load_token
from animate124.render.cameras import Cameras, reference_camera
from animate124.rerender.attention import set_extended_attention
from animate124.rerender.models import load_depth_controlnet, load_tile_controlnet
from animate124.rerender.sampling import EpsFn, KnownRegion, img2img

log = logging.getLogger(__name__)


def keyframe_indices(n: int, every: int) -> list[int]:
    """Every ``every``-th frame of ``n`` plus the first and the last (sorted, unique)."""
    if n < 1 or every < 1:
        raise ValueError(f"need n >= 1 frames and every >= 1 (got {n}, {every})")
    return sorted(set(range(0, n, every)) | {n - 1})


@dataclass
class KeyframeModels:
    """SD-1.5 + the ControlNets of the keyframe pass."""

    sd: SDComponents
    depth: nn.Module
    tile: Optional[nn.Module]
    token: Optional[str]


def load_keyframe_models(cfg: KeyframeConfig, models_cfg: ModelsConfig, device: torch.device,
                         learned_embeds: Optional[Path]) -> KeyframeModels:
    """Load SD-1.5, the depth ControlNet, the tile one when ``tile_scale`` > 0, and add the TI token."""
    dtype = resolve_dtype(models_cfg.dtype, device)
    sd = load_sd_components(cfg.base_model, models_cfg, device, dtype)
    depth = load_depth_controlnet(cfg.depth_model, models_cfg, device, dtype)
    tile = load_tile_controlnet(cfg.tile_model, models_cfg, device, dtype) if cfg.tile_scale > 0 else None
    token = load_token(sd.tokenizer, sd.text_encoder, learned_embeds) if learned_embeds is not None else None
    return KeyframeModels(sd, depth, tile, token)


def controlnet_eps(unet: nn.Module, controls: list[tuple[nn.Module, Tensor, float]], text: Tensor,
                   cfg_scale: float) -> EpsFn:
    """CFG ε-predictor of SD's UNet with the summed residuals of several ControlNets.

    Args:
        unet: SD UNet.
        controls: (ControlNet, control images [K, 3, H, W] in [0, 1], conditioning scale).
        text: [2, 77, D] (negative, prompt) embeddings.
        cfg_scale: guidance scale.
    """
    dtype = next(unet.parameters()).dtype

    def eps(z: Tensor, t: int) -> Tensor:
        k = z.shape[0]
        z2 = torch.cat([z, z]).to(dtype)  # [uncond K; cond K]: two CFG groups for the extended attention
        t2 = torch.full((2 * k,), t, device=z.device, dtype=torch.long)
        emb = text.to(dtype).repeat_interleave(k, dim=0)
        down, mid = None, None
        for net, image, scale in controls:
            d, m = net(z2, t2, encoder_hidden_states=emb, controlnet_cond=torch.cat([image, image]).to(dtype),
                       conditioning_scale=scale, return_dict=False)
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        out = unet(z2, t2, encoder_hidden_states=emb, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid).sample.float()
        e_u, e_c = out.chunk(2)
        return e_u + cfg_scale * (e_c - e_u)

    return eps


def is_input_camera(cams: Cameras, index: int = 0, tol: float = 1e-3) -> bool:
    """True when camera ``index`` is the input view (elevation 0, azimuth 0, radius 1.8, fovy 40°)."""
    ref = reference_camera((cams.height, cams.width), device=cams.device)
    return bool(torch.allclose(cams.c2w[index], ref.c2w[0], atol=tol)
                and torch.allclose(cams.fovy[index], ref.fovy[0], atol=tol))


def known_mask(render_alpha: Tensor, ref_alpha: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """[1, 1, h, w] latent mask of the pixels where render and reference agree on object vs background.

    Args:
        render_alpha: [1, H, W] render opacity.
        ref_alpha: [1, H, W] the input image's alpha.
        latent_hw: latent size; a latent cell is known only when all its pixels agree (min-pooling).
    """
    agree = ((render_alpha > 0.5) == (ref_alpha > 0.5)).float()[None]
    return -F.adaptive_max_pool2d(-agree, latent_hw)


def decode(vae: nn.Module, z: Tensor) -> Tensor:
    """SD VAE latents [K, 4, h, w] → images [K, 3, H, W] in [0, 1]."""
    dtype = next(vae.parameters()).dtype
    x = vae.decode((z / vae.config.scaling_factor).to(dtype)).sample.float()
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def run_keyframes(models: KeyframeModels, cfg: KeyframeConfig, prompt: str, coarse: Tensor, depth: Tensor,
                  generator: torch.Generator, known: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """The keyframe pass.

    Args:
        models: SD + ControlNets.
        cfg: keyframe settings.
        prompt: the prompt (with the token).
        coarse: [K, 3, H, W] coarse renders in [0, 1].
        depth: [K, 3, H, W] normalised inverse depth (near bright).
        generator: CPU RNG of the VAE sample and the sampling noise.
        known: (reference image [3, H, W], agreement mask [1, 1, h, w]) for keyframe 0, or None.

    Returns:
        [K, 3, H, W] keyframes in [0, 1].
    """
    sd = models.sd
    device = next(sd.unet.parameters()).device
    text = encode_prompts(sd.tokenizer, sd.text_encoder, [cfg.negative_prompt, prompt + cfg.prompt_suffix])
    controls = [(models.depth, depth.to(device), cfg.depth_scale)]
    if models.tile is not None:
        controls.append((models.tile, coarse.to(device), cfg.tile_scale))
    z0 = vae_encode(sd.vae, coarse.to(device), sample=True, generator=generator)
    noise = torch.randn(z0.shape, generator=generator).to(z0)
    region = None
    if known is not None:
        ref = vae_encode(sd.vae, known[0][None].to(device), sample=False)
        lat = torch.cat([ref, z0[1:]])
        mask = torch.cat([known[1].to(z0), torch.zeros_like(known[1]).to(z0).expand(len(z0) - 1, -1, -1, -1)])
        region = KnownRegion(lat, mask, [0], until=round(cfg.known_region_until * (len(sd.alphas_cumprod) - 1)))
    mode = AnchorMode(cfg.attention)
    restore = set_extended_attention(sd.unet, len(z0), mode.value) if mode != AnchorMode.none else None
    try:
        with torch.no_grad():
            z = img2img(z0, controlnet_eps(sd.unet, controls, text, cfg.cfg_scale), sd.alphas_cumprod.to(device),
                        cfg.strength, cfg.steps, noise, region)
            return decode(sd.vae, z).cpu()
    finally:
        if restore is not None:
            sd.unet.set_attn_processor(restore)
