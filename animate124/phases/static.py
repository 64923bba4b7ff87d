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
from typing import Optional

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from animate124.config.phases import SDSBalance, StaticPhaseConfig
from animate124.guidance.base import GuidanceTerm
from animate124.phases.base import StepOutput
from animate124.phases.generation import (
    REF_AZIMUTH,
    REF_ELEVATION,
    REF_RADIUS,
    GenerationPhase,
    Stats,
    StepResult,
    default_static_prompt,
    resolve_inputs,
)
from animate124.render.cameras import Cameras, sample_random_views
from animate124.types import GuidanceContext, RenderRequest

log = logging.getLogger(__name__)

ORIGINAL_NO_SCALER_FACTOR = 2.0 ** -16
"""sds_balance=original without a GradScaler: the scaler's initial scale 2^16 (torch's default init_scale)."""

__all__ = ["PHASE", "REF_AZIMUTH", "REF_ELEVATION", "REF_RADIUS", "Stats", "StaticPhase", "default_static_prompt",
           "resolve_inputs"]


class StaticPhase(GenerationPhase):
    """The static stage; see the module docstring (shared pieces: phases/generation.py)."""

    name = "static"
    dynamic = False
    pcfg: StaticPhaseConfig

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        from animate124.guidance.factory import TermUse, build_terms

        ref = self.build_scene()
        inputs = self.term_inputs(ref, self.inputs["static_prompt"])
        self.terms: list[GuidanceTerm] = build_terms(self.cfg.guidance, TermUse.every_frame, inputs)
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
        """(shading mode, ambient ratio) of an SDS step (spec §8.1): normal-map shading early, then random."""
        if step < self.pcfg.normal_shading_ratio * self.max_steps:
            return "normal", 1.0
        return self.random_shading()

    # ------------------------------------------------------------------ steps
    def train_step(self, step: int) -> StepOutput:
        self.field.active_levels = self.active_levels(step)
        return super().train_step(step)

    def sds_step(self, step: int) -> StepResult:
        p, dev = self.pcfg, self.device
        v = p.views
        elev, azim, rad = sample_random_views(1, None, v.uniform_sphere_rate, tuple(v.elevation_range))
        cams = Cameras.from_spherical(elev, azim, rad, p.render_size, v.fovy).to(dev)
        shading, ambient = self.shading(step)
        light = cams.origins[0] + torch.randn(3, device=dev)
        light = light / light.norm().clamp_min(1e-6)
        background = torch.rand(3, device=dev)
        out = self.renderer.render(cams, None, RenderRequest(background, shading, ambient, light))
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

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, step: int) -> dict[str, float]:
        """Save ``val/step_NNNNNNN.png`` (reference view + val_views azimuths) and return the reference-view PSNR."""
        p, dev = self.pcfg, self.device
        self.field.active_levels = self.active_levels(step)
        pred, metrics = self.reference_psnr()
        n = max(1, int(p.val_views))
        azim = torch.arange(n, dtype=torch.float32) * (360.0 / n)
        cams = Cameras.from_spherical(torch.zeros(n), azim, REF_RADIUS, p.val_size, p.views.fovy).to(dev)
        views = self.renderer.render_image(cams, None, RenderRequest(torch.ones(3, device=dev))).rgb[:, 0]  # [n, H, W, 3]
        strip = torch.cat(list(views.clamp(0, 1)), dim=1)
        self.dirs.val.mkdir(parents=True, exist_ok=True)
        iio.imwrite(self.dirs.val / f"step_{step:07d}.png", (strip.numpy() * 255.0 + 0.5).astype(np.uint8))
        ref_pair = torch.cat([self.ref.rgb.cpu(), pred.clamp(0, 1)], dim=2).permute(1, 2, 0)
        iio.imwrite(self.dirs.val / f"ref_{step:07d}.png", (ref_pair.numpy() * 255.0 + 0.5).astype(np.uint8))
        return metrics


PHASE = StaticPhase
