"""Semantic refinement phase (spec §8.3): the dynamic phase's losses + ControlNet-Tile SDS with the TI token.

Start: the latest checkpoint of ``<run_dir>/dynamic`` (``init_from=PATH`` overrides; a missing one is a
CheckpointError naming phase=dynamic). The trained field AND its occupancy grid continue from it exactly (the original
did not restore the occupancy's mean density, spec §14.16); the optimizer is fresh.

Frozen copy: :meth:`RefinePhase.build` — which the training loop calls BEFORE resuming — loads the same dynamic
checkpoint into a second field + occupancy grid, without gradients, never updated. So a resumed refine run still
conditions ControlNet on the dynamic phase's model, not on the partially refined one (the original copied the model
after auto-resume: spec §14.16).

Per SDS step, after the dynamic phase's terms (:meth:`DynamicPhase.extra_sds`): the chosen frames (default {0, 8})
are rendered by the frozen copy with the same cameras, times, background, shading, ambient and light as the clip
(the recorded arguments of the clip's render call), and :class:`~animate124.guidance.controlnet.ControlNetTileGuidance`
adds its loss. Prompt: ``guidance.controlnet.prompt`` or the caption with the subject replaced by the token (spec
§11.3); the token file is ``guidance.controlnet.learned_embeds`` or this run's textual-inversion output or the case's
``learned_embeds.bin``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from animate124.data.case import find_subject, load_case, replace_subject
from animate124.errors import CheckpointError
from animate124.fields import build_field, load_field_state
from animate124.guidance.textual_inversion import load_learned_embeds
from animate124.io.checkpoint import load_checkpoint, split_state
from animate124.phases.dynamic import DynamicPhase, _field_config, find_init_checkpoint
from animate124.phases.static import Stats
from animate124.phases.textual_inversion import find_learned_embeds
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import GuidanceContext, RenderOutput

log = logging.getLogger(__name__)


class _RecordingRenderer:
    """Forwards to a VolumeRenderer and remembers the arguments of the last training ``render`` call."""

    def __init__(self, renderer: VolumeRenderer) -> None:
        self._renderer = renderer
        self.last_call: Optional[dict[str, Any]] = None

    def render(self, cameras: Any, times: Any = None, **kwargs: Any) -> RenderOutput:
        self.last_call = {"cameras": cameras, "times": times, **kwargs}
        return self._renderer.render(cameras, times, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._renderer, name)


def _select_frames(value: Any, idx: Tensor, num_frames: int) -> Any:
    """Keep frames ``idx`` of a per-frame argument ([B, F, ...] tensors; other values unchanged)."""
    if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[1] == num_frames:
        return value[:, idx.to(value.device)]
    return value


class RefinePhase(DynamicPhase):
    """Dynamic losses + ControlNet-Tile SDS conditioned on a frozen copy of the dynamic-phase model."""

    name = "refine"

    def build(self) -> None:
        super().build()
        self.renderer = _RecordingRenderer(self.renderer)  # type: ignore[assignment]
        self.source_checkpoint = self._source_checkpoint()
        model_state, _, state = load_checkpoint(self.source_checkpoint, map_location=self.device)
        self._source = (model_state, state)
        self.frozen_field = build_field(_field_config(state, self.cfg.field), dynamic=True).to(self.device)
        load_field_state(self.frozen_field, split_state(model_state, "field"))
        self.frozen_occupancy = self._new_occupancy()
        self.frozen_occupancy.load_state_dict(split_state(model_state, "occupancy"))
        for module in (self.frozen_field, self.frozen_occupancy):
            module.requires_grad_(False)
            module.eval()
        self.frozen_renderer = VolumeRenderer(self.frozen_field, self.frozen_occupancy, self.cfg.render)
        self.controlnet = self._controlnet_term()
        log.info("refine: frozen copy and start from %s; ControlNet %s", self.source_checkpoint,
                 "on" if self.controlnet is not None else "off")

    def _new_occupancy(self) -> OccupancyGrid:
        cfg, p = self.cfg, self.pcfg
        return OccupancyGrid(cfg.render.grid_resolution, p.time_slots, cfg.field.bound, cfg.render.occupancy_decay,
                             cfg.render.density_thresh, cfg.render.update_fraction).to(self.device)

    def _source_checkpoint(self) -> Path:
        try:
            return find_init_checkpoint(self.run_dir, self.cfg.init_from, source_phase="dynamic")
        except CheckpointError as exc:
            if self.cfg.init_from:
                raise
            raise CheckpointError(f"no dynamic checkpoint in {self.run_dir}; run phase=dynamic first (same run_dir) "
                                  f"or pass init_from=PATH") from exc

    def _controlnet_term(self) -> Optional[nn.Module]:
        g = self.cfg.guidance.controlnet
        if not g.enabled:
            return None
        from animate124.guidance.controlnet import build_controlnet_guidance

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
        return build_controlnet_guidance(g, self.cfg.models, prompt, embeds, self.device)

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
    def render_frozen(self, frames: list[int]) -> Tensor:
        """[B, n, 3, H, W] renders of the frozen copy for ``frames`` of the current clip (same rays and shading)."""
        call = self.renderer.last_call  # type: ignore[attr-defined]
        if call is None:
            raise RuntimeError("render_frozen needs a training render of the clip first")
        cams, times = call["cameras"], call["times"]
        f = times.shape[-1] if isinstance(times, Tensor) else len(cams)
        idx = torch.as_tensor(frames, dtype=torch.long)
        kwargs = {k: _select_frames(v, idx, f) for k, v in call.items() if k not in ("cameras", "times")}
        sel_times = times[..., idx.to(times.device)] if isinstance(times, Tensor) else None
        sel_cams = cams[idx] if len(cams) == f else cams
        out = self.frozen_renderer.render(sel_cams, sel_times, **kwargs)
        return out.images().float().clamp(0.0, 1.0)

    def extra_sds(self, step: int, images: Tensor, ctx: GuidanceContext,
                  out: RenderOutput) -> tuple[Tensor, Stats]:
        if self.controlnet is None:
            return images.new_zeros(()), {}
        frames = self.controlnet.frame_indices(images.shape[1])
        ctx.control_images = self.render_frozen(frames)
        g = self.controlnet(images, ctx)
        return g.loss, dict(g.stats)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "frozen_from": str(self.source_checkpoint),
                "controlnet_prompt": getattr(self, "controlnet_prompt", None)}


PHASE = RefinePhase
