"""What the generation phases (static, dynamic, refine) share: one base class, each phase declaring what differs.

:class:`GenerationPhase` owns (nerfstudio-style: one loop in phases/base.py, the losses here):

* :meth:`~GenerationPhase.build_scene`: inputs, the reference views at ``ref_size``, field (static or dynamic),
  occupancy grid (``time_slots``), renderer and Adam optimizer;
* :meth:`~GenerationPhase.reference_step`: the input view at τ = 0 on white with albedo shading →
  ``λ_rgb·MSE(pred·M, gt·M) + λ_mask·MSE(opacity, M) + λ_depth·(1 − Pearson(depth[M], gt[M]))/2`` (``reference``);
* :meth:`~GenerationPhase.regularisers`: opacity entropy (ramped over ``entropy_ramp``·max_steps), and, when
  normals were rendered, orientation and 2D normal smoothness (``regularisers``);
* :meth:`~GenerationPhase.random_shading`: ambient a ~ U(ambient_min, 1), textureless w.p. ``textureless_rate``,
  else lambertian (``shading``);
* :meth:`~GenerationPhase.reference_psnr`: the reference view rendered on white vs the input picture;
* :meth:`~GenerationPhase.train_step`: a reference step when :meth:`is_reference_step`, else the phase's
  :meth:`sds_step`, plus the regularisers.

A phase sets ``name`` and ``dynamic`` and implements ``build`` (calling ``build_scene`` and adding its guidance
terms), ``is_reference_step``, ``sds_step`` and ``_evaluate``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from animate124 import losses as L
from animate124.config.phases import GenerationPhaseConfig
from animate124.data.case import STATIC_PREFIX, apply_case, find_subject, load_case, subject_phrase
from animate124.data.reference import ReferenceImage, load_reference, sibling_depth
from animate124.errors import InputError
from animate124.fields import GridField, build_field
from animate124.guidance.base import TermInputs
from animate124.io.run_dir import load_inputs, save_inputs
from animate124.metrics.image import psnr_from_mse
from animate124.phases.base import Phase, StepOutput
from animate124.render.cameras import reference_camera
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import RenderOutput, RenderRequest

REF_ELEVATION, REF_AZIMUTH, REF_RADIUS = 0.0, 0.0, 1.8
"""The reference (input) view: elevation 0, azimuth 0, radius 1.8 (fovy: ``views.fovy``, 40°)."""

Stats = dict[str, Tensor | float]
"""Step statistics: detached device tensors or host floats (phases.base.host_stats reads them at log time)."""
StepResult = tuple[RenderOutput, Tensor, Stats]
"""(render, loss, stats) of one reference or SDS step."""


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


def _f(x: Tensor) -> Tensor:
    """A loss as a logged statistic: detached, still on the device (read on the host at log time only)."""
    return x.detach()


class GenerationPhase(Phase):
    """Base of the static, dynamic and refine phases; see the module docstring."""

    pcfg: GenerationPhaseConfig
    field: GridField
    occupancy: OccupancyGrid
    optimizer: torch.optim.Optimizer
    dynamic: bool = False
    """Whether the field takes time (and the reference view is rendered at τ = 0)."""

    def __init__(self, cfg: Any, run_dir: str | Path, device: torch.device | None = None) -> None:
        super().__init__(cfg, run_dir, device)
        self.inputs: dict[str, Optional[str]] = {}

    # ------------------------------------------------------------------ build
    def term_inputs(self, reference: Optional[ReferenceImage], prompt: Optional[str]) -> TermInputs:
        """What this phase's guidance terms are built from (``Term(cfg, inputs)``, guidance/factory.py)."""
        return TermInputs(device=self.device, models_cfg=self.cfg.models, prompt=prompt or "", reference=reference,
                          seed=self.cfg.seed)

    def build_scene(self) -> ReferenceImage:
        """Inputs, reference views at ``ref_size``, field, occupancy (``time_slots``), renderer and Adam optimizer.

        Returns the full-resolution reference image (for guidance conditioning at other sizes).
        """
        cfg, p, dev = self.cfg, self.pcfg, self.device
        self.inputs = resolve_inputs(cfg, self.run_dir)
        ref = load_reference(self.inputs["image"], depth=self.inputs["depth"], check=True)
        self.ref = ref.at(p.ref_size).to(dev)
        self.field = build_field(cfg.field, dynamic=self.dynamic).to(dev)
        self.occupancy = OccupancyGrid.from_config(cfg.render, p.time_slots, cfg.field.bound).to(dev)
        self.renderer = VolumeRenderer(self.field, self.occupancy, cfg.render)
        self.optimizer = torch.optim.Adam(self.field.param_groups(p.optim.lr, p.optim.grid_lr_scale),
                                          betas=tuple(p.optim.betas), eps=p.optim.eps)
        return ref

    # ------------------------------------------------------------------ to implement
    def is_reference_step(self, step: int) -> bool:
        raise NotImplementedError

    def sds_step(self, step: int) -> StepResult:
        raise NotImplementedError

    def _evaluate(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared pieces
    def reference_times(self) -> Optional[Tensor]:
        """The times of the reference view: τ = 0 ([1, 1]) for a dynamic field, None for a static one."""
        return torch.zeros(1, 1, device=self.device) if self.dynamic else None

    def random_shading(self) -> tuple[str, float]:
        """(shading mode, ambient ratio) of an SDS step: a ~ U(ambient_min, 1); textureless w.p. textureless_rate."""
        s = self.pcfg.shading
        ambient = s.ambient_min + (1.0 - s.ambient_min) * random.random()  # host RNG: no device sync
        return ("textureless" if random.random() < s.textureless_rate else "lambertian"), ambient

    def train_step(self, step: int) -> StepOutput:
        out, loss, stats = self.reference_step() if self.is_reference_step(step) else self.sds_step(step)
        reg, reg_stats = self.regularisers(step, out)
        stats.update(reg_stats)
        return StepOutput(loss + reg, stats)

    def reference_step(self) -> StepResult:
        """The reference-view losses (rgb, mask and, when a depth map exists, Pearson depth)."""
        p, ref, dev = self.pcfg, self.ref, self.device
        w = p.reference
        cams = reference_camera(p.ref_size, REF_RADIUS, p.views.fovy, dev)
        out = self.renderer.render(cams, self.reference_times(),
                                   RenderRequest(background=torch.ones(3, device=dev), shading="albedo"))
        rgb = out.rgb[0, 0].float().permute(2, 0, 1)          # [3, H, W]
        opacity = out.opacity[0, 0].float().permute(2, 0, 1)  # [1, H, W]
        l_rgb, l_mask = L.masked_rgb_loss(rgb, ref.rgb, ref.mask), L.mask_loss(opacity, ref.mask)
        loss = w.lambda_rgb * l_rgb + w.lambda_mask * l_mask
        stats: Stats = {"ref/rgb": _f(l_rgb), "ref/mask": _f(l_mask), "ref_step": 1.0}
        if ref.depth is not None and w.lambda_depth > 0:
            l_depth = L.depth_pearson_loss(out.depth[0, 0].float().permute(2, 0, 1), ref.depth, ref.mask)
            loss = loss + w.lambda_depth * l_depth
            stats["ref/depth"] = _f(l_depth)
        return out, loss, stats

    def regularisers(self, step: int, out: RenderOutput) -> tuple[Tensor, Stats]:
        """Opacity entropy (ramped), orientation and normal smoothness (when normals were rendered)."""
        r = self.pcfg.regularisers
        loss = out.rgb.new_zeros((), dtype=torch.float32)
        stats: Stats = {}
        lam_ent = L.ramp_weight(step, int(r.entropy_ramp * self.max_steps), r.lambda_entropy)
        if lam_ent > 0 and out.sample_weights is not None and out.sample_weights.numel() > 0:
            ent = L.opacity_entropy(out.sample_weights)
            loss = loss + lam_ent * ent
            stats["reg/entropy"] = _f(ent)
        if r.lambda_orient > 0 and out.sample_normals is not None and out.sample_dirs is not None:
            orient = L.orientation_loss(out.sample_weights, out.sample_normals.float(), out.sample_dirs.float())
            loss = loss + r.lambda_orient * orient
            stats["reg/orient"] = _f(orient)
        if out.normals is not None and (r.lambda_normal_tv > 0 or r.lambda_normal_blur > 0):
            nimg = out.normals.reshape(-1, *out.normals.shape[-3:]).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
            tv, blur = L.normal_tv_loss(nimg), L.normal_blur_loss(nimg)
            loss = loss + r.lambda_normal_tv * tv + r.lambda_normal_blur * blur
            stats.update({"reg/normal_tv": _f(tv), "reg/normal_blur": _f(blur)})
        return loss, stats

    @torch.no_grad()
    def reference_psnr(self) -> tuple[Tensor, dict[str, float]]:
        """The reference view rendered on white ([3, H, W] on the CPU) and its PSNR / MSE against the input."""
        p, dev = self.pcfg, self.device
        cams = reference_camera(p.ref_size, REF_RADIUS, p.views.fovy, dev)
        out = self.renderer.render_image(cams, self.reference_times(), RenderRequest(torch.ones(3, device=dev)))
        pred = out.rgb[0, 0].permute(2, 0, 1).float()
        mse = F.mse_loss(pred, self.ref.rgb.float().cpu()).item()
        return pred, {"ref_psnr": psnr_from_mse(mse), "ref_mse": mse}

    def validate(self, step: int) -> dict[str, float]:
        return self._evaluate(step)

    def final(self, step: int) -> dict[str, float]:
        return self._evaluate(step)

    def extra_state(self) -> dict[str, Any]:
        return {"inputs": self.inputs}

