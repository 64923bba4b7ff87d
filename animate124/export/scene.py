"""Load a trained scene (field + occupancy grid + render settings) from a run directory.

The phase is the latest finished one in the order refine > dynamic > static > fit (``report.json`` marks a phase
complete); when none is finished, the latest phase that holds a checkpoint is used with a warning (an interrupted run
can still be looked at). The checkpoint's ``state.json`` carries the resolved config, so nothing is guessed.

Example:
    >>> scene = load_scene("outputs/cat")
    >>> renderer = scene.renderer()            # VolumeRenderer
    >>> out = renderer.render_image(cams, times)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch
from omegaconf import OmegaConf
from torch import nn

from animate124.config.phases import scene_phases, static_phases
from animate124.config.schema import FieldConfig, RenderConfig
from animate124.errors import CheckpointError, InputError
from animate124.io.checkpoint import load_checkpoint, split_state
from animate124.io.handoff import find_checkpoint
from animate124.io.run_dir import load_inputs
from animate124.render.occupancy import OccupancyGrid

if TYPE_CHECKING:
    from animate124.render.volume import VolumeRenderer

log = logging.getLogger(__name__)

PHASE_ORDER = scene_phases()
"""Phases with a renderable field, latest first (refine, dynamic, static, fit; from config/phases.py::PHASES)."""
STATIC_PHASES = static_phases()
"""Phases whose field has no time input."""


@dataclass
class Scene:
    """A loaded scene."""

    field: nn.Module
    """The field (eval mode, no grad)."""
    occupancy: OccupancyGrid
    """Its occupancy grid."""
    render_cfg: RenderConfig
    """The run's render settings."""
    inputs: dict[str, Any]
    """``<run_dir>/inputs.json`` (image, prompt, static_prompt, case)."""
    phase: str
    """The phase the checkpoint came from."""
    config: dict[str, Any]
    """The resolved run config stored in the checkpoint."""
    checkpoint: Path
    """The checkpoint directory."""

    def __iter__(self) -> Iterator[Any]:
        """``field, occupancy, render_cfg, inputs = load_scene(run_dir)`` (the short form)."""
        return iter((self.field, self.occupancy, self.render_cfg, self.inputs))

    def renderer(self, chunk_rays: int | None = None) -> VolumeRenderer:
        """A VolumeRenderer over this scene (``chunk_rays`` overrides render.chunk_rays)."""
        from animate124.render.volume import VolumeRenderer

        cfg = self.render_cfg
        if chunk_rays is not None:
            cfg = RenderConfig(**{**cfg.__dict__, "chunk_rays": int(chunk_rays)})
        return VolumeRenderer(self.field, self.occupancy, cfg).to(self.occupancy.grid.device)


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def find_scene_checkpoint(run_dir: str | Path, phase: str | None = None) -> tuple[Path, str]:
    """The checkpoint to load and its phase (see the module docstring).

    Raises:
        InputError: ``run_dir`` does not exist.
        CheckpointError: no phase of the run holds a checkpoint (or the named one does not).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run_dir {run_dir} does not exist; pass the folder a training run wrote (run_dir=...)")
    if phase is not None:
        missing = f"{{run_dir}}/{phase} has no checkpoint; train it first or pick another phase="
    else:
        missing = (f"{{run_dir}} holds no checkpoint of {', '.join(PHASE_ORDER)}; run `python -m animate124.run "
                   "run_dir={run_dir}` first (or pass the right run_dir=)")
    ckpt, name = find_checkpoint(run_dir, (phase,) if phase is not None else PHASE_ORDER, missing=missing)
    assert name is not None  # found in a phase folder, not through init_from
    return ckpt, name


def pick_phase(run_dir: str | Path, phase: str | None = None) -> str:
    """The phase to load (see the module docstring; raises as :func:`find_scene_checkpoint`)."""
    return find_scene_checkpoint(run_dir, phase)[1]


def typed_config(schema: type, values: dict[str, Any] | None) -> Any:
    """A schema dataclass filled from a (saved) dict; unknown keys are ignored (older/newer checkpoints)."""
    base = OmegaConf.structured(schema)
    known = {k: v for k, v in (values or {}).items() if k in base}
    return OmegaConf.to_object(OmegaConf.merge(base, known))


def _occupancy_from_state(state: dict[str, torch.Tensor], render_cfg: RenderConfig, bound: float) -> OccupancyGrid:
    occ_state = split_state(state, "occupancy")
    if "grid" not in occ_state:
        raise CheckpointError("checkpoint has no occupancy grid (occupancy.grid); re-save it with the current code")
    slots, cells = occ_state["grid"].shape
    occ = OccupancyGrid.from_config(render_cfg, slots, bound, resolution=round(cells ** (1.0 / 3.0)))
    occ.load_state_dict(occ_state, strict=False)
    return occ


def load_scene(run_dir: str | Path, phase: str | None = None, device: str | torch.device = "cpu") -> Scene:
    """Load the field, occupancy grid and render settings of a run.

    Args:
        run_dir: the run directory.
        phase: refine | dynamic | static | fit, or None for the latest finished.
        device: where the modules go.

    Returns:
        The scene (field and grid in eval mode, ``requires_grad=False``).

    Raises:
        CheckpointError: no usable checkpoint, or one whose tensors do not fit its own config.
    """
    ckpt, name = find_scene_checkpoint(run_dir, phase)
    scene = scene_from_checkpoint(ckpt, device, dynamic=name not in STATIC_PHASES)
    scene.phase, scene.inputs = name, load_inputs(run_dir)
    return scene


def scene_from_checkpoint(ckpt: str | Path, device: str | torch.device = "cpu", dynamic: bool | None = None) -> Scene:
    """The scene stored in one checkpoint folder, built with the configs it was written with.

    Args:
        ckpt: a ``step-NNNNNNN`` folder.
        device: where the modules go.
        dynamic: whether the field takes time (None: from the checkpoint's phase; static phases have none).

    Returns:
        The scene (eval mode, ``requires_grad=False``; ``inputs`` empty, ``phase`` the checkpoint's own).
    """
    from animate124.fields import build_field, load_field_state

    ckpt = Path(ckpt)
    model_state, _, state = load_checkpoint(ckpt)
    config = state.get("config") or {}
    phase = str(state.get("phase") or "")
    field_cfg = typed_config(FieldConfig, config.get("field"))
    render_cfg = typed_config(RenderConfig, config.get("render"))
    field = build_field(field_cfg, dynamic=phase not in STATIC_PHASES if dynamic is None else dynamic)
    load_field_state(field, split_state(model_state, "field"))
    occupancy = _occupancy_from_state(model_state, render_cfg, float(field_cfg.bound))
    dev = torch.device(device)
    field.to(dev).eval().requires_grad_(False)
    occupancy.to(dev)
    return Scene(field, occupancy, render_cfg, {}, phase, config, ckpt)
