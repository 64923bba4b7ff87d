"""Static phase (spec §8.1): one static grid field from the input picture, SD + Zero-1-to-3 SDS.

Step types (spec §7.1): all of the first ``known_iters`` steps, then every ``known_interval``-th step render the
reference view (elevation 0, azimuth 0, radius 1.8, fovy 40°) at ``ref_size`` on white with albedo shading and apply
``λ_rgb·MSE(pred·M, gt·M) + λ_mask·MSE(opacity, M) + λ_depth·(1 − Pearson(depth[M], gt[M]))/2``. Every other step
renders one random view (``render.cameras.sample_random_views``) at ``render_size`` on a random solid background with
the shading schedule (normal-map shading for the first ``normal_shading_ratio`` of the steps, then ambient
a ~ U(0.1, 1), 20% textureless, else lambertian; light = normalize(camera position + N(0, I))) and applies the SD and
Zero-1-to-3 SDS terms (``guidance.sd`` / ``guidance.zero123``). Regularisers on every step: opacity entropy (ramped
over ``entropy_ramp``·max_steps), and, when normals were rendered, orientation and 2D normal smoothness (TV + blur).
Coarse-to-fine: the finest ``coarse_to_fine_levels`` grid levels are masked before ``coarse_to_fine_ratio``·max_steps.

Differences from the original, on purpose:
- SDS enters through the reparameterised loss ``0.5·‖z − sg(z − grad)‖²`` (guidance/sds.py), so it goes through the
  AMP GradScaler like every other term. The original's static stage called ``latents.backward(grad)``, which bypassed
  the scaler and attenuated SDS by ~2^16 relative to the reference losses (spec §14.2). ``phase.sds_balance``
  chooses: ``original`` (default; the SDS terms are multiplied by 1/scale of the loop's GradScaler, or by 2^-16 where
  no scaler runs, which reproduces the published balance) or ``corrected`` (SDS at the λ's face value, which competes
  with the reference on the visible side too and would need re-tuned λ's).
- Reference steps render albedo (a = 1 makes lambertian equal to albedo), so no normals are computed there
  (spec §14.7); orientation / normal smoothness apply on SDS steps that shade with normals.
- Step counts are per phase (spec §14.4); the reference camera has no 1e-3 ray jitter; the Pearson depth loss uses
  the raw rendered depth (the original's min/max normalisation is affine on the mask, so Pearson is unchanged).

Inputs (shared by every generation phase, stored in ``<run_dir>/inputs.json`` by ``animate124.run``): ``image=``
(RGBA, or RGB used as fully opaque), ``prompt=`` (the motion caption), ``static_prompt=`` (default:
``"a high-resolution DSLR image of " + <caption up to its subject>``, e.g. "a panda is dancing" → "a high-resolution
DSLR image of a panda"; see ``data.case.find_subject``), ``case=`` (fills all three), ``run_dir=``. The depth map is
the case's ``depth.png`` or a ``depth.png`` next to the image (what ``python -m animate124.preprocess`` writes).
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Optional

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from animate124 import losses as L
from animate124.config.phases import SDSBalance
from animate124.data.case import STATIC_PREFIX, apply_case, find_subject, load_case, subject_phrase
from animate124.data.reference import ReferenceImage, load_reference, sibling_depth
from animate124.errors import InputError
from animate124.fields import build_field
from animate124.guidance.base import GuidanceTerm
from animate124.io.run_dir import load_inputs, save_inputs
from animate124.phases.base import Phase, StepOutput
from animate124.render.cameras import Cameras, reference_camera, sample_random_views
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import GuidanceContext, RenderOutput

log = logging.getLogger(__name__)

REF_ELEVATION, REF_AZIMUTH, REF_RADIUS = 0.0, 0.0, 1.8
ORIGINAL_NO_SCALER_FACTOR = 2.0 ** -16
"""sds_balance=original without a GradScaler: the scaler's initial scale 2^16 (torch's default init_scale)."""
Stats = dict[str, Tensor | float]
"""Step statistics: detached device tensors or host floats (phases.base.host_stats reads them at log time)."""


def default_static_prompt(prompt: str) -> str:
    """``"a high-resolution DSLR image of " + <caption up to its subject>`` ("a panda is dancing" → "…of a panda")."""
    return STATIC_PREFIX + subject_phrase(prompt, find_subject(prompt))


def resolve_inputs(cfg: Any, run_dir: Any) -> dict[str, Optional[str]]:
    """image / prompt / static_prompt / depth of a generation phase: explicit config > case > the run's inputs.json.

    Raises:
        InputError: no image or no prompt anywhere.
    """
    cfg = apply_case(cfg)
    stored = load_inputs(run_dir)
    image = cfg.image or stored.get("image")
    prompt = cfg.prompt or stored.get("prompt")
    if not image:
        raise InputError("no input picture: pass image=<RGBA png> (or case=<name>); later phases reuse it from run_dir")
    if not (cfg.static_prompt or stored.get("static_prompt") or prompt):
        raise InputError("no prompt: pass prompt='a panda is dancing' (and optionally static_prompt=...)")
    static_prompt = cfg.static_prompt or stored.get("static_prompt") or default_static_prompt(str(prompt))
    case = load_case(cfg.case)
    depth = case.depth if case is not None and case.depth is not None else sibling_depth(image)
    # Record what was resolved (a case's image and prompts included), so later phases need only run_dir=.
    save_inputs(run_dir, image=str(image), prompt=prompt, static_prompt=static_prompt)
    return {"image": str(image), "prompt": prompt, "static_prompt": static_prompt,
            "depth": str(depth) if depth else None}


class StaticPhase(Phase):
    """The static stage; see the module docstring."""

    name = "static"

    # ------------------------------------------------------------------ build
    def build_scene(self, dynamic: bool) -> ReferenceImage:
        """Inputs, reference views at ``ref_size``, field, occupancy (``time_slots``), renderer and Adam optimizer.

        Shared by the generation phases (the dynamic phase subclasses this one). Returns the full-resolution
        reference image (for guidance conditioning at other sizes).
        """
        cfg, p, dev = self.cfg, self.pcfg, self.device
        self.inputs = resolve_inputs(cfg, self.run_dir)
        ref = load_reference(self.inputs["image"], depth=self.inputs["depth"], check=True)
        self.ref = ref.at(p.ref_size).to(dev)
        self.field = build_field(cfg.field, dynamic=dynamic).to(dev)
        self.occupancy = OccupancyGrid(cfg.render.grid_resolution, p.time_slots, cfg.field.bound,
                                       cfg.render.occupancy_decay, cfg.render.density_thresh,
                                       cfg.render.update_fraction).to(dev)
        self.renderer = VolumeRenderer(self.field, self.occupancy, cfg.render)
        self.optimizer = torch.optim.Adam(self.field.param_groups(p.optim.lr, p.optim.grid_lr_scale),
                                          betas=tuple(p.optim.betas), eps=p.optim.eps)
        return ref

    def build(self) -> None:
        cfg, dev = self.cfg, self.device
        ref = self.build_scene(dynamic=False)
        self.terms: list[GuidanceTerm] = []
        g = cfg.guidance
        if g.sd.enabled:
            from animate124.guidance.stable_diffusion import StableDiffusionGuidance

            self.terms.append(StableDiffusionGuidance(g.sd, self.inputs["static_prompt"], cfg.models, dev))
        if g.zero123.enabled:
            from animate124.guidance.zero123 import Zero123Guidance

            self.terms.append(Zero123Guidance(g.zero123, ref.at(g.zero123.resolution).rgb, cfg.models, dev))
        log.info("static: image %s, static prompt %r, depth %s, guidance %s", self.inputs["image"],
                 self.inputs["static_prompt"], self.inputs["depth"], [t.name for t in self.terms] or "none")

    # ------------------------------------------------------------------ schedules
    def is_reference_step(self, step: int) -> bool:
        """Reference-view step: all of the first known_iters, then every known_interval-th (spec §7.1)."""
        p = self.pcfg
        return step < p.known_iters or step % max(1, p.known_interval) == 0 or not self.terms

    def active_levels(self, step: int) -> Optional[int]:
        """Coarse-to-fine: L − coarse_to_fine_levels (≥ 1) levels before coarse_to_fine_ratio·max_steps, else all."""
        p = self.pcfg
        if p.coarse_to_fine_levels <= 0 or step >= p.coarse_to_fine_ratio * self.max_steps:
            return None
        return max(1, int(self.cfg.field.num_levels) - int(p.coarse_to_fine_levels))

    def shading(self, step: int) -> tuple[str, float]:
        """(shading mode, ambient ratio) of an SDS step (spec §8.1)."""
        p = self.pcfg
        if step < p.normal_shading_ratio * self.max_steps:
            return "normal", 1.0
        ambient = p.ambient_min + (1.0 - p.ambient_min) * random.random()  # host RNG: no device sync
        return ("textureless" if random.random() < p.textureless_rate else "lambertian"), ambient

    # ------------------------------------------------------------------ steps
    def train_step(self, step: int) -> StepOutput:
        self.field.active_levels = self.active_levels(step)
        if self.is_reference_step(step):
            out, loss, stats = self._reference_step()
        else:
            out, loss, stats = self._sds_step(step)
        reg, reg_stats = self._regularisers(step, out)
        stats.update(reg_stats)
        return StepOutput(loss + reg, stats)

    def _reference_step(self) -> tuple[RenderOutput, Tensor, Stats]:
        p, ref = self.pcfg, self.ref
        cams = reference_camera(p.ref_size, REF_RADIUS, p.fovy, self.device)
        out = self.renderer.render(cams, background=torch.ones(3, device=self.device), shading="albedo")
        rgb = out.rgb[0, 0].float().permute(2, 0, 1)          # [3, H, W]
        opacity = out.opacity[0, 0].float().permute(2, 0, 1)  # [1, H, W]
        l_rgb = L.masked_rgb_loss(rgb, ref.rgb, ref.mask)
        l_mask = L.mask_loss(opacity, ref.mask)
        loss = p.lambda_rgb * l_rgb + p.lambda_mask * l_mask
        stats = {"ref/rgb": _f(l_rgb), "ref/mask": _f(l_mask), "ref_step": 1.0}
        if ref.depth is not None and p.lambda_depth > 0:
            l_depth = L.depth_pearson_loss(out.depth[0, 0].float().permute(2, 0, 1), ref.depth, ref.mask)
            loss = loss + p.lambda_depth * l_depth
            stats["ref/depth"] = _f(l_depth)
        return out, loss, stats

    def _sds_step(self, step: int) -> tuple[RenderOutput, Tensor, Stats]:
        p, dev = self.pcfg, self.device
        elev, azim, rad = sample_random_views(1, None, p.uniform_sphere_rate, tuple(p.elevation_range))
        cams = Cameras.from_spherical(elev, azim, rad, p.render_size, p.fovy).to(dev)
        shading, ambient = self.shading(step)
        light = cams.origins[0] + torch.randn(3, device=dev)
        light = light / light.norm().clamp_min(1e-6)
        background = torch.rand(3, device=dev)
        out = self.renderer.render(cams, background=background, shading=shading, ambient=ambient, light_dir=light)
        images = out.images().float().clamp(0.0, 1.0)  # [1, 1, 3, H, W]
        ctx = GuidanceContext(step=step, elevation=elev.view(1, 1), azimuth=azim.view(1, 1), radius=rad.view(1, 1),
                              ref_elevation=REF_ELEVATION, ref_azimuth=REF_AZIMUTH, ref_radius=REF_RADIUS)
        loss = images.new_zeros(())
        stats: Stats = {"ref_step": 0.0, "ambient": ambient}
        for term in self.terms:
            g = term(images, ctx)
            loss = loss + g.loss
            stats.update(g.stats)
        factor = self.sds_factor()
        return out, loss * factor, stats

    def sds_factor(self) -> Tensor | float:
        """Multiplier of the SDS terms (``phase.sds_balance``): 1 (corrected), else 1/scale of the loop's GradScaler,
        or 2^-16 where no scaler runs (original). The scale is read as a device tensor: no host sync."""
        if SDSBalance(self.pcfg.sds_balance) == SDSBalance.corrected:
            return 1.0
        scaler = self.grad_scaler
        if scaler is None or not scaler.is_enabled():
            return ORIGINAL_NO_SCALER_FACTOR
        scale = scaler._get_scale_async()  # None until the scaler's first scale(): then its init_scale, a float
        return 1.0 / scaler.get_scale() if scale is None else 1.0 / scale.to(self.device, torch.float32)

    def _regularisers(self, step: int, out: RenderOutput) -> tuple[Tensor, Stats]:
        p = self.pcfg
        loss = out.rgb.new_zeros((), dtype=torch.float32)
        stats: Stats = {}
        lam_ent = L.ramp_weight(step, int(p.entropy_ramp * self.max_steps), p.lambda_entropy)
        if lam_ent > 0 and out.sample_weights is not None and out.sample_weights.numel() > 0:
            ent = L.opacity_entropy(out.sample_weights)
            loss = loss + lam_ent * ent
            stats["reg/entropy"] = _f(ent)
        if p.lambda_orient > 0 and out.sample_normals is not None and out.sample_dirs is not None:
            orient = L.orientation_loss(out.sample_weights, out.sample_normals.float(), out.sample_dirs.float())
            loss = loss + p.lambda_orient * orient
            stats["reg/orient"] = _f(orient)
        if out.normals is not None and (p.lambda_normal_tv > 0 or p.lambda_normal_blur > 0):
            nimg = out.normals.reshape(-1, *out.normals.shape[-3:]).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
            tv, blur = L.normal_tv_loss(nimg), L.normal_blur_loss(nimg)
            loss = loss + p.lambda_normal_tv * tv + p.lambda_normal_blur * blur
            stats.update({"reg/normal_tv": _f(tv), "reg/normal_blur": _f(blur)})
        return loss, stats

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, step: int) -> dict[str, float]:
        """Save ``val/step_NNNNNNN.png`` (reference view + val_views azimuths) and return the reference-view PSNR."""
        p, dev = self.pcfg, self.device
        self.field.active_levels = self.active_levels(step)
        white = torch.ones(3, device=dev)
        ref_out = self.renderer.render_image(reference_camera(p.ref_size, REF_RADIUS, p.fovy, dev), background=white)
        pred = ref_out.rgb[0, 0].permute(2, 0, 1).float()
        gt = self.ref.rgb.cpu()
        mse = F.mse_loss(pred, gt).item()
        n = max(1, int(p.val_views))
        azim = torch.arange(n, dtype=torch.float32) * (360.0 / n)
        cams = Cameras.from_spherical(torch.zeros(n), azim, REF_RADIUS, p.val_size, p.fovy).to(dev)
        views = self.renderer.render_image(cams, background=white).rgb[:, 0]  # [n, H, W, 3]
        strip = torch.cat(list(views.clamp(0, 1)), dim=1)
        self.dirs.val.mkdir(parents=True, exist_ok=True)
        iio.imwrite(self.dirs.val / f"step_{step:07d}.png", (strip.numpy() * 255.0 + 0.5).astype(np.uint8))
        ref_pair = torch.cat([gt, pred.clamp(0, 1)], dim=2).permute(1, 2, 0)
        iio.imwrite(self.dirs.val / f"ref_{step:07d}.png", (ref_pair.numpy() * 255.0 + 0.5).astype(np.uint8))
        return {"ref_psnr": -10.0 * math.log10(max(mse, 1e-12)), "ref_mse": mse}

    def validate(self, step: int) -> dict[str, float]:
        return self._evaluate(step)

    def final(self, step: int) -> dict[str, float]:
        return self._evaluate(step)

    def extra_state(self) -> dict[str, Any]:
        return {"inputs": self.inputs}


def _f(x: Tensor) -> Tensor:
    """A loss as a logged statistic: detached, still on the device (read on the host at log time only)."""
    return x.detach()


PHASE = StaticPhase
