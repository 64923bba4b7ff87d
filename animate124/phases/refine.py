"""Semantic refinement phase (spec §8.3): the dynamic phase's losses + ControlNet-Tile SDS with the TI token.

Start: the latest checkpoint of ``<run_dir>/dynamic`` (``init_from=PATH`` overrides; a missing one is a
CheckpointError naming phase=dynamic). The trained field AND its occupancy grid continue from it exactly (the original
did not restore the occupancy's mean density, spec §14.16); the optimizer is fresh.

Frozen copy: :meth:`RefinePhase.build` — which the training loop calls BEFORE resuming — loads the same dynamic
checkpoint into a second field + occupancy grid, without gradients, never updated. So a resumed refine run still
conditions ControlNet on the dynamic phase's model, not on the partially refined one (the original copied the model
after auto-resume: spec §14.16).

Per SDS step, after the dynamic phase's terms (:meth:`DynamicPhase.extra_sds`): the chosen frames (default {0, 8})
are rendered by the frozen copy with the same cameras, times and :class:`~animate124.types.RenderRequest`
(background, shading, ambient, light, perturb) as the clip (passed along as a value: ``dynamic.ClipRender``),
and :class:`~animate124.guidance.controlnet.ControlNetTileGuidance` adds its loss. Prompt:
``guidance.controlnet.prompt`` or the caption with the subject replaced by the token (spec §11.3); the token file is
``guidance.controlnet.learned_embeds`` or this run's textual-inversion output or the case's ``learned_embeds.bin``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor, nn

from animate124.config.phases import RefinePhaseConfig
from animate124.data.case import find_subject, load_case, replace_subject
from animate124.export.scene import scene_from_checkpoint
from animate124.fields import load_field_state
from animate124.guidance.textual_inversion import load_learned_embeds
from animate124.io.checkpoint import load_checkpoint, split_state
from animate124.phases.dynamic import ClipRender, DynamicPhase, find_init_checkpoint
from animate124.phases.generation import Stats
from animate124.phases.textual_inversion import find_learned_embeds
from animate124.render.volume import VolumeRenderer
from animate124.types import GuidanceContext

if TYPE_CHECKING:
    from animate124.guidance.controlnet import ControlNetTileGuidance

log = logging.getLogger(__name__)

MISSING_DYNAMIC = ("no dynamic checkpoint in {run_dir}; run phase=dynamic first (same run_dir) or pass "
                   "init_from=PATH")


class RefinePhase(DynamicPhase):
    """Dynamic losses + ControlNet-Tile SDS conditioned on a frozen copy of the dynamic-phase model."""

    name = "refine"
    pcfg: RefinePhaseConfig

    def build(self) -> None:
        super().build()
        self.source_checkpoint = self._source_checkpoint()
        model_state, _, state = load_checkpoint(self.source_checkpoint, map_location=self.device)
        self._source = (model_state, state)
        frozen = scene_from_checkpoint(self.source_checkpoint, self.device, dynamic=True)
        self.frozen_field, self.frozen_occupancy = frozen.field, frozen.occupancy
        self.frozen_renderer = VolumeRenderer(self.frozen_field, self.frozen_occupancy, self.cfg.render)
        self.controlnet = self._controlnet_term()
        log.info("refine: frozen copy and start from %s; ControlNet %s", self.source_checkpoint,
                 "on" if self.controlnet is not None else "off")

    def _source_checkpoint(self) -> Path:
        """The dynamic checkpoint to start from and freeze (``init_from``, else this run's latest dynamic one)."""
        return find_init_checkpoint(self.run_dir, self.cfg.init_from, "dynamic", MISSING_DYNAMIC)

    def _controlnet_term(self) -> Optional[ControlNetTileGuidance]:
        g = self.cfg.guidance.controlnet
        if not g.enabled:
            return None
        from animate124.guidance.controlnet import ControlNetTileGuidance

        case = load_case(self.cfg.case)
        embeds = find_learned_embeds(g.learned_embeds, self.run_dir, case)
        prompt = g.prompt
        if prompt is None:
            caption = str(self.inputs["prompt"])
            if embeds is None:
                prompt = caption
            else:
                token = next(iter(load_learned_embeds(embeds)))
                subject = case.subject if case is not None and case.caption == caption else find_subject(caption)
                prompt = replace_subject(caption, subject, token)
        log.info("refine: ControlNet prompt %r, token file %s", prompt, embeds)
        self.controlnet_prompt = prompt
        inputs = replace(self.term_inputs(None, prompt), learned_embeds=embeds)
        return ControlNetTileGuidance(g, inputs)

    def init(self) -> None:
        """Fresh start: field and occupancy exactly as the dynamic checkpoint left them (fresh optimizer)."""
        model_state, state = self._source
        load_field_state(self.field, split_state(model_state, "field"))
        occ = split_state(model_state, "occupancy")
        if occ:
            self.occupancy.load_state_dict(occ)
        else:
            self.occupancy.update(self.renderer.density_fn, dynamic=True)
        self.init_checkpoint = str(self.source_checkpoint)

    def modules_to_save(self) -> dict[str, nn.Module]:
        """The trained field and occupancy only; the frozen copy is re-created from the dynamic checkpoint."""
        return {"field": self.field, "occupancy": self.occupancy}

    @torch.no_grad()
    def render_frozen(self, frames: list[int], clip: ClipRender) -> Tensor:
        """[B, n, 3, H, W] renders of the frozen copy for ``frames`` of ``clip`` (same rays, times and request)."""
        f = clip.times.shape[-1]
        idx = torch.as_tensor(frames, dtype=torch.long)
        cams = clip.cameras[idx] if len(clip.cameras) == f else clip.cameras
        times = clip.times[..., idx.to(clip.times.device)]
        out = self.frozen_renderer.render(cams, times, clip.request.frames(idx, f))
        return out.images().float().clamp(0.0, 1.0)

    def extra_sds(self, step: int, images: Tensor, ctx: GuidanceContext,
                  clip: ClipRender) -> tuple[Tensor, Stats]:
        if self.controlnet is None:
            return images.new_zeros(()), {}
        frames = self.controlnet.frame_indices(images.shape[1])
        ctx.control_images = self.render_frozen(frames, clip)
        g = self.controlnet(images, ctx)
        return g.loss, dict(g.stats)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "frozen_from": str(self.source_checkpoint),
                "controlnet_prompt": getattr(self, "controlnet_prompt", None)}


PHASE = RefinePhase
