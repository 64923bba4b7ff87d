"""The dynamic phase (phases/dynamic.py): static → dynamic hand-off, a tiny end-to-end run, the missing-static error.

A 2-step static run (reference losses only) in a temp run dir provides the checkpoint; every size is tiny so the file
runs in seconds on a shared CPU.
"""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.errors import CheckpointError
from animate124.export.writers import read_frames
from animate124.fields import build_field, load_field_state
from animate124.io.checkpoint import latest_checkpoint, load_checkpoint, split_state
from animate124.phases.base import train
from animate124.phases.dynamic import DynamicPhase, find_init_checkpoint
from animate124.phases.static import StaticPhase
from animate124.render.cameras import Cameras
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import VolumeRenderer
from animate124.types import RenderRequest

RENDER_ATOL = 1e-5  # same samples, same features (keyframes are exact copies): only fp32 summation-order noise

COMMON = [
    "models=tiny", "field=small", "render=fast", "render.grid_resolution=16", "render.max_steps=64",
    "prompt=a ball is bouncing", "phase.val_every=0", "phase.ref_size=16", "phase.render_size=16",
    "field.num_levels=4", "field.keyframes=4", "field.log2_table_size=10", "field.max_resolution=64",
    "field.hidden_dim=16",
]
STATIC = ["phase=static", "phase.max_steps=2", "phase.known_iters=2", "phase.val_size=16", "phase.val_views=1",
          "guidance.sd.enabled=false", "guidance.zero123.enabled=false"]
DYNAMIC = ["phase=dynamic", "phase.num_frames=3", "phase.time_slots=2", "phase.val_frames=3", "phase.val_size=16",
           "guidance.video.height=32", "guidance.video.width=32", "guidance.zero123.resolution=32"]


def _cfg(*overrides):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


@pytest.fixture(scope="module")
def static_run(tmp_path_factory):
    """A run dir with a finished 2-step static phase on a synthetic RGBA disc."""
    root = tmp_path_factory.mktemp("dyn")
    yy, xx = np.mgrid[0:32, 0:32]
    rgba = np.zeros((32, 32, 4), np.uint8)
    inside = (xx - 16) ** 2 + (yy - 16) ** 2 < 9**2
    rgba[inside] = (220, 60, 40, 255)
    image = root / "ball.png"
    iio.imwrite(image, rgba)
    run_dir = root / "run"
    torch.manual_seed(0)
    train(StaticPhase(_cfg(*COMMON, *STATIC, f"image={image}"), run_dir))
    return run_dir, image


def test_missing_static_checkpoint_names_the_phase(tmp_path, static_run):
    _, image = static_run
    phase = DynamicPhase(_cfg(*COMMON, *DYNAMIC, f"image={image}", "guidance.video.enabled=false",
                              "guidance.zero123.enabled=false"), tmp_path / "empty_run")
    phase.build()
    with pytest.raises(CheckpointError, match="no static checkpoint in .*run phase=static first or pass init_from"):
        phase.init()


def test_init_renders_like_the_static_checkpoint_at_every_time(static_run):
    run_dir, image = static_run
    cfg = _cfg(*COMMON, *DYNAMIC, f"image={image}", "guidance.video.enabled=false", "guidance.zero123.enabled=false")
    phase = DynamicPhase(cfg, run_dir)
    phase.build()
    phase.init()
    # The static field and its occupancy, straight from the checkpoint.
    model_state, _, state = load_checkpoint(latest_checkpoint(run_dir / "static" / "checkpoints"))
    static = build_field(cfg.field, dynamic=False)
    load_field_state(static, split_state(model_state, "field"))
    static_occ = OccupancyGrid(16, 1)
    static_occ.load_state_dict(split_state(model_state, "occupancy"))
    # March the same cells for both (the static bitfield in every slot), so only the fields can differ.
    shared = OccupancyGrid(16, cfg.phase.time_slots)
    shared.bitfield.copy_(static_occ.bitfield.expand_as(shared.bitfield))
    cams = Cameras.from_spherical(torch.tensor([0.0, 20.0]), torch.tensor([0.0, 120.0]), 1.8, 16)
    white = torch.ones(3)
    want = VolumeRenderer(static, static_occ, cfg.render).render_image(cams, None, RenderRequest(background=white)).rgb
    dyn = VolumeRenderer(phase.field, shared, cfg.render)
    for tau in (0.0, 0.3, 0.5, 0.77, 1.0):
        got = dyn.render_image(cams, torch.full((2, 1), tau), RenderRequest(background=white)).rgb
        torch.testing.assert_close(got, want, atol=RENDER_ATOL, rtol=0)
    assert float(want.std()) > 1e-3  # not a blank image
    # Occupancy: re-estimated once at the slot centres (k + 0.5)/S, not copied from the static grid (spec §14.1).
    torch.testing.assert_close(phase.occupancy.slot_times, torch.tensor([0.25, 0.75]))
    assert int(phase.occupancy.num_updates) == 1 and bool((phase.occupancy.mean_density > 0).all())
    # Fresh Adam with the original's groups: grids lr·10, MLP lr.
    groups = {g["name"]: g["lr"] for g in phase.optimizer.param_groups}
    assert groups == {"grid": pytest.approx(1e-2), "mlp": pytest.approx(1e-3)} and not phase.optimizer.state


def test_tiny_dynamic_run_writes_videos_checkpoint_report(static_run):
    run_dir, image = static_run
    # Every clip starts at τ = 0 here so that the Zero-1-to-3 path on frame 0 runs too.
    cfg = _cfg(*COMMON, *DYNAMIC, f"image={image}", "phase.max_steps=3", "phase.clip.start_zero_rate=1.0",
               "phase.clip.end_one_rate=0.0")
    report = train(DynamicPhase(cfg, run_dir))
    assert report["complete"] and report["step"] == 3
    stats = report["last_train_stats"]
    assert stats["ref_step"] == 0.0 and "video/loss" in stats and "zero123/loss" in stats and "reg/time_tv" in stats
    assert np.isfinite(stats["loss"])
    videos = run_dir / "dynamic" / "videos"
    for tag in ("fixed", "orbit"):
        frames = read_frames(videos / f"step_0000003_{tag}.mp4")
        assert frames.shape[0] == 3 and frames.shape[1] % 16 == 0 and frames.shape[2] % 16 == 0
    assert latest_checkpoint(run_dir / "dynamic" / "checkpoints") is not None
    saved = json.loads((run_dir / "dynamic" / "report.json").read_text())
    assert saved["complete"] and "ref_psnr" in saved["metrics"]


def test_find_init_checkpoint_accepts_step_checkpoints_phase_and_run_dirs(tmp_path):
    run = tmp_path / "other"
    for step in (3, 12):
        d = run / "static" / "checkpoints" / f"step-{step:07d}"
        d.mkdir(parents=True)
        (d / "state.json").write_text("{}")
    newest = run / "static" / "checkpoints" / "step-0000012"
    for given in (newest, run / "static" / "checkpoints", run / "static", run):
        assert find_init_checkpoint(tmp_path / "this_run", str(given)) == newest
    assert find_init_checkpoint(run, None) == newest  # no init_from: <run_dir>/static/checkpoints
    with pytest.raises(CheckpointError, match="init_from=.* holds no checkpoint"):
        find_init_checkpoint(run, str(tmp_path / "nowhere"))
