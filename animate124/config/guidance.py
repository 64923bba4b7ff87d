"""Typed config schemas of the guidance terms (the ``guidance`` node of configs/run.yaml).

Defaults are the real hub ids and the original's *effective* values (spec §7, §14.3: the original's
ε_c + s(ε_c − ε_u) equals standard CFG with scale s + 1). Each term class is owned by its guidance module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional


class Weighting(str, Enum):
    one_minus_alpha = "one_minus_alpha"
    """w(t) = 1 − ᾱ_t (DreamFusion; the original's SD / ModelScope / Zero123 terms)."""
    sqrt_snr_inv = "sqrt_snr_inv"
    """w(t) = sqrt((1 − ᾱ_t)/ᾱ_t) (the original's x0-target ControlNet term)."""
    uniform = "uniform"
    """w(t) = 1."""


@dataclass
class SDSConfig:
    """Shared SDS settings of one guidance term."""

    enabled: bool = True
    weight: float = 1.0
    """λ multiplying the term."""
    cfg_scale: float = 7.5
    """Standard classifier-free guidance scale: ε_u + s(ε_c − ε_u)."""
    t_min: float = 0.02
    """Lower end of the timestep range as a fraction of the training timesteps."""
    t_max: float = 0.98
    """Upper end of the timestep range."""
    weighting: Weighting = Weighting.one_minus_alpha
    """w(t) of the SDS gradient λ·w(t)·(ε̂ − ε)."""
    t_anneal_steps: Optional[int] = None
    """Anneal the upper timestep bound linearly to ``t_max_final`` over this many steps (None = off, the original)."""
    t_max_final: Optional[float] = None
    """Upper timestep bound at the end of the annealing."""
    device: Optional[str] = None
    """Device of this model (None = the run's device); e.g. cuda:1 to spread memory."""


@dataclass
class StableDiffusionGuidanceConfig(SDSConfig):
    """SD-1.5 SDS of the static phase (spec §7.3): effective CFG 101, t ∈ [200, 600], w = 1 − ᾱ, 512²."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    """Hub id or local dir (diffusers layout: tokenizer, text_encoder, vae, unet, scheduler)."""
    cfg_scale: float = 101.0
    t_min: float = 0.2
    t_max: float = 0.6
    resolution: int = 512
    """Renders are bilinearly resized to this size before the VAE."""
    view_dependent: bool = True
    """Interpolate front/side/back prompt embeddings by the azimuth to the reference view."""
    prompt_suffix: str = ", 8k, good quality"
    """Appended to the prompt (before the view text)."""
    negative_prompt: str = ""
    """Unconditional prompt of CFG."""


@dataclass
class Zero123GuidanceConfig(SDSConfig):
    """Zero-1-to-3-XL SDS (spec §7.4): standard CFG 5, t ∈ [200, 600], λ 40 scaled by angle/180, 256²."""

    model: str = "bennyguo/zero123-xl-diffusers"
    """Hub id or local dir (diffusers layout: unet, vae, image_encoder, the pose projection, scheduler; the
    projection's folder is read from the repo's model_index.json)."""
    weight: float = 40.0
    cfg_scale: float = 5.0
    t_min: float = 0.2
    t_max: float = 0.6
    resolution: int = 256
    angle_scaled: bool = True
    """λ_eff = weight · angle(current, reference)/180 (spec §7.4)."""
    projection_subfolder: Optional[str] = None
    """Folder of the pose projection Linear(772 → 768). None (default): the one the repo's ``model_index.json``
    names, ``clip_camera_projection`` (the stable-dreamfusion / threestudio Zero123Pipeline layout of
    ``bennyguo/zero123-xl-diffusers``, weights ``proj.*``) or ``cc_projection`` (kxic's Zero1to3 diffusers layout,
    weights ``projection.*``); set it only for a folder without a model_index.json."""


class ViewText(str, Enum):
    off = "off"
    """The plain prompt on every clip (what the original did on its 90% moving-camera clips)."""
    fixed_camera = "fixed_camera"
    """View-dependent prompts (front/side/back interpolated by Δazimuth of frame 0) on fixed-camera clips only:
    the original's inconsistent behaviour under --no_view_text (spec §14.13)."""
    always = "always"
    """View-dependent prompts on every clip, from frame 0's Δazimuth."""


class VideoPriorKind(str, Enum):
    text = "text"
    """Text-to-video SDS only (ModelScope / ZeroScope UNet3D; the original)."""
    image = "image"
    """Image-conditioned video SDS only (Stable Video Diffusion; guidance/image_video.py)."""
    both = "both"
    """Both terms, each with its own weight."""


@dataclass
class VideoGuidanceConfig(SDSConfig):
    kind: VideoPriorKind = VideoPriorKind.text
    """Which video prior(s) the dynamic/refine phases use; the image prior's settings are in guidance.image_video."""
    model: str = "damo-vilab/text-to-video-ms-1.7b"
    cfg_scale: float = 101.0
    t_min: float = 0.02
    t_max: float = 0.98
    height: int = 256
    """Video-model input height: rendered frames are bilinear-resized to height × width (ModelScope 256×256;
    ZeroScope: ``guidance.video.model=cerspense/zeroscope_v2_576w guidance.video.height=320 guidance.video.width=576``).
    Explicit, unlike the original's ``'ms' in model_path`` test (spec §14.11)."""
    width: int = 256
    """Video-model input width."""
    vae_grad_frames: Optional[int] = None
    """Keep VAE-encoder gradients for only this many frames (None = all): a memory lever."""
    vae_grad_random: bool = False
    """Pick the vae_grad_frames frames at random each step (False = evenly spaced, always incl. the first and last)."""
    vae_chunk: int = 16
    """Frames per VAE-encoder call."""
    view_text: ViewText = ViewText.off
    """View-dependent prompts: off (consistent; default), fixed_camera (the original's quirk, spec §14.13), always."""
    prompt_suffix: str = ", high-resolution, 8k, good quality"
    negative_prompt: str = ""


@dataclass
class ImageVideoGuidanceConfig(SDSConfig):
    """Image-conditioned video SDS through Stable Video Diffusion (guidance/image_video.py).

    Timesteps t are drawn like the other terms and mapped to EDM noise levels σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) of SVD's
    training schedule (t ∈ [20, 980] → σ ∈ [0.14, 13.0]); the default weighting 1 − ᾱ_t = σ²/(1 + σ²) is DreamFusion's.
    """

    model: str = "stabilityai/stable-video-diffusion-img2vid"
    weight: float = 1.0
    cfg_scale: float = 3.0
    """Standard CFG scale on every frame (the pipeline's max_guidance_scale)."""
    cfg_ramp_min: Optional[float] = None
    """If set, use the pipeline's per-frame ramp linspace(cfg_ramp_min, cfg_scale, F) (1.0 leaves frame 0 unguided)."""
    t_min: float = 0.02
    t_max: float = 0.98
    height: int = 256
    width: int = 256
    fps: int = 7
    """Conditioning fps (passed to the UNet as fps − 1)."""
    motion_bucket_id: int = 127
    """Conditioning motion amount (higher = more motion)."""
    noise_aug_strength: float = 0.02
    """Pixel-space noise added to the conditioning image (and passed to the UNet)."""
    vae_grad_frames: Optional[int] = None
    """Keep VAE-encoder gradients for only this many frames (None = all): a memory lever."""


@dataclass
class ControlNetGuidanceConfig(SDSConfig):
    """ControlNet-1.1-Tile + SD-1.5 with the textual-inversion token (spec §7.6; refine phase)."""

    model: str = "lllyasviel/control_v11f1e_sd15_tile"
    """ControlNet weights (hub id or local dir, diffusers layout)."""
    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    """SD-1.5 (tokenizer, text encoder, VAE, UNet, scheduler) the ControlNet plugs into."""
    cfg_scale: float = 7.5
    """Standard CFG scale (the original's ε_c + 7.5(ε_c − ε_u) would be 8.5; the issue asks for standard 7.5)."""
    t_min: float = 0.2
    t_max: float = 0.8
    weighting: Weighting = Weighting.sqrt_snr_inv
    """sqrt((1−ᾱ)/ᾱ) reproduces the original's x0-target loss; unlike the original, ``weight`` is applied (§14.12)."""
    frames: Optional[List[int]] = None
    """Clip frames that get the term (None = ``num_frames`` evenly spaced: {0, 8} of 16)."""
    num_frames: int = 2
    """Number of evenly spaced frames k·F/n when ``frames`` is None."""
    size: int = 1024
    """Frames and control images are bilinearly upsampled to size² before the VAE (a memory lever)."""
    prompt: Optional[str] = None
    """UNet prompt containing the token (default: the run's prompt with its subject replaced by the token)."""
    prompt_suffix: str = ", high-resolution, 8k, good quality"
    control_prompt: str = "best quality, high resolution"
    """Text of the ControlNet branch."""
    negative_prompt: str = ""
    conditioning_scale: float = 1.0
    learned_embeds: Optional[str] = None
    """Token file (default: <run_dir>/textual_inversion/learned_embeds.safetensors, then the case's .bin)."""


@dataclass
class GuidanceConfig:
    """All guidance terms; phases enable the ones they use."""

    sd: StableDiffusionGuidanceConfig = field(default_factory=StableDiffusionGuidanceConfig)
    zero123: Zero123GuidanceConfig = field(default_factory=Zero123GuidanceConfig)
    video: VideoGuidanceConfig = field(default_factory=VideoGuidanceConfig)
    image_video: ImageVideoGuidanceConfig = field(default_factory=ImageVideoGuidanceConfig)
    controlnet: ControlNetGuidanceConfig = field(default_factory=ControlNetGuidanceConfig)
