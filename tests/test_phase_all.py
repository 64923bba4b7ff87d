"""``phase=all`` (phases/all.py): order, skipping finished phases, resuming, the summed report; and the CLI chain."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BENCHMARK, requires_benchmark
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
import animate124.phases as phases_pkg
from animate124.io.report import write_report
from animate124.io.run_dir import load_inputs, phase_dirs
from animate124.phases import all as all_phase


def _cfg(tmp_path, *overrides):
    root = tmp_path / "bench"
    (root / "panda-dance").mkdir(parents=True, exist_ok=True)
    (root / "benchmark.json").write_text(json.dumps([{"name": "panda-dance", "caption": "a panda is dancing"}]))
    (root / "panda-dance" / "image.jpg").write_bytes(b"x")
    (root / "panda-dance" / "rgba.png").write_bytes(b"x")
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = compose("run", overrides=["case=panda-dance", f"case.root={root}", "phase.video=false", *overrides])
    return OmegaConf.to_object(cfg)


def _fake_run_phase(calls, fail_on=None):
    def run_phase(cfg, run_dir):
        name = cfg.phase.kind.value
        calls.append((name, cfg.image, cfg.prompt, cfg.static_prompt))
        if name == fail_on:
            raise KeyboardInterrupt
        report = {"phase": name, "complete": True, "step": cfg.phase.max_steps, "max_steps": cfg.phase.max_steps,
                  "wall_time_s": 1.5, "train_time_s": 1.0, "it_per_s": 2.0}
        write_report(phase_dirs(run_dir, name).report, report)
        return report

    return run_phase


def test_order_inputs_and_summed_report(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(phases_pkg, "run_phase", _fake_run_phase(calls))
    cfg = _cfg(tmp_path, "phase.textual_inversion.max_steps=3", "phase.static.max_steps=4",
               "phase.dynamic.max_steps=5", "phase.refine.max_steps=6")
    report = all_phase.run(cfg, tmp_path / "run")
    assert [c[0] for c in calls] == ["textual_inversion", "static", "dynamic", "refine"]
    # the case fills the inputs of every phase (spec §11.3 prompts)
    assert all(c[1].endswith("rgba.png") and c[2] == "a panda is dancing" for c in calls)
    assert calls[0][3] == "a high-resolution DSLR image of a panda"
    assert load_inputs(tmp_path / "run")["case"] == "panda-dance"
    assert report["complete"] and report["total_steps"] == 3 + 4 + 5 + 6
    assert report["total_wall_time_s"] == pytest.approx(4 * 1.5)
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert on_disk["total_steps"] == 18 and set(on_disk["phases"]) == set(all_phase.ORDER)


def test_finished_phases_are_skipped(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(phases_pkg, "run_phase", _fake_run_phase(calls, fail_on="dynamic"))
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        all_phase.run(cfg, tmp_path / "run")
    assert [c[0] for c in calls] == ["textual_inversion", "static", "dynamic"]
    calls.clear()
    monkeypatch.setattr(phases_pkg, "run_phase", _fake_run_phase(calls))
    report = all_phase.run(cfg, tmp_path / "run")
    assert [c[0] for c in calls] == ["dynamic", "refine"]
    assert report["complete"]


def test_chain_table_eta(tmp_path):
    cfg = _cfg(tmp_path, "phase.static.max_steps=100")
    run_dir = tmp_path / "run"
    write_report(phase_dirs(run_dir, "textual_inversion").report, {"complete": True, "step": 10})
    write_report(phase_dirs(run_dir, "static").report, {"complete": False, "step": 40, "it_per_s": 2.0})
    table = all_phase.chain_table(run_dir, cfg.phase, current="static")
    lines = table.splitlines()
    assert "done" in lines[0] and "ETA 0:00:00" in lines[0]
    # 60 steps left at 2 it/s = 30 s
    assert lines[1].startswith(">") and "partial" in lines[1] and "ETA 0:00:30" in lines[1]
    assert "pending" in lines[2] and "ETA ?" in lines[2]
    assert lines[-1].strip().startswith("chain ETA 0:00:30+?")


# ------------------------------------------------------------------------------------------ the real chain (CLI)

# The offline CPU chain: preset=smoke (configs/preset/smoke.yaml; tests/test_presets.py checks that it equals the
# ~30 explicit overrides this list used to hold).
CHAIN_OVERRIDES = ["preset=smoke", "case=panda-dance", f"case.root={BENCHMARK}"]


def _chain_cmd(run_dir, cache):
    return [sys.executable, "-m", "animate124.run", *CHAIN_OVERRIDES, f"run_dir={run_dir}",
            f"models.cache_dir={cache}", f"hydra.run.dir={run_dir}"]


@pytest.mark.slow
@requires_benchmark
def test_chain_kill9_during_dynamic_then_resume(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(_chain_cmd(run_dir, cache), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpts = run_dir / "dynamic" / "checkpoints"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "dynamic" / "report.json").is_file() or not json.loads(
        (run_dir / "dynamic" / "report.json").read_text()).get("complete")
    done = subprocess.run(_chain_cmd(run_dir, cache), env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["complete"] and set(report["phases"]) == set(all_phase.ORDER)
    dyn = json.loads((run_dir / "dynamic" / "report.json").read_text())
    assert dyn["start_step"] > 0 and dyn["step"] == 6  # resumed, not restarted
    assert Path(report["video"]).is_file()


def test_each_phase_is_freed_before_the_next(tmp_path, monkeypatch):
    """issue 11 defect 9: what a phase held in reference cycles is collected, and CUDA's cache emptied, between phases."""
    import gc
    import weakref

    import torch

    class Held:  # a phase's model graph: kept alive only by its own cycle once the phase returns
        pass

    alive, emptied = [], []
    inner = _fake_run_phase([])

    def run_phase(cfg, run_dir):
        alive.append(any(ref() is not None for ref in refs))
        held = Held()
        held.self = held
        refs.append(weakref.ref(held))
        return inner(cfg, run_dir)

    refs: list = []
    gc.disable()  # only the explicit collection between phases may free the cycles
    try:
        monkeypatch.setattr(phases_pkg, "run_phase", run_phase)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
        all_phase.run(_cfg(tmp_path), tmp_path / "run")
    finally:
        gc.enable()
    assert alive == [False, False, False, False]
    assert len(emptied) == 4
