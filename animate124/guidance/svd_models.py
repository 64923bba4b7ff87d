"""Stable Video Diffusion components through the one loading path (guidance/models.py): real, tiny and full-size random.

Real layout (``stabilityai/stable-video-diffusion-img2vid[-xt]``): ``unet`` (UNetSpatioTemporalConditionModel),
``vae`` (AutoencoderKLTemporalDecoder), ``image_encoder`` (CLIPVisionModelWithProjection, ViT-H/14), ``scheduler``
(EulerDiscreteScheduler, v-prediction, continuous timesteps). Tiny configs follow the shared SVD probe notes
(GroupNorm is hard-coded to 32 groups in the spatio-temporal blocks, so channels are multiples of 32; attention only at
the half-resolution level keeps the tiny UNet fast).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from animate124.config.schema import ModelsConfig
from animate124.guidance import models

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="v_prediction", timestep_type="continuous", timestep_spacing="leading", steps_offset=1,
    use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0, interpolation_type="linear",
)


@dataclass
class SVDParts:
    unet: nn.Module
    vae: nn.Module
    image_encoder: nn.Module
    alphas_cumprod: Tensor
    """[1000] ᾱ of SVD's training schedule (σ_t = √((1 − ᾱ_t)/ᾱ_t))."""


def tiny_unet() -> UNetSpatioTemporalConditionModel:
    return UNetSpatioTemporalConditionModel(
        in_channels=8, out_channels=4,
        down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
        up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32, num_attention_heads=4,
        addition_time_embed_dim=32, projection_class_embeddings_input_dim=96, num_frames=16,
    )


def tiny_vae() -> AutoencoderKLTemporalDecoder:
    return AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=4, scaling_factor=0.18215,
    )


def tiny_image_encoder() -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224, patch_size=32,
        intermediate_size=64,
    ))


def full_unet() -> UNetSpatioTemporalConditionModel:
    """SVD's UNet (diffusers' defaults are the real config: 320/640/1280/1280, cross-attn 1024, 1.5 B params)."""
    return UNetSpatioTemporalConditionModel(num_frames=14)


def full_vae() -> AutoencoderKLTemporalDecoder:
    return AutoencoderKLTemporalDecoder(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, scaling_factor=0.18215,
    )


def full_image_encoder() -> CLIPVisionModelWithProjection:
    """OpenCLIP ViT-H/14 vision tower with a 1024-d projection (SVD's image encoder)."""
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, projection_dim=1024, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, hidden_act="gelu",
    ))


def alphas_cumprod_of(scheduler: EulerDiscreteScheduler) -> Tensor:
    return scheduler.alphas_cumprod.detach().clone().float()


def load_svd(spec: str, models_cfg: ModelsConfig, device: torch.device) -> SVDParts:
    """Load (or build) the SVD parts for ``spec`` (hub id or local dir) per ``models_cfg.kind``."""
    dtype = "auto"
    unet = models.load(UNetSpatioTemporalConditionModel, spec, "unet", dtype, models_cfg,
                       tiny_builder=tiny_unet, random_builder=full_unet, device=device)
    vae = models.load(AutoencoderKLTemporalDecoder, spec, "vae", dtype, models_cfg,
                      tiny_builder=tiny_vae, random_builder=full_vae, device=device)
    enc = models.load(CLIPVisionModelWithProjection, spec, "image_encoder", dtype, models_cfg,
                      tiny_builder=tiny_image_encoder, random_builder=full_image_encoder, device=device)
    sched = models.load(EulerDiscreteScheduler, spec, "scheduler", dtype, models_cfg,
                        tiny_builder=lambda: EulerDiscreteScheduler(**SCHEDULER_CONFIG),
                        random_builder=lambda: EulerDiscreteScheduler(**SCHEDULER_CONFIG), device=device)
    return SVDParts(unet=unet, vae=vae, image_encoder=enc, alphas_cumprod=alphas_cumprod_of(sched))
