"""One training step of every phase with tiny models: the cases the GPU-path guards share (issue 11).

``PHASE_STEPS`` names each step kind (textual inversion, the static reference and SDS steps, the dynamic step with
each video prior, refine, fit). :func:`prepare` writes what the phase needs on disk (input image, the earlier phase's
checkpoint, the learned token) with real CPU tensors; :func:`PhaseStep.make` then builds the phase on any device, so
the same case runs under CPU autocast (tests/test_autocast_phases.py) and traced on fake CUDA
(tests/test_fake_cuda_phases.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.fields import build_field
from animate124.io.checkpoint import merge_states, save_checkpoint
from animate124.phases.base import Phase, config_to_dict
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer

TINY = [
    "models=tiny", "field=small", "render=fast", "render.grid_resolution=16", "render.max_steps=48",
    "field.num_levels=4", "field.keyframes=4", "field.log2_table_size=10", "field.max_resolution=64",
    "field.hidden_dim=16", "phase.ref_size=16", "phase.render_size=16", "phase.progress=false", "phase.val_every=0",
]
GUIDANCE = ["guidance.sd.resolution=64", "guidance.zero123.resolution=64", "guidance.video.height=64",
            "guidance.video.width=64", "guidance.image_video.height=32", "guidance.image_video.width=32",
            "guidance.controlnet.size=64"]
VIDEO = ["phase.num_frames=3", "phase.time_slots=2", "phase.known_interval=1000", "phase.dynamic_cam_rate=0.0",
         "phase.clip.start_zero_rate=1.0", "phase.clip.end_one_rate=0.0"]
STATIC = ["phase.known_iters=1", "phase.known_interval=100", "phase.normal_shading_ratio=0.0",
          "phase.shading.textureless_rate=0.0", "phase.max_steps=10"]

PHASE_STEPS = ["textual_inversion", "static-reference", "static-sds", "dynamic-text", "dynamic-image", "dynamic-both",
               "refine", "fit"]
"""Every kind of training step: ``<phase>[-<variant>]``."""

EXPECTED_STATS = {
    "textual_inversion": {"ti_norm"},
    "static-reference": {"ref/rgb"},
    "static-sds": {"sd/loss", "zero123/loss", "reg/orient"},  # lambertian shading (normals) and both SDS terms
    "dynamic-text": {"video/loss", "zero123/loss"},
    "dynamic-image": {"image_video/loss", "zero123/loss"},
    "dynamic-both": {"video/loss", "image_video/loss", "zero123/loss"},
    "refine": {"video/loss", "controlnet/loss"},
    "fit": {"psnr"},
}
"""Stats a step of each kind reports: proof that the step ran the terms the case is about."""


def compose_config(*overrides: str):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


def ball_image(root: Path) -> str:
    """A 32² RGBA picture of a ball (the input image of the generation phases)."""
    yy, xx = np.mgrid[:32, :32]
    alpha = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).astype(np.uint8) * 255
    rgba = np.stack([alpha, alpha // 2, alpha // 3, alpha], -1).astype(np.uint8)
    path = root / "ball.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return str(path)


def write_checkpoint(cfg, run_dir: Path, phase: str, dynamic: bool) -> None:
    """A checkpoint of ``phase`` with a random field and its occupancy (what the earlier phase would leave)."""
    field = build_field(cfg.field, dynamic=dynamic)
    occ = OccupancyGrid(cfg.render.grid_resolution, cfg.phase.time_slots if dynamic else 1, cfg.field.bound)
    occ.update(VolumeRenderer(field, occ, cfg.render).density_fn, dynamic=dynamic)
    save_checkpoint(run_dir / phase / "checkpoints", 2, merge_states({"field": field, "occupancy": occ}), None,
                    {"phase": phase, "config": config_to_dict(cfg)})


@dataclass
class PhaseStep:
    """A prepared case: the phase class, its config and run dir, the step number and whether ``init()`` runs."""

    name: str
    phase_cls: type[Phase]
    cfg: object
    run_dir: Path
    step: int
    init: bool

    def make(self, device: Optional[torch.device] = None) -> Phase:
        """The phase built (and initialised when the case needs it) on ``device`` (default: the config's)."""
        phase = self.phase_cls(self.cfg, self.run_dir, device=device)  # type: ignore[arg-type]
        phase.build()
        if self.init:
            phase.init()
        return phase


def prepare(name: str, tmp_path: Path, extra: tuple[str, ...] = ()) -> PhaseStep:
    """Write the inputs of case ``name`` under ``tmp_path`` (real CPU tensors) and return it ready to build.

    ``extra``: more config overrides, applied last."""
    if name not in PHASE_STEPS:
        raise KeyError(f"unknown phase step {name!r}; one of {PHASE_STEPS}")
    phase, _, variant = name.partition("-")
    run_dir = tmp_path / "run"
    if phase == "textual_inversion":
        from animate124.phases.textual_inversion import TextualInversionPhase

        cfg = compose_config("phase=textual_inversion", "models=tiny", f"image={ball_image(tmp_path)}",
                             "prompt=a ball", "phase.batch_size=1", "phase.resolution=64", "phase.progress=false", *extra)
        return PhaseStep(name, TextualInversionPhase, cfg, run_dir, 0, init=False)
    if phase == "static":
        from animate124.phases.static import StaticPhase

        cfg = compose_config("phase=static", *TINY, *GUIDANCE, *STATIC, f"image={ball_image(tmp_path)}",
                             "prompt=a ball", *extra)
        return PhaseStep(name, StaticPhase, cfg, run_dir, 0 if variant == "reference" else 1, init=False)
    if phase == "dynamic":
        from animate124.phases.dynamic import DynamicPhase

        cfg = compose_config("phase=dynamic", *TINY, *GUIDANCE, *VIDEO, f"image={ball_image(tmp_path)}",
                             "prompt=a ball is bouncing", f"guidance.video.kind={variant}", *extra)
        write_checkpoint(cfg, run_dir, "static", dynamic=False)
        return PhaseStep(name, DynamicPhase, cfg, run_dir, 1, init=True)
    if phase == "refine":
        from animate124.guidance.textual_inversion import save_learned_embeds
        from animate124.phases.refine import RefinePhase

        root = tmp_path / "bench"
        (root / "panda-dance").mkdir(parents=True)
        (root / "benchmark.json").write_text(json.dumps([{"name": "panda-dance", "caption": "a panda is dancing"}]))
        Image.open(ball_image(tmp_path)).save(root / "panda-dance" / "rgba.png")
        cfg = compose_config("phase=refine", *TINY, *GUIDANCE, *VIDEO, "case=panda-dance", f"case.root={root}",
                             "guidance.zero123.enabled=false", *extra)
        write_checkpoint(cfg, run_dir, "dynamic", dynamic=True)
        save_learned_embeds(run_dir / "textual_inversion" / "learned_embeds.safetensors",
                            {"_panda_dance_": torch.randn(32)})
        return PhaseStep(name, RefinePhase, cfg, run_dir, 1, init=True)
    from animate124.data.synthetic import make_synthetic_scene
    from animate124.phases.fit import FitPhase

    scene = make_synthetic_scene(tmp_path / "scene", size=16, n_train=4, n_test=1, n_val=1)
    cfg = compose_config("phase=fit", f"data.path={scene}", "field=small", "render=fast", "render.grid_resolution=16",
                         "phase.batch_rays=64", "phase.progress=false", *extra)
    return PhaseStep(name, FitPhase, cfg, run_dir, 0, init=True)
