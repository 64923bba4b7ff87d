"""Zero-1-to-3-XL SDS (spec §7.4): novel-view prior conditioned on the reference image and the relative pose.

Components (diffusers layout, e.g. ``bennyguo/zero123-xl-diffusers``): ``unet`` (8 input channels: noisy latent
‖ reference latent), ``vae``, ``image_encoder`` (CLIPVisionModelWithProjection), the pose projection Linear
772 → 768 (``clip_camera_projection`` → :class:`CLIPCameraProjection`, or ``cc_projection`` → :class:`CCProjection`,
whichever the repo's ``model_index.json`` names: :func:`projection_layout`), ``scheduler``.

Conditioning, computed once in the constructor from the white-composited reference image (``TermInputs.reference``
at ``cfg.resolution``), after which the CLIP image encoder moves to the CPU (it is not run per step):
- CLIP image embedding: bicubic (antialiased) resize to the encoder's size and CLIP mean/std normalisation done
  here on tensors (CLIPImageProcessor would fall back to PIL without torchvision);
- the reference VAE latent at ``cfg.resolution`` (posterior *mode*, NOT multiplied by the scaling factor — the
  original drew a posterior sample; the VAE's posterior std is tiny, the mode keeps the condition deterministic).

Pose token: Zero-1-to-3's own training code is the ground truth. ``get_T(target_RT, cond_RT)``
(``zero123/ldm/data/simple.py``) takes both camera centres ``c = −Rᵀt`` in Objaverse's Blender world (right-handed,
z up), converts them to spherical coordinates with polar θ = arccos(z/r) (``atan2(√(x²+y²), z)``) and azimuth
φ = atan2(y, x), and feeds ``[θ_t − θ_c, sin(Δφ), cos(Δφ), r_t − r_c]`` with Δφ = (φ_t − φ_c) mod 2π.
Our world is right-handed and z up as well, and places a camera at r·(cos e cos a, cos e sin a, sin e), so
θ = 90° − e and φ = a exactly, which gives::

    T = [−Δe (rad), sin(Δa), cos(Δa), Δr]      (Δ = current − reference, Δa wrapped to [−180°, 180°))

(``tests/test_gpu_path.py::test_pose_token_equals_zero123_get_T`` recomputes get_T from our cameras' centres.)
The original Animate124 fed sin(−Δa): its cameras (``dnerf/provider.py``, ``right = forward × up`` with
``forward = centers − targets``) are mirrored, so it needed the minus; with right-handed cameras, as here and in
threestudio (which also uses sin(+Δa)), the minus would mirror every novel view.

``c_crossattn = cc_projection([clip_emb ‖ T])``. Unconditional branch: zero cross-attention embedding and zero
concat latent; standard CFG ``ε_u + 5(ε_c − ε_u)``.

Angle-scaled weight (``cfg.angle_scaled``): ``λ_eff = λ·angle(cam, ref)/180`` with the angle in degrees between
the camera position vectors (0 at the reference view, λ/2 at 90°, λ at the back).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from animate124.config.guidance import Zero123GuidanceConfig
from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.errors import ConfigError
from animate124.guidance import models as M
from animate124.guidance.base import GuidanceTerm, TermInputs, check_images, clip_normalize, resize_frames, resolve_device, vae_encode
from animate124.guidance.sds import TimestepSampler, guided_sds
from animate124.types import GuidanceContext, GuidanceOutput

"""OpenAI CLIP pixel normalisation (the image processor's defaults)."""


class CCProjection(ModelMixin, ConfigMixin):
    """Zero-1-to-3's camera-conditioning projection ``Linear(in_channel → out_channel)`` (772 → 768).

    A diffusers model so that it loads and saves through the same ``from_pretrained``/``save_pretrained``
    (weights file ``diffusion_pytorch_model.safetensors``, key ``projection.{weight,bias}``).
    """

    @register_to_config
    def __init__(self, in_channel: int = 772, out_channel: int = 768) -> None:
        super().__init__()
        self.projection = nn.Linear(in_channel, out_channel)

    def forward(self, x: Tensor) -> Tensor:
        return self.projection(x)


class CLIPCameraProjection(ModelMixin, ConfigMixin):
    """The same projection in the stable-dreamfusion / threestudio ``Zero123Pipeline`` layout
    (folder ``clip_camera_projection``, config ``embedding_dim`` + ``additional_embeddings``, key ``proj.*``)."""

    @register_to_config
    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


PROJECTION_CLASSES = {"cc_projection": CCProjection, "clip_camera_projection": CLIPCameraProjection}
"""Projection class by folder name (``guidance.zero123.projection_subfolder``)."""
DEFAULT_PROJECTION = "clip_camera_projection"
"""The layout of the default repo ``bennyguo/zero123-xl-diffusers`` (its model_index.json; threestudio's
Zero123Pipeline registers the same name), mirrored by ``models=tiny`` / ``random``."""


def projection_layout(cfg: Zero123GuidanceConfig, models_cfg: Optional[ModelsConfig]) -> str:
    """The pose projection's folder: ``cfg.projection_subfolder``, else the one the repo's model_index.json names.

    Raises:
        ConfigError: the model_index.json names no known projection (or several).
        MissingWeightsError: no model_index.json (not downloaded, or a local dir without one).
    """
    if cfg.projection_subfolder:
        return cfg.projection_subfolder
    if models_cfg is not None and ModelsKind(models_cfg.kind) != ModelsKind.pretrained:
        return DEFAULT_PROJECTION
    components = M.pipeline_components(M.model_index(cfg.model, models_cfg))
    found = [name for name in PROJECTION_CLASSES if name in components]
    if len(found) != 1:
        raise ConfigError(f"{cfg.model}: model_index.json names {sorted(components)}, expected exactly one of "
                          f"{', '.join(PROJECTION_CLASSES)}; set guidance.zero123.projection_subfolder=<folder>")
    return found[0]


def pose_token(delta_elevation: Tensor, delta_azimuth: Tensor, delta_radius: Tensor) -> Tensor:
    """Zero-1-to-3 pose token in our convention (see the module docstring).

    Args:
        delta_elevation: [N] degrees (current − reference).
        delta_azimuth: [N] degrees (current − reference; wrapped here).
        delta_radius: [N].

    Returns:
        [N, 4] = [−Δe (rad), sin(Δa), cos(Δa), Δr] (Zero-1-to-3's get_T; see the module docstring).
    """
    daz = torch.deg2rad(torch.remainder(delta_azimuth.float() + 180.0, 360.0) - 180.0)
    return torch.stack([-torch.deg2rad(delta_elevation.float()), torch.sin(daz), torch.cos(daz),
                        delta_radius.float()], dim=-1)


def _direction(elevation: Tensor, azimuth: Tensor) -> Tensor:
    e, a = torch.deg2rad(elevation.float()), torch.deg2rad(azimuth.float())
    return torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], dim=-1)


