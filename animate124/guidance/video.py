"""Text-to-video SDS on a diffusers ``UNet3DConditionModel`` (ModelScope / ZeroScope; spec §7.5).

One step for a clip ``images [B, F, 3, H, W]`` in [0, 1]:

1. frames bilinear-resized to (``height``, ``width``) (256×256 for ModelScope, 320×576 for ZeroScope: explicit config,
   not the original's ``'ms' in model_path`` test, spec §14.11);
2. VAE-encoded per frame, ``vae_chunk`` frames per call (posterior sample × scaling factor). With
   ``vae_grad_frames = k`` only k frames keep encoder gradients, the others are encoded under ``no_grad`` (memory);
3. latents laid out as the UNet expects: ``[B, C, F, h, w]``;
4. ONE timestep per clip, ``t ~ U{t_min·T .. t_max·T}``; ``z_t = √ᾱ z + √(1−ᾱ) ε``;
5. ε̂ by standard CFG with the effective scale (101 = the original's ε_c + 100(ε_c − ε_u), spec §14.3);
6. ``grad = λ·w(t)·(ε̂ − ε)``, loss ``0.5·Σ(z − sg(z − grad))² / B`` (sum over all latent elements, divided by the
   batch of clips B; spec §7.5, §7.7).

Prompts: ``prompt + prompt_suffix`` and ``negative_prompt``. View-dependent text (front/side/back interpolated by
frame 0's Δazimuth, spec §7.3) follows ``view_text``: off by default, the consistent choice (the original used it
only on fixed-camera clips, spec §14.13).

Models come from ``guidance.models.load`` (hub id or local directory, same subfolders as the ModelScope repo:
unet/, vae/, text_encoder/, tokenizer/, scheduler/). ``models=tiny`` builds a tiny UNet3D (8×8 latents with the f8
VAE) and ``models=random`` the full-size ModelScope-1.7B UNet3D config (:func:`modelscope_unet3d`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from animate124.config.guidance import VideoGuidanceConfig, ViewText
from animate124.errors import InputError
from animate124.guidance.base import GuidanceTerm, TermInputs, check_images, resize_frames, resolve_device, vae_encode
from animate124.guidance.sds import TimestepSampler, guided_sds
from animate124.guidance.stable_diffusion import view_prompts, view_weights
from animate124.types import GuidanceContext, GuidanceOutput

log = logging.getLogger(__name__)

@dataclass
class PromptEmbeddings:
    """Text embeddings of one prompt (all [1, L, D])."""

    cond: Tensor
    """The prompt (with suffix)."""
    uncond: Tensor
    """The negative prompt."""
    views: Optional[Tensor] = None
    """[3, L, D] front / side / back prompts (only when view-dependent text is used)."""


def interpolate_view_embeddings(views: Tensor, delta_azimuth: Tensor) -> Tensor:
    """Front/side/back embeddings blended by |Δφ| with ``stable_diffusion.view_weights`` (spec §7.3).

    Args:
        views: [3, L, D] front, side, back embeddings.
        delta_azimuth: [B] azimuth difference to the reference view in degrees (any wrapping).

    Returns:
        [B, L, D] embeddings.
    """
    w = view_weights(delta_azimuth.to(views.device)).to(views.dtype)
    return torch.einsum("bv,vld->bld", w, views)


def grad_frame_mask(num_frames: int, k: Optional[int], random: bool, generator: Optional[torch.Generator]) -> Tensor:
    """[F] bool: which frames keep VAE-encoder gradients (all when k is None or ≥ F).

    Evenly spaced picks include the first and last frame (``round(linspace(0, F−1, k))``); random picks are k
    distinct frames drawn with ``generator``.
    """
    if not random or k is None or k <= 0 or k >= num_frames:
        return torch.tensor(grad_frame_list(num_frames, k), dtype=torch.bool)
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[torch.randperm(num_frames, generator=generator)[:k]] = True
    return mask


def grad_frame_list(num_frames: int, k: Optional[int]) -> list[bool]:
    """The evenly spaced picks of :func:`grad_frame_mask` as host booleans (no tensor, so no device read)."""
    if k is None or k >= num_frames:
        return [True] * num_frames
    picks = {round(i * (num_frames - 1) / max(k - 1, 1)) for i in range(k)} if k > 0 else set()
    return [i in picks for i in range(num_frames)]


def encode_frames(
    vae: nn.Module,
    frames: Tensor,
    grad_mask: Union[Tensor, Sequence[bool]],
    chunk: int,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """VAE-encode ``[N, 3, H, W]`` frames in [0, 1] in chunks; frames with ``grad_mask`` False under no_grad.

    Returns:
        [N, C, H/f, W/f] fp32 latents (posterior sample × scaling factor).
    """
    out: list[Optional[Tensor]] = [None] * frames.shape[0]
    chunk = max(1, int(chunk))
    mask = [bool(v) for v in (grad_mask.tolist() if isinstance(grad_mask, Tensor) else grad_mask)]  # host values
    for keep_grad in (True, False):
        idx = [i for i, v in enumerate(mask) if v == keep_grad]
        for i in range(0, len(idx), chunk):
            sel = idx[i : i + chunk]
            with torch.set_grad_enabled(keep_grad and torch.is_grad_enabled()):
                z = vae_encode(vae, frames[sel], sample=True, scale=True, generator=generator)
            for j, n in enumerate(sel):
                out[n] = z[j]
    return torch.stack(out, dim=0)  # type: ignore[arg-type]


class VideoSDS(GuidanceTerm):
    """Text-to-video SDS (module docstring).

    Args:
        cfg: the term's settings (``cfg.device`` overrides ``inputs.device``).
        inputs: the phase's inputs: ``prompt`` (the motion prompt, required; ``cfg.prompt_suffix`` is appended),
            ``models_cfg`` (pretrained | tiny | random, guidance/models.py), ``device``, ``generator`` (RNG of the term:
            timesteps, noise, VAE sample, on the term's device; None = the global RNG).

    Loads the model named by ``cfg.model`` (ModelScope layout) and encodes the prompts; :meth:`from_parts` builds the
    term around given components instead (test doubles, the analytic denoiser).

    Raises:
        InputError: no motion prompt.
        MissingWeightsError: the model is not available locally (offline) or the folder is broken.
    """

    name = "video"

    def __init__(self, cfg: VideoGuidanceConfig, inputs: TermInputs) -> None:
        super().__init__()
        if not inputs.prompt:
            raise InputError("the text-to-video prior needs a motion prompt: pass prompt='a panda is dancing' "
                             "(or case=<name>), or use guidance.video.kind=image")
        from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from animate124.guidance import models as M

        dev = resolve_device(cfg.device, inputs.device)
        models_cfg, prompt = inputs.models_cfg, inputs.prompt

        def one(cls: type, sub: str, tiny: Callable[[], Any], rand: Optional[Callable[[], Any]] = None) -> Any:
            return M.load(cls, cfg.model, sub, "auto", models_cfg, tiny, rand, dev)

        tokenizer = one(CLIPTokenizer, "tokenizer", M.tiny_tokenizer)
        text_encoder = one(CLIPTextModel, "text_encoder", M.tiny_text_encoder, random_video_text_encoder)
        vae = one(AutoencoderKL, "vae", M.tiny_vae, M.random_vae)
        unet = one(UNet3DConditionModel, "unet", lambda: tiny_unet3d(M.TINY_DIM), modelscope_unet3d)
        scheduler = one(DDIMScheduler, "scheduler", M.sd_scheduler)
        text = prompt + cfg.prompt_suffix
        prompts = [text, cfg.negative_prompt]
        if cfg.view_text != ViewText.off:
            prompts += view_prompts(prompt + cfg.prompt_suffix)
        emb = M.encode_prompts(tokenizer, text_encoder, prompts)
        embeddings = PromptEmbeddings(cond=emb[0:1], uncond=emb[1:2], views=emb[2:5] if emb.shape[0] > 2 else None)
        del text_encoder  # prompts are fixed for the phase: free the text tower
        self._setup(cfg, unet, vae, scheduler.alphas_cumprod, embeddings, inputs.generator)
        self.to(dev)

    @classmethod
    def from_parts(
        cls,
        cfg: VideoGuidanceConfig,
        unet: nn.Module,
        vae: Optional[nn.Module],
        alphas_cumprod: Tensor,
        embeddings: PromptEmbeddings,
        generator: Optional[torch.Generator] = None,
    ) -> "VideoSDS":
        """The term around given components (nothing loaded, nothing moved).

        Args:
            cfg: the term's settings.
            unet: a ``UNet3DConditionModel`` (or anything with its call signature returning ``.sample``).
            vae: a diffusers ``AutoencoderKL``, or None for a pixel-space prior (latents = 2·frames − 1,
                [B, 3, F, H, W]; used with the analytic denoiser in tests).
            alphas_cumprod: [T] ᾱ of the model's training scheduler.
            embeddings: prompt embeddings.
            generator: RNG for timesteps, noise and the VAE posterior (None = global RNG).
        """
        term = cls.__new__(cls)
        GuidanceTerm.__init__(term)
        term._setup(cfg, unet, vae, alphas_cumprod, embeddings, generator)
        return term

    def _setup(self, cfg: VideoGuidanceConfig, unet: nn.Module, vae: Optional[nn.Module], alphas_cumprod: Tensor,
               embeddings: PromptEmbeddings, generator: Optional[torch.Generator]) -> None:
        if cfg.view_text != ViewText.off and embeddings.views is None:
            raise ValueError("view_text needs view embeddings (PromptEmbeddings.views)")
        self.cfg = cfg
        self.unet = unet
        self.vae = vae
        self.alphas_cumprod: Tensor
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.emb_cond: Tensor
        self.register_buffer("emb_cond", embeddings.cond, persistent=False)
        self.emb_uncond: Tensor
        self.register_buffer("emb_uncond", embeddings.uncond, persistent=False)
        self.emb_views: Tensor
        self.register_buffer("emb_views", embeddings.views, persistent=False)
        self.timesteps = TimestepSampler.from_config(cfg, alphas_cumprod.shape[0])
        self.generator = generator
        self.freeze()

    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def text_embeddings(self, ctx: GuidanceContext, batch: int) -> tuple[Tensor, Tensor]:
        """(uncond [B, L, D], cond [B, L, D]) for this clip, honouring ``view_text``."""
        use_views = self.cfg.view_text == ViewText.always or (
            self.cfg.view_text == ViewText.fixed_camera and ctx.fixed_camera
        )
        if use_views:
            cond = interpolate_view_embeddings(self.emb_views, ctx.delta_azimuth[:, 0])
        else:
            cond = self.emb_cond.expand(batch, -1, -1)
        return self.emb_uncond.expand(batch, -1, -1), cond

    def encode(self, images: Tensor) -> Tensor:
        """``[B, F, 3, H, W]`` in [0, 1] → latents ``[B, C, F, h, w]`` (fp32; gradients per ``vae_grad_frames``)."""
        b, f = images.shape[:2]
        frames = resize_frames(images.reshape(b * f, *images.shape[2:]), (self.cfg.height, self.cfg.width))
        if self.vae is None:
            z = frames * 2.0 - 1.0
            return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4).float()
        if self.cfg.vae_grad_random:  # a CPU draw read on the host (no device sync)
            mask = grad_frame_mask(f, self.cfg.vae_grad_frames, True, _cpu(self.generator)).tolist()
        else:
            mask = grad_frame_list(f, self.cfg.vae_grad_frames)
        z = encode_frames(self.vae, frames, mask * b, self.cfg.vae_chunk, self.generator)
        return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)

    def eps_predictor(self, uncond: Tensor, cond: Tensor) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """``(z_t [B, C, F, h, w], t [B]) → (ε_uncond, ε_cond)`` with one batched UNet call."""
        dtype = self.model_dtype
        emb = torch.cat([uncond, cond], dim=0).to(dtype)

        def predict(z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            eps = self.unet(torch.cat([z_t, z_t], dim=0).to(dtype), torch.cat([t, t]), encoder_hidden_states=emb)
            eps = eps.sample if hasattr(eps, "sample") else eps
            eps_u, eps_c = eps.float().chunk(2, dim=0)
            return eps_u, eps_c

        return predict

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:
        """Video SDS loss of ``images [B, F, 3, H, W]`` (float in [0, 1], with grad)."""
        check_images(images)
        out_device = images.device
        images = images.to(self.device)
        b = images.shape[0]
        latents = self.encode(images)
        uncond, cond = self.text_embeddings(ctx, b)
        t = self.timesteps.sample(ctx.step, b, self.generator, self.device)
        res = guided_sds(
            latents,
            self.alphas_cumprod,
            t,
            self.eps_predictor(uncond, cond),
            cfg_scale=self.cfg.cfg_scale,
            weighting=self.cfg.weighting,
            scale=self.cfg.weight,
            generator=self.generator,
            batch_size=b,
        )
        return GuidanceOutput(loss=res.loss.to(out_device), stats=res.stats(self.name))


def _cpu(generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """``generator`` if it is a CPU generator (randperm of the frame picks runs on CPU), else None."""
    return generator if generator is not None and generator.device.type == "cpu" else None


# --------------------------------------------------------------------------------------------------------------------
# Architectures for models=tiny / models=random
# --------------------------------------------------------------------------------------------------------------------


def tiny_unet3d(cross_attention_dim: int = 32) -> nn.Module:
    """A tiny random ``UNet3DConditionModel`` (≈0.1 M params; 8×8 latents run in ~25 ms on CPU)."""
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
    )


def modelscope_unet3d() -> nn.Module:
    """The ModelScope text-to-video-ms-1.7b UNet3D architecture with random weights (≈1.4 B params)."""
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        norm_num_groups=32,
        cross_attention_dim=1024,
        attention_head_dim=64,
    )


def random_video_text_encoder() -> nn.Module:
    """ModelScope's text tower (OpenCLIP ViT-H/14 text: width 1024, 23 layers, 16 heads) with random weights."""
    from animate124.guidance.models import random_text_encoder

    return random_text_encoder(hidden_size=1024, layers=23, heads=16, inter=4096)
