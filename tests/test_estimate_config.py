"""``gpu_memory_gb`` (the memory budget of animate124.estimate) is a root key of the run config: unset by default,
accepted with every phase including ``phase=all``, and a non-positive value is a one-line config error."""

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.errors import ConfigError
from animate124.run import check_gpu_memory_gb


def _compose(*overrides):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


def test_gpu_memory_gb_unset_by_default():
    assert _compose().gpu_memory_gb is None


@pytest.mark.parametrize("phase", ["all", "static", "dynamic", "refine", "textual_inversion"])
def test_gpu_memory_gb_accepted(phase):
    obj = _compose(f"phase={phase}", "gpu_memory_gb=24")
    assert obj.gpu_memory_gb == 24.0


@pytest.mark.parametrize("bad", [0, -3.5])
def test_gpu_memory_gb_must_be_positive(bad):
    with pytest.raises(ConfigError, match="gpu_memory_gb"):
        check_gpu_memory_gb(bad)
    check_gpu_memory_gb(None)
    check_gpu_memory_gb(12)


def _fake_estimates(monkeypatch):
    """Per-phase estimates as a function of the levers only: the VAE lever saves 10 GB in static/dynamic/refine,
    each render-chunking step 2 GB in dynamic/refine (stands in for the fake-tensor trace, which takes minutes)."""
    import animate124.estimate.core as core

    def est(cfg, names, gpu="h100"):
        out = {}
        for name in names:
            base = {"textual_inversion": 18.0, "static": 20.0, "dynamic": 43.0, "refine": 54.0}[name]
            sub = core.phase_config(cfg, name)
            if sub.models.vae_checkpointing and name != "textual_inversion":
                base -= 10.0
            k = sub.render.checkpoint_frames
            if k is not None and name in ("dynamic", "refine"):
                base -= {8: 2.0, 4: 4.0, 2: 6.0, 1: 8.0}[k]
            out[name] = {"needs_gb": base, "peak_allocated_gb": base,
                         "time": {g: {e: {"total_s": 100.0 - base} for e in ("100%", "40%")} for g in core.G.GPUS}}
        return out

    monkeypatch.setattr(core, "estimate_phases", est)


def test_budget_planner_turns_exact_levers_on_first_and_stops_when_it_fits(monkeypatch):
    from animate124.estimate.levers import plan

    _fake_estimates(monkeypatch)
    cfg, report = plan(_compose("phase=all"), 40.0)
    names = [lv["override"] for lv in report["levers"]]
    assert names[0] == "models.vae_checkpointing=true"
    assert all(lv["exact"] for lv in report["levers"][:len(names) - 1])
    assert report["fits"] and cfg.models.vae_checkpointing
    # refine: 54 - 10 = 44 > 40/1.1 -> chunking until 44 - 8 = 36 fits with the 10 % margin
    assert cfg.render.checkpoint_frames == 1
    assert report["after"]["max_needs_gb"] * 1.1 <= 40.0
    unset, _ = plan(_compose("phase=all"), 100.0)
    assert not unset.models.vae_checkpointing and unset.render.checkpoint_frames is None  # fits: nothing changes


def test_run_applies_the_budget_and_records_the_levers(monkeypatch, tmp_path):
    import json

    from animate124.run import apply_memory_budget

    _fake_estimates(monkeypatch)
    obj = apply_memory_budget(_compose("phase=static", "gpu_memory_gb=12"), tmp_path)
    assert obj.models.vae_checkpointing
    assert "memory_lever=models.vae_checkpointing=true" in obj.extra
    saved = json.loads((tmp_path / "memory_budget.json").read_text())
    assert saved["fits"] and saved["levers"][0]["override"] == "models.vae_checkpointing=true"
