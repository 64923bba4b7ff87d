"""Typed config of ``python -m animate124.rerender`` (configs/rerender.yaml): the export's options plus the generative
re-rendering stage (keyframes by SD-1.5 + ControlNet-depth img2img, in-betweens by SVD; docs/rerender.md).

``RerenderConfig`` subclasses :class:`ExportConfig`, so the camera path, time schedule, instances and render options
are the export's, unchanged, and ``export.build_paths`` / ``export.make_renderer`` take it as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from enum import Enum
from typing import Optional

from animate124.config.export import ExportConfig
from animate124.config.schema import ModelsConfig


class AnchorMode(str, Enum):
    anchor = "anchor"
    """Each keyframe's self-attention also attends to the first keyframe's keys/values."""
    all = "all"
    """Each keyframe attends to the keys/values of every keyframe."""
    none = "none"
    """Plain per-frame self-attention (the diffusers default processor)."""


@dataclass
class KeyframeConfig:
    """Keyframes: every ``every``-th frame plus the first and last, through SD-1.5 img2img + ControlNet-depth."""

    every: int = 8
    """k: every k-th frame is a keyframe (the first and the last always are)."""
    strength: float = 0.6
    """img2img strength s ∈ (0, 1]: the pass starts at t = s·(T − 1) (1 = from pure noise)."""
    steps: int = 30
    """DDIM steps over the full schedule (the pass runs round(steps·s) of them)."""
    cfg_scale: float = 7.5
    """Classifier-free guidance scale."""
    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    """SD-1.5 (tokenizer, text_encoder, vae, unet) by hub id or local dir."""
    depth_model: str = "lllyasviel/control_v11f1p_sd15_depth"
    """Depth ControlNet (flat hub layout: config.json + diffusion_pytorch_model.*)."""
    depth_scale: float = 1.0
    """Conditioning scale of the depth ControlNet."""
    tile_model: str = "lllyasviel/control_v11f1e_sd15_tile"
    """Tile ControlNet on the coarse RGB (used when ``tile_scale`` > 0)."""
    tile_scale: float = 0.0
    """Conditioning scale of the tile ControlNet (0 = not loaded)."""
    prompt: Optional[str] = None
    """Prompt (default: the run's prompt with its subject replaced by the run's learned token)."""
    prompt_suffix: str = ", best quality, high resolution"
    negative_prompt: str = ""
    learned_embeds: Optional[str] = None
    """Token file (default: <run_dir>/textual_inversion/learned_embeds.safetensors, then the run's case file)."""
    attention: AnchorMode = AnchorMode.anchor
    """Extended self-attention: anchor | all | none."""
    known_region: bool = True
    """Keep the first keyframe close to the input image where render alpha and reference alpha agree
    (only when the first camera is the input camera)."""
    known_region_until: float = 0.3
    """Replace the known region during the first (1 − this) of the pass (RePaint-style), then let it blend."""


@dataclass
class InbetweenConfig:
    """In-betweens: SVD between consecutive keyframes, bidirectional (time-reversal fusion) and guided by the render."""

    model: str = "stabilityai/stable-video-diffusion-img2vid"
    """SVD (unet, vae, image_encoder, scheduler) by hub id or local dir."""
    strength: float = 0.7
    """SDEdit strength: start at t = s·(T − 1) from the noised coarse latents (1 = pure noise, unguided by the render)."""
    steps: int = 25
    """DDIM steps over the full schedule (round(steps·s) are run)."""
    bidirectional: bool = True
    """Fuse the forward pass (conditioned on keyframe i) with the time-reversed pass (keyframe i+1) at every step."""
    blend: float = 0.3
    """Weight of the coarse latents blended into x̂₀ in the low-noise steps (0 = off)."""
    blend_below: float = 0.3
    """Blend in the steps with t < blend_below·(T − 1)."""
    cfg_scale: float = 2.0
    """CFG scale of SVD's image conditioning."""
    fps: int = 7
    """SVD conditioning fps."""
    motion_bucket_id: int = 127
    """SVD conditioning motion amount."""
    noise_aug_strength: float = 0.02
    """Pixel noise on SVD's conditioning image."""


@dataclass
class RerenderConfig(ExportConfig):
    """Root config of ``python -m animate124.rerender`` (configs/rerender.yaml).

    ``out`` is the output folder (default ``<run_dir>/rerender``); ``frames`` / ``size`` / ``path`` / ``time.*`` /
    ``camera.*`` / ``instances`` are the export's. The render size must be a multiple of 8 (the VAEs' factor).
    """

    frames: int = 48
    """Frames of the video."""
    models: ModelsConfig = _field(default_factory=ModelsConfig)
    """pretrained | tiny | random — the ``models`` group."""
    keyframes: KeyframeConfig = _field(default_factory=KeyframeConfig)
    inbetween: InbetweenConfig = _field(default_factory=InbetweenConfig)
    seed: int = 0
    """Seed of all sampling noise."""
    contact_sheet: bool = False
    """(export option, unused by rerender)"""