def view_angle(elevation: Tensor, azimuth: Tensor, ref_elevation: float = 0.0, ref_azimuth: float = 0.0) -> Tensor:
    """Angle in degrees between camera position vectors and the reference one, [N] in [0, 180]."""
    d = _direction(elevation, azimuth)
    r = _direction(torch.tensor(float(ref_elevation)), torch.tensor(float(ref_azimuth))).to(d)
    cos = (d * r).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def _projection_builders(subfolder: str) -> tuple[type, Any, Any]:
    """(class, tiny builder, full-size builder) of the pose projection stored in ``subfolder``."""
    if subfolder not in PROJECTION_CLASSES:
        raise ConfigError(f"guidance.zero123.projection_subfolder={subfolder!r} is not a known layout; use one of "
                          f"{', '.join(PROJECTION_CLASSES)}")
    cls = PROJECTION_CLASSES[subfolder]
    if cls is CCProjection:
        return cls, lambda: CCProjection(M.TINY_DIM + 4, M.TINY_DIM), CCProjection
    return cls, lambda: CLIPCameraProjection(M.TINY_DIM, 4), CLIPCameraProjection


class Zero123Guidance(GuidanceTerm):
    """Zero-1-to-3 SDS term.

    Args:
        cfg: the term's config.
        inputs: the phase's inputs: ``reference`` (required; taken at ``cfg.resolution``; a tensor is [3, H, W] or
            [1, 3, H, W] RGB in [0, 1] composited on white), ``models_cfg``, ``device`` (``cfg.device`` overrides it).
    """

    name = "zero123"

    def __init__(self, cfg: Zero123GuidanceConfig, inputs: TermInputs) -> None:
        super().__init__()
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        reference = inputs.reference_rgb(self.name, cfg.resolution)
        models_cfg = inputs.models_cfg
        self.cfg = cfg
        dev = resolve_device(cfg.device, inputs.device)

        def one(cls, sub, tiny, rand=None):
            return M.load(cls, cfg.model, sub, "auto", models_cfg, tiny, rand, dev)

        self.unet = one(UNet2DConditionModel, "unet", lambda: M.tiny_unet(in_channels=8),
                        lambda: M.random_unet(in_channels=8))
        self.vae = one(AutoencoderKL, "vae", M.tiny_vae, M.random_vae)
        self.image_encoder = one(CLIPVisionModelWithProjection, "image_encoder", M.tiny_image_encoder,
                                 M.random_image_encoder)
        projection = projection_layout(cfg, models_cfg)
        proj_cls, proj_tiny, proj_random = _projection_builders(projection)
        self.cc_projection = one(proj_cls, projection, proj_tiny, proj_random)
        scheduler = one(DDIMScheduler, "scheduler", M.sd_scheduler)
        self.alphas_cumprod: Tensor
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.float().to(dev), persistent=False)
        self.sampler = TimestepSampler.from_config(cfg, self.alphas_cumprod.shape[0])
        self.clip_emb: Tensor
        self.register_buffer("clip_emb", torch.empty(0), persistent=False)
        self.ref_latent: Tensor
        self.register_buffer("ref_latent", torch.empty(0), persistent=False)
        self.to(dev)
        self.freeze()
        self._condition_on(reference)
        inputs.offload_image_encoder(self.image_encoder)

    @torch.no_grad()
    def _condition_on(self, reference: Tensor) -> None:
        """Compute the CLIP embedding [1, 1, D_img] and the unscaled VAE latent [1, 4, h, w] of the reference."""
        ref = reference.unsqueeze(0) if reference.dim() == 3 else reference
        ref = ref[:1].to(self.device, torch.float32)
        enc_dtype = next(self.image_encoder.parameters()).dtype
        pixels = clip_normalize(ref, self.image_encoder.config.image_size).to(enc_dtype)
        self.clip_emb = self.image_encoder(pixel_values=pixels).image_embeds.float().unsqueeze(1)
        self.ref_latent = vae_encode(self.vae, resize_frames(ref, self.cfg.resolution), sample=False, scale=False)

    def conditioning(self, ctx: GuidanceContext, n: int) -> Tensor:
        """[n, 1, D] cross-attention embeddings of the first frame's pose of each clip, repeated over frames."""
        b, f = ctx.elevation.shape[0], n // ctx.elevation.shape[0]
        pick = lambda x: x[:, :1].expand(b, f).reshape(-1).to(self.device)  # noqa: E731
        token = pose_token(pick(ctx.delta_elevation), pick(ctx.delta_azimuth), pick(ctx.delta_radius))
        x = torch.cat([self.clip_emb.expand(n, -1, -1), token.unsqueeze(1)], dim=-1)
        proj_dtype = next(self.cc_projection.parameters()).dtype
        return self.cc_projection(x.to(proj_dtype))

    def weights(self, ctx: GuidanceContext, n: int) -> Tensor:
        """[n] λ_eff (angle-scaled when enabled) of the first frame of each clip."""
        f = n // ctx.elevation.shape[0]
        if not self.cfg.angle_scaled:
            return torch.full((n,), float(self.cfg.weight), device=self.device)
        ang = view_angle(ctx.elevation[:, 0], ctx.azimuth[:, 0], ctx.ref_elevation, ctx.ref_azimuth)
        return (self.cfg.weight * ang / 180.0).repeat_interleave(f).to(self.device)

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:
        """SDS loss of ``images`` [B, F, 3, H, W] in [0, 1] (every frame; phases pass the frames they want)."""
        check_images(images)
        b, f = images.shape[:2]
        n = b * f
        frames = resize_frames(images.reshape(n, *images.shape[2:]).to(self.device), self.cfg.resolution)
        latents = vae_encode(self.vae, frames, sample=True, scale=True)
        with torch.no_grad():
            cond = self.conditioning(ctx, n)
        uncond = torch.zeros_like(cond)
        concat = self.ref_latent.expand(n, -1, -1, -1)
        unet_dtype = next(self.unet.parameters()).dtype

        def predict_eps(z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            x = torch.cat([torch.cat([z_t, torch.zeros_like(concat)], 1), torch.cat([z_t, concat], 1)])
            eps = self.unet(x.to(unet_dtype), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
            eps_u, eps_c = eps.chunk(2)
            return eps_u, eps_c

        t = self.sampler.sample(ctx.step, n, device=self.device)
        w = self.weights(ctx, n)
        res = guided_sds(latents, self.alphas_cumprod, t, predict_eps, self.cfg.cfg_scale, self.cfg.weighting,
                         scale=w, batch_size=b)
        stats = res.stats(self.name)
        stats[f"{self.name}/weight"] = w.mean()
        return GuidanceOutput(loss=res.loss.to(images.device), stats=stats)
