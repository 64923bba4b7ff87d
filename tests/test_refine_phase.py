"""Refine phase (phases/refine.py): ControlNet on a frozen copy of the dynamic model; gradient and resume behaviour."""

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.errors import CheckpointError
from animate124.fields import build_field
from animate124.guidance.textual_inversion import save_learned_embeds
from animate124.io.checkpoint import latest_checkpoint, load_checkpoint, merge_states, save_checkpoint, split_state
from animate124.phases.base import config_to_dict, train
from animate124.phases.dynamic import ClipRender
from animate124.phases.refine import RefinePhase
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import RenderRequest

# Small everything: tiny models, 4 frames of 16² rendered (48 steps per ray), 64² guidance inputs (8×8 latents with the f8 tiny VAE).
SMALL = [
    "phase=refine", "models=tiny", "field=small", "render=fast", "render.grid_resolution=16", "render.max_steps=48", "case=panda-dance",
    "phase.num_frames=4", "phase.render_size=16", "phase.ref_size=16", "phase.known_interval=100",
    "phase.val_every=0", "phase.val_frames=2", "phase.val_size=16", "phase.time_slots=2", "phase.progress=false",
    "guidance.video.height=64", "guidance.video.width=64", "guidance.zero123.enabled=false",
    "guidance.controlnet.size=64",
]


def _setup(tmp_path, *overrides, with_dynamic=True):
    root = tmp_path / "bench"
    (root / "panda-dance").mkdir(parents=True)
    (root / "benchmark.json").write_text(json.dumps([{"name": "panda-dance", "caption": "a panda is dancing"}]))
    yy, xx = np.mgrid[:32, :32]
    alpha = (((yy - 16) ** 2 + (xx - 16) ** 2) < 100).astype(np.uint8) * 255
    rgba = np.stack([alpha, alpha // 2, alpha // 3, alpha], -1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "panda-dance" / "rgba.png")
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("run", overrides=[*SMALL, f"case.root={root}",
                                                            *overrides]))
    run_dir = tmp_path / "run"
    if with_dynamic:  # a dynamic-phase checkpoint: random dynamic field (blob density) + its occupancy
        field = build_field(cfg.field, dynamic=True)
        occ = OccupancyGrid(cfg.render.grid_resolution, cfg.phase.time_slots, cfg.field.bound)
        occ.update(VolumeRenderer(field, occ, cfg.render).density_fn, dynamic=True)
        save_checkpoint(run_dir / "dynamic" / "checkpoints", 6, merge_states({"field": field, "occupancy": occ}),
                        None, {"phase": "dynamic", "config": config_to_dict(cfg)})
    # this run's textual-inversion token (32-d like the tiny text encoder)
    save_learned_embeds(run_dir / "textual_inversion" / "learned_embeds.safetensors", {"_panda_dance_": torch.randn(32)})
    return cfg, run_dir


def _dynamic_field_state(run_dir):
    model_state, _, _ = load_checkpoint(latest_checkpoint(run_dir / "dynamic" / "checkpoints"))
    return split_state(model_state, "field")


def _assert_equal_state(module, state):
    got = module.state_dict()
    for k, v in state.items():
        assert torch.equal(got[k].cpu(), v.cpu()), k


def test_gradient_reaches_only_the_trained_field(tmp_path):
    cfg, run_dir = _setup(tmp_path)
    phase = RefinePhase(cfg, run_dir, torch.device("cpu"))
    phase.build()
    phase.init()
    assert phase.controlnet_prompt == "a _panda_dance_ is dancing"
    out = phase.train_step(1)  # an SDS step (known_interval=100)
    assert "controlnet/loss" in out.stats and "video/loss" in out.stats
    out.loss.backward()
    grads = [p.grad for p in phase.field.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(not p.requires_grad and p.grad is None for p in phase.frozen_field.parameters())
    assert all(p.grad is None for p in phase.controlnet.parameters())
    # the frozen copy renders the chosen frames {0, 2} of the clip with the clip's cameras and times
    clip, cams, _, _ = phase.sample_clip()
    request = RenderRequest(background=torch.rand(3), shading="lambertian", ambient=0.5,
                            light_dir=torch.nn.functional.normalize(torch.randn(1, 4, 3), dim=-1))
    torch.manual_seed(5)  # the same ray jitter (perturb) for both renders below
    control = phase.render_frozen([0, 2], ClipRender(cams, clip.times.view(1, -1), request))
    assert control.shape == (1, 2, 3, 16, 16)
    # ... exactly as the frozen renderer renders those frames when asked directly (the request is a value)
    idx = torch.tensor([0, 2])
    torch.manual_seed(5)
    direct = phase.frozen_renderer.render(cams[idx], clip.times.view(1, -1)[:, idx],
                                          RenderRequest(background=request.background, shading="lambertian", ambient=0.5,
                                                        light_dir=request.light_dir[:, idx]))
    torch.testing.assert_close(control, direct.images().float().clamp(0.0, 1.0))


def test_frozen_copy_unchanged_by_training_and_resume(tmp_path):
    cfg, run_dir = _setup(tmp_path, "phase.max_steps=2")
    dyn = _dynamic_field_state(run_dir)
    phase = RefinePhase(cfg, run_dir, torch.device("cpu"))
    report = train(phase)
    assert report["complete"] and "controlnet/loss" in report["last_train_stats"]
    _assert_equal_state(phase.frozen_field, dyn)
    changed = [k for k, v in phase.field.state_dict().items() if k in dyn and not torch.equal(v.cpu(), dyn[k])]
    assert changed  # the trained field moved away from the dynamic checkpoint
    refined = {k: v.clone() for k, v in phase.field.state_dict().items()}
    # resume with more steps: the frozen copy comes from the dynamic checkpoint again, not from the refined model
    cfg.phase.max_steps = 3
    phase2 = RefinePhase(cfg, run_dir, torch.device("cpu"))
    report2 = train(phase2)
    assert report2["start_step"] == 2 and report2["step"] == 3
    _assert_equal_state(phase2.frozen_field, dyn)
    assert any(not torch.equal(refined[k], dyn[k]) for k in changed)


def test_missing_dynamic_checkpoint_names_the_phase(tmp_path):
    cfg, run_dir = _setup(tmp_path, with_dynamic=False)
    with pytest.raises(CheckpointError, match="phase=dynamic"):
        RefinePhase(cfg, run_dir, torch.device("cpu")).build()


def test_init_from_overrides_the_run_dir(tmp_path):
    cfg, other = _setup(tmp_path)  # "other" holds a dynamic checkpoint
    cfg.init_from = str(other)
    phase = RefinePhase(cfg, tmp_path / "fresh_run", torch.device("cpu"))
    assert phase._source_checkpoint() == latest_checkpoint(other / "dynamic" / "checkpoints")
    cfg.init_from = str(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="init_from"):
        RefinePhase(cfg, tmp_path / "fresh_run", torch.device("cpu"))._source_checkpoint()
