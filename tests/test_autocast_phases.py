"""One train step of every phase under CPU bf16 autocast: the code path CUDA AMP takes (issue 11).

Each test builds the phase with tiny models, runs the phase's own ``train_step`` inside
``torch.autocast("cpu", dtype=torch.bfloat16)`` exactly as ``phases.base.train`` does on CUDA (fp16 there), then the
backward, and asserts a finite loss and finite, non-zero gradients. CPU autocast casts a different op list than CUDA
autocast (both cast matmul/conv/einsum/linear), so this catches the mixed-dtype class of bugs, not fp16 overflow.
"""

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.fields import build_field
from animate124.io.checkpoint import merge_states, save_checkpoint
from animate124.phases.base import Phase, StepOutput, config_to_dict
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


def _cfg(*overrides):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


def _image(root) -> str:
    yy, xx = np.mgrid[:32, :32]
    alpha = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).astype(np.uint8) * 255
    rgba = np.stack([alpha, alpha // 2, alpha // 3, alpha], -1).astype(np.uint8)
    path = root / "ball.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return str(path)


def _checkpoint(cfg, run_dir, phase: str, dynamic: bool) -> None:
    """A checkpoint of ``phase`` with a random field and its occupancy (what the earlier phase would leave)."""
    field = build_field(cfg.field, dynamic=dynamic)
    occ = OccupancyGrid(cfg.render.grid_resolution, cfg.phase.time_slots if dynamic else 1, cfg.field.bound)
    occ.update(VolumeRenderer(field, occ, cfg.render).density_fn, dynamic=dynamic)
    save_checkpoint(run_dir / phase / "checkpoints", 2, merge_states({"field": field, "occupancy": occ}), None,
                    {"phase": phase, "config": config_to_dict(cfg)})


def step_under_autocast(phase: Phase, step: int, init: bool = True) -> StepOutput:
    """build → init → the phase's train_step under bf16 autocast → backward; checks loss and gradients."""
    phase.build()
    if init:
        phase.init()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = phase.train_step(step)
    assert out.loss.shape == () and torch.isfinite(out.loss.detach()), out.loss
    out.loss.backward()
    params = [p for g in phase.optimizer.param_groups for p in g["params"]]
    grads = [p.grad for p in params if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)
    return out


def test_textual_inversion_step(tmp_path):
    from animate124.phases.textual_inversion import TextualInversionPhase

    cfg = _cfg("phase=textual_inversion", "models=tiny", f"image={_image(tmp_path)}", "prompt=a ball",
               "phase.batch_size=1", "phase.resolution=64", "phase.progress=false")
    out = step_under_autocast(TextualInversionPhase(cfg, tmp_path / "run"), 0, init=False)
    assert "ti_norm" in out.stats


@pytest.mark.parametrize("step", [0, 1], ids=["reference", "sds"])
def test_static_step(tmp_path, step):
    from animate124.phases.static import StaticPhase

    cfg = _cfg("phase=static", *TINY, *GUIDANCE, f"image={_image(tmp_path)}", "prompt=a ball",
               "phase.known_iters=1", "phase.known_interval=100", "phase.normal_shading_ratio=0.0",
               "phase.shading.textureless_rate=0.0", "phase.max_steps=10")
    out = step_under_autocast(StaticPhase(cfg, tmp_path / "run"), step, init=False)
    if step == 1:  # lambertian shading (normals) and both SDS terms ran
        assert {"sd/loss", "zero123/loss", "reg/orient"} <= set(out.stats)


@pytest.mark.parametrize("kind", ["text", "image", "both"])
def test_dynamic_step(tmp_path, kind):
    from animate124.phases.dynamic import DynamicPhase

    cfg = _cfg("phase=dynamic", *TINY, *GUIDANCE, *VIDEO, f"image={_image(tmp_path)}", "prompt=a ball is bouncing",
               f"guidance.video.kind={kind}")
    run_dir = tmp_path / "run"
    _checkpoint(cfg, run_dir, "static", dynamic=False)
    out = step_under_autocast(DynamicPhase(cfg, run_dir), 1)
    expected = {"text": {"video/loss"}, "image": {"image_video/loss"}, "both": {"video/loss", "image_video/loss"}}
    assert expected[kind] | {"zero123/loss"} <= set(out.stats)


def test_refine_step(tmp_path):
    from animate124.guidance.textual_inversion import save_learned_embeds
    from animate124.phases.refine import RefinePhase

    root = tmp_path / "bench"
    (root / "panda-dance").mkdir(parents=True)
    (root / "benchmark.json").write_text(json.dumps([{"name": "panda-dance", "caption": "a panda is dancing"}]))
    Image.open(_image(tmp_path)).save(root / "panda-dance" / "rgba.png")
    cfg = _cfg("phase=refine", *TINY, *GUIDANCE, *VIDEO, "case=panda-dance", f"case.root={root}",
               "guidance.zero123.enabled=false")
    run_dir = tmp_path / "run"
    _checkpoint(cfg, run_dir, "dynamic", dynamic=True)
    save_learned_embeds(run_dir / "textual_inversion" / "learned_embeds.safetensors", {"_panda_dance_": torch.randn(32)})
    out = step_under_autocast(RefinePhase(cfg, run_dir), 1)
    assert {"video/loss", "controlnet/loss"} <= set(out.stats)


def test_fit_step(tmp_path):
    from animate124.data.synthetic import make_synthetic_scene
    from animate124.phases.fit import FitPhase

    scene = make_synthetic_scene(tmp_path / "scene", size=16, n_train=4, n_test=1, n_val=1)
    cfg = _cfg("phase=fit", f"data.path={scene}", "field=small", "render=fast", "render.grid_resolution=16",
               "phase.batch_rays=64", "phase.progress=false")
    step_under_autocast(FitPhase(cfg, tmp_path / "run"), 0)
