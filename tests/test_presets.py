"""``preset=smoke|cpu|gpu24|gpu12`` (configs/preset/): one switch for a single phase and for phase=all alike."""

import logging

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.pace import PaceWatch

# The ~30 overrides the CPU smoke chain needed before presets (tests/test_phase_all.py used them); preset=smoke must
# compose to exactly the same config.
SMOKE_EXPLICIT = [
    "models=tiny", "field=small", "render=fast", "render.grid_resolution=32", "render.max_steps=64",
    "phase.textual_inversion.max_steps=2", "phase.textual_inversion.batch_size=1",
    "phase.textual_inversion.resolution=64",
    "phase.static.max_steps=4", "phase.static.render_size=32", "phase.static.ref_size=32",
    "phase.static.known_iters=1", "phase.static.val_views=2", "phase.static.val_size=32",
    "phase.dynamic.max_steps=6", "phase.dynamic.num_frames=4", "phase.dynamic.render_size=32",
    "phase.dynamic.ref_size=32", "phase.dynamic.checkpoint_every=2", "phase.dynamic.val_frames=4",
    "phase.dynamic.val_size=32",
    "phase.refine.max_steps=3", "phase.refine.num_frames=4", "phase.refine.render_size=32",
    "phase.refine.ref_size=32", "phase.refine.val_frames=4", "phase.refine.val_size=32",
    "guidance.sd.resolution=64", "guidance.zero123.resolution=64", "guidance.video.height=64",
    "guidance.video.width=64", "guidance.controlnet.size=64",
    "phase.video_frames=8", "phase.video_size=32",
]
SINGLE = ("textual_inversion", "static", "dynamic", "refine")


def _compose(*overrides):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return compose("run", overrides=list(overrides))


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=False)


def test_smoke_is_the_old_chain_overrides():
    assert _plain(_compose("preset=smoke", "case=panda-dance")) == _plain(_compose(*SMOKE_EXPLICIT, "case=panda-dance"))


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_a_preset_applies_to_a_single_phase_like_to_phase_all(preset):
    chain = _compose(f"preset={preset}")
    for name in SINGLE:
        single = _compose(f"preset={preset}", f"phase={name}")
        assert _plain(single.phase) == _plain(chain.phase[name]), name
        assert _plain(single.field) == _plain(chain.field) and _plain(single.guidance) == _plain(chain.guidance)
    assert OmegaConf.to_object(_compose(f"preset={preset}", "phase=fit")).phase.max_steps > 0


def test_smoke_fit_and_overrides_win():
    cfg = OmegaConf.to_object(_compose("preset=smoke", "phase=fit", "phase.max_steps=7", "field=hash"))
    assert cfg.phase.max_steps == 7 and cfg.phase.batch_rays == 64 and cfg.models.kind.value == "tiny"
    assert cfg.field.encoding == "hash" and cfg.field.max_resolution == _compose("field=hash").field.max_resolution
    chain = OmegaConf.to_object(_compose("preset=smoke", "phase.static.max_steps=9", "models=random"))
    assert chain.phase.static.max_steps == 9 and chain.phase.dynamic.max_steps == 6 and chain.models.kind.value == "random"


@pytest.mark.parametrize("preset, gb", [("gpu24", 24.0), ("gpu12", 12.0)])
def test_gpu_presets_set_the_memory_budget(preset, gb):
    cfg = OmegaConf.to_object(_compose(f"preset={preset}"))
    assert cfg.gpu_memory_gb == gb
    assert _plain(_compose(f"preset={preset}").phase) == _plain(_compose().phase)  # the original's settings
    assert OmegaConf.to_object(_compose()).gpu_memory_gb is None


def test_cpu_with_gpu_sized_settings_warns_once_with_the_estimate(monkeypatch, caplog):
    watch = PaceWatch("fit", torch.device("cpu"), start_step=0, max_steps=2000)
    from animate124 import pace

    times = iter([10.0, 28.0])  # steps 1 -> 4: 6 s/step, as phase=fit with the default field on 2 cores
    monkeypatch.setattr(pace.time, "perf_counter", lambda: next(times))
    with caplog.at_level(logging.WARNING, logger="animate124.pace"):
        for done in range(1, 10):
            watch.step(done)
    msgs = [r.message for r in caplog.records]
    assert len(msgs) == 1, msgs
    assert "6.00 s/step over steps 1-4, so the remaining 1996 steps take about 3 h 19 min (estimate)" in msgs[0]
    assert "field=fit_cpu render=fit_cpu" in msgs[0] and "preset=cpu" in msgs[0]
    assert watch.estimate == {"s_per_step": 6.0, "remaining_steps": 1996, "remaining_s": 11976.0, "warned": True}


def test_no_warning_when_the_cpu_run_is_short_or_on_a_gpu(monkeypatch, caplog):
    from animate124 import pace

    times = iter([0.0, 0.3])
    monkeypatch.setattr(pace.time, "perf_counter", lambda: next(times))
    short = PaceWatch("fit", torch.device("cpu"), start_step=5, max_steps=100)
    gpu = PaceWatch("fit", torch.device("cuda"), start_step=0, max_steps=10**6)
    with caplog.at_level(logging.WARNING, logger="animate124.pace"):
        for done in range(6, 12):
            short.step(done)
            gpu.step(done)
    assert not caplog.records and short.estimate["warned"] is False and gpu.estimate is None
