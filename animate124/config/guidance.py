"""Typed config schemas of the guidance terms (the ``guidance`` node of configs/run.yaml).

Defaults are the real hub ids and the original's *effective* values (spec §7, §14.3: the original's
ε_c + s(ε_c − ε_u) equals standard CFG with scale s + 1). Each term class is owned by its guidance module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional


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
    device: Optional[str] = None
    """Device of this model (None = the run's device); e.g. cuda:1 to spread memory."""


@dataclass
class StableDiffusionGuidanceConfig(SDSConfig):
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    cfg_scale: float = 101.0
    t_min: float = 0.2
    t_max: float = 0.6
    resolution: int = 512
    view_dependent: bool = True
    prompt_suffix: str = ", 8k, good quality"


@dataclass
class Zero123GuidanceConfig(SDSConfig):
    model: str = "bennyguo/zero123-xl-diffusers"
    weight: float = 40.0
    cfg_scale: float = 5.0
    t_min: float = 0.2
    t_max: float = 0.6
    resolution: int = 256
    angle_scaled: bool = True
    """λ_eff = weight · angle(current, reference)/180 (spec §7.4)."""


@dataclass
class VideoGuidanceConfig(SDSConfig):
    model: str = "damo-vilab/text-to-video-ms-1.7b"
    cfg_scale: float = 101.0
    t_min: float = 0.02
    t_max: float = 0.98
    height: int = 256
    width: int = 256
    vae_grad_frames: Optional[int] = None
    """Keep VAE-encoder gradients for only this many frames (None = all): a memory lever."""
    prompt_suffix: str = ", high-resolution, 8k, good quality"


@dataclass
class GuidanceConfig:
    """All guidance terms; phases enable the ones they use."""

    sd: StableDiffusionGuidanceConfig = field(default_factory=StableDiffusionGuidanceConfig)
    zero123: Zero123GuidanceConfig = field(default_factory=Zero123GuidanceConfig)
    video: VideoGuidanceConfig = field(default_factory=VideoGuidanceConfig)
