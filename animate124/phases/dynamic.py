"""Dynamic coarse phase (spec §8.2, §8.4): animate the static field with text-to-video SDS.

Initialisation (fresh start only; a run with checkpoints in ``<run_dir>/dynamic/checkpoints`` resumes instead):
the static checkpoint is ``init_from=PATH`` when given (a ``step-NNNNNNN`` folder, a ``checkpoints`` folder, a phase
folder or a run dir), else the latest one in ``<run_dir>/static/checkpoints``. Its field becomes the dynamic field
with ``fields.init_dynamic_from_static`` (every keyframe a copy of the static grid, the MLP copied: it renders the
static scene at every τ); the occupancy grid's ``time_slots`` slots are RE-ESTIMATED at their own times
(k + 0.5)/S ± 0.5/S from the new field (the original copied the static grid's slot time 0.5 into every slot,
spec §14.1). The optimizer is a fresh Adam with the original's parameter groups (grids lr·10, MLP lr).

One step (``step`` 0-based; every ``known_interval``-th step is a reference step):

* reference step: the reference view at τ = 0, ``ref_size``, white background, albedo → λ_rgb·masked MSE +
  λ_mask·MSE(opacity, mask) + λ_depth·(1 − Pearson)/2;
* SDS step: a clip of ``num_frames`` times (``data.time.ClipSampler``: P(start = 0) and P(end = 1) exact), a moving
  camera with probability ``dynamic_cam_rate`` (``render.cameras.moving_trajectory``) else a fixed one, a random
  solid background, ambient a ~ U(ambient_min, 1), textureless with probability ``textureless_rate`` else lambertian,
  light = normalize(frame camera position + one N(0, I) vector); all F frames rendered at ``render_size`` in ONE
  field call, then the video prior(s) (``guidance.video.kind``: text → ``guidance.video``, image →
  ``guidance.image_video``, both) and, when the clip starts at τ = 0, Zero-1-to-3 SDS on frame 0;
* every step: opacity entropy, orientation and 2D normal smoothness (when normals were rendered) and
  ``lambda_time_tv``·per-level temporal smoothness of the field. The base loop adds fp16 autocast + GradScaler on CUDA,
  value clipping (``optim.grad_clip_value`` = 1.0) and occupancy refreshes every ``render.update_interval`` steps.

Validation (every ``val_every`` steps and at the end): ``<run_dir>/dynamic/videos/step_NNNNNNN_fixed.mp4`` (the
reference view while τ runs over [0, 1]) and ``step_NNNNNNN_orbit.mp4`` (τ over [0, 1] while the azimuth sweeps 360°
at ``val_elevation``), ``val_frames`` frames of ``val_size`` (rounded up to a multiple of 16) at ``val_fps``, plus the
reference-view PSNR at τ = 0.

Subclasses (the refine phase) add guidance terms through :meth:`DynamicPhase.extra_sds`, which gets the clip's
cameras, times and :class:`~animate124.types.RenderRequest`. The reference step, regularisers, shading and the
reference PSNR are :class:`~animate124.phases.generation.GenerationPhase`'s.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from animate124.config.phases import DynamicPhaseConfig
from animate124.config.schema import FieldConfig
from animate124.data.time import Clip, ClipSampler, validation_times
from animate124.fields import build_field, init_dynamic_from_static, level_weights, load_field_state
from animate124.guidance.base import GuidanceTerm
from animate124.io.checkpoint import load_checkpoint, split_state
from animate124.io.handoff import find_checkpoint
from animate124.phases.generation import REF_AZIMUTH, REF_ELEVATION, REF_RADIUS, GenerationPhase, Stats, StepResult
from animate124.render.cameras import Cameras, moving_trajectory, orbit
from animate124.types import GuidanceContext, RenderOutput, RenderRequest

log = logging.getLogger(__name__)

MISSING_STATIC = "no static checkpoint in {run_dir}; run phase=static first or pass init_from=PATH"


def find_init_checkpoint(run_dir: Path, init_from: Optional[str], source_phase: str = "static",
                         missing: str = MISSING_STATIC) -> Path:
    """The checkpoint a fresh dynamic (or refine) run starts from: :func:`animate124.io.handoff.find_checkpoint`.

    Args:
        run_dir: the run directory.
        init_from: ``init_from=`` (a step folder, a checkpoints folder, a phase folder or a run dir), or None.
        source_phase: the phase whose latest checkpoint is used when ``init_from`` is None.
        missing: the error message when the run dir has none (``{run_dir}`` is filled in).

    Raises:
        CheckpointError: nothing found (the message names the missing phase and both fixes).
    """
    return find_checkpoint(run_dir, (source_phase,), init_from, missing=missing)[0]


def checkpoint_field_config(saved: dict[str, Any], fallback: FieldConfig) -> FieldConfig:
    """The FieldConfig a checkpoint was written with (its resolved config, validated like any config), else
    ``fallback``."""
    from animate124.export.scene import typed_config

    values = (saved.get("config") or {}).get("field")
    return typed_config(FieldConfig, values) if values else fallback


@dataclass
class ClipRender:
    """What the clip of an SDS step was rendered with: a second render (refine's frozen copy) repeats it."""

    cameras: Cameras
    """F per-frame cameras."""
    times: Tensor
    """[1, F] scene times."""
    request: RenderRequest
    """Background, shading, ambient, light and perturb."""


class DynamicPhase(GenerationPhase):
    """The dynamic coarse stage; see the module docstring."""

    name = "dynamic"
    dynamic = True
    pcfg: DynamicPhaseConfig

    # ------------------------------------------------------------------ build / init
    def build(self) -> None:
        from animate124.guidance.factory import TermUse, build_terms

        cfg, p = self.cfg, self.pcfg
        ref = self.build_scene()
        self.sampler = ClipSampler(p.num_frames, p.clip.precision, p.clip.start_zero_rate, p.clip.end_one_rate,
                                   p.clip.max_stride)
        inputs = self.term_inputs(ref, self.inputs.get("prompt"))
        # the clip's video prior(s), chosen by guidance.video.kind; then the terms on frame 0 of clips that start at
        # τ = 0 (Zero-1-to-3, phase.zero123_on_start)
        self.video_terms: list[GuidanceTerm] = build_terms(cfg.guidance, TermUse.clip, inputs)
        self.start_frame_terms: list[GuidanceTerm] = (
            build_terms(cfg.guidance, TermUse.start_frame, inputs) if p.zero123_on_start else [])
        log.info("%s: prompt %r, video priors %s, start-frame terms %s", self.name, self.inputs["prompt"],
                 [t.name for t in self.video_terms], [t.name for t in self.start_frame_terms])

    def init(self) -> None:
        """Fresh start: the dynamic field from the static checkpoint, occupancy re-estimated at the slot times."""
        path = find_init_checkpoint(self.run_dir, self.cfg.init_from)
        model_state, _, state = load_checkpoint(path, map_location=self.device)
        field_state = split_state(model_state, "field")
        emb = field_state.get("encoding.embeddings")
        if state.get("phase") == "static" or (emb is not None and emb.shape[0] == 1):
            static = build_field(checkpoint_field_config(state, self.cfg.field), dynamic=False).to(self.device)
            load_field_state(static, field_state)
            dyn = init_dynamic_from_static(static, self.cfg.field)
            load_field_state(self.field, dyn.state_dict())
        else:  # a dynamic checkpoint (e.g. another run's dynamic phase): continue from it with a fresh optimizer
            load_field_state(self.field, field_state)
        self.occupancy.update(self.renderer.density_fn, dynamic=True)
        self.init_checkpoint = str(path)
        log.info("%s: initialised from %s (occupancy re-estimated at %d slot times)", self.name, path,
                 self.occupancy.time_slots)

    def refresh_occupancy(self, step: int) -> None:
        """The base refresh, except at step 0 of a fresh start: :meth:`init` has just re-estimated every slot."""
        if step == 0 and int(self.occupancy.num_updates) > 0:
            return
        super().refresh_occupancy(step)

    # ------------------------------------------------------------------ steps
    def is_reference_step(self, step: int) -> bool:
        """Every known_interval-th step (spec §7.1; the dynamic stages have no known_iters warm-up)."""
        return step % max(1, int(self.pcfg.known_interval)) == 0 or not (self.video_terms or self.start_frame_terms)

    def sample_clip(self) -> tuple[Clip, Cameras, GuidanceContext, bool]:
        """Times, per-frame cameras and the guidance context of one training clip (B = 1)."""
        p, dev = self.pcfg, self.device
        clip = self.sampler.sample()
        f = p.num_frames
        v = p.views
        elev, azim, rad, moving = moving_trajectory(f, None, p.dynamic_cam_rate, p.cam_delta_elevation,
                                                    p.cam_delta_azimuth, uniform_sphere_rate=v.uniform_sphere_rate,
                                                    elevation_range=tuple(v.elevation_range))
        cams = Cameras.from_spherical(elev, azim, rad, p.render_size, v.fovy).to(dev)
        ctx = GuidanceContext(step=0, elevation=elev.view(1, f), azimuth=azim.view(1, f), radius=rad.view(1, f),
                              ref_elevation=REF_ELEVATION, ref_azimuth=REF_AZIMUTH, ref_radius=REF_RADIUS,
                              times=clip.times.view(1, f), fixed_camera=not moving,
                              start_from_zero=clip.start_from_zero)
        return clip, cams, ctx, moving

    def sds_step(self, step: int) -> StepResult:
        dev = self.device
        clip, cams, ctx, moving = self.sample_clip()
        ctx.step = step
        shading, ambient = self.random_shading()
        light = cams.origins + torch.randn(3, device=dev)  # one random vector per step, added to every frame's origin
        light = light / light.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        request = RenderRequest(background=torch.rand(3, device=dev), shading=shading, ambient=ambient,
                                light_dir=light.view(1, -1, 3))
        clip_render = ClipRender(cams, clip.times.view(1, -1).to(dev), request)
        out = self.renderer.render(cams, clip_render.times, request)
        images = out.images().float().clamp(0.0, 1.0)  # [1, F, 3, H, W]: all frames from ONE field call
        loss = images.new_zeros(())
        stats: Stats = {"ref_step": 0.0, "ambient": ambient, "clip/start0": float(clip.start_from_zero),
                        "clip/end1": float(clip.end_at_one), "clip/stride": float(clip.stride),
                        "clip/moving": float(moving)}
        for term in self.video_terms:
            g = term(images, ctx)
            loss = loss + g.loss
            stats.update(g.stats)
        for term in self.start_frame_terms if clip.start_from_zero else []:
            g = term(images[:, :1], ctx)
            loss = loss + g.loss
            stats.update(g.stats)
        extra, extra_stats = self.extra_sds(step, images, ctx, clip_render)
        stats.update(extra_stats)
        return out, loss + extra, stats

    def extra_sds(self, step: int, images: Tensor, ctx: GuidanceContext,
                  clip: ClipRender) -> tuple[Tensor, Stats]:
        """Hook for subclasses: more SDS terms on the clip (the refine phase's ControlNet). Default: none."""
        return images.new_zeros(()), {}

    def regularisers(self, step: int, out: RenderOutput) -> tuple[Tensor, Stats]:
        """The generation phases' regularisers plus ``lambda_time_tv``·the field's per-level temporal smoothness
        (weights ``time_tv_level_decay^ℓ``)."""
        loss, stats = super().regularisers(step, out)
        if self.pcfg.lambda_time_tv > 0:
            weights = level_weights(self.field.cfg.num_levels, self.pcfg.time_tv_level_decay)
            ttv = self.field.time_smoothness(weights).float()
            loss = loss + self.pcfg.lambda_time_tv * ttv
            stats["reg/time_tv"] = ttv.detach()
        return loss, stats

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def render_videos(self, step: int) -> dict[str, Path]:
        """Write the fixed-view and orbit-while-animating validation videos; returns their paths."""
        from animate124.export.writers import write_frames

        p, dev = self.pcfg, self.device
        n, size = int(p.val_frames), int(math.ceil(max(16, int(p.val_size)) / 16) * 16)
        times = validation_times(n).view(1, n).to(dev)
        white = torch.ones(3, device=dev)
        fixed = Cameras.from_spherical(torch.zeros(n), torch.zeros(n), REF_RADIUS, size, p.views.fovy).to(dev)
        elev, azim, rad = orbit(n, p.val_elevation, REF_RADIUS)
        orbiting = Cameras.from_spherical(elev, azim, rad, size, p.views.fovy).to(dev)
        paths = {}
        for tag, cams in (("fixed", fixed), ("orbit", orbiting)):
            rgb = self.renderer.render_image(cams, times, RenderRequest(white)).rgb[0]  # [n, H, W, 3]
            paths[tag] = write_frames(self.dirs.videos / f"step_{step:07d}_{tag}.mp4", rgb, fps=p.val_fps)
        return paths

    @torch.no_grad()
    def _evaluate(self, step: int) -> dict[str, float]:
        self.render_videos(step)
        return self.reference_psnr()[1]

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "init_checkpoint": getattr(self, "init_checkpoint", None)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.init_checkpoint = state.get("init_checkpoint")


PHASE = DynamicPhase
