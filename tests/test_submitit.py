"""Hydra multirun through the real submitit machinery (``hydra/launcher=submitit_local``: local processes).

- two benchmark cases run as two separate jobs (each its own process and job id);
- a job given submitit's preemption signal saves a checkpoint, submitit's own handler requeues it (the local
  executor restarts the task), and the requeued job resumes from that checkpoint and finishes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BENCHMARK, requires_benchmark

from animate124.data.synthetic import make_synthetic_scene
from animate124.io.lock import LOCK_FILE, read_lock

pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CEILING = 1800  # generous: the machine may be loaded; the tests wait on files and exit codes, not on time


def _logs(sweep: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit").rglob("*_log.*")))


@pytest.mark.slow  # ~3 min on a loaded 2-core machine (two tiny static phases in parallel processes)
@requires_benchmark
def test_two_cases_run_as_two_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "animate124.run", "-m", "hydra/launcher=submitit_local", "preset=smoke",
           "case=panda-dance,fox-game", f"case.root={BENCHMARK}", "phase=static", f"models.cache_dir={tmp_path / 'c'}",
           f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${case.name}"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=CEILING)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + _logs(sweep)[-3000:]
    jobs = set()
    for case in ("panda-dance", "fox-game"):
        report = json.loads((sweep / case / "static" / "report.json").read_text())
        assert report["complete"] and report["step"] == 4
        assert report["job_id"].startswith("local:")
        jobs.add(report["job_id"])
        assert not (sweep / case / LOCK_FILE).exists()
    assert len(jobs) == 2  # separate jobs


def test_preempted_job_is_requeued_and_resumes(tmp_path):
    scene = make_synthetic_scene(tmp_path / "scene", size=16, n_train=4, n_test=1, n_val=1)
    sweep = tmp_path / "sweep"
    run = sweep / "job"
    cmd = [sys.executable, "-m", "animate124.run", "-m", "hydra/launcher=submitit_local", "preset=smoke", "phase=fit",
           "render.grid_resolution=16", f"data.path={scene}", "phase.max_steps=20", "phase.checkpoint_every=3",
           "phase.progress=false", "seed=5", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + CEILING
        first = run / "fit" / "checkpoints" / "step-0000003"
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.exists(), proc.poll()
        holder = read_lock(run / LOCK_FILE)
        os.kill(int(holder["pid"]), signal.SIGUSR2)  # submitit's default preemption signal, to the job's process
        out, _ = proc.communicate(timeout=CEILING)
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = _logs(sweep)
    assert proc.returncode == 0, out[-3000:] + logs[-3000:]
    assert "received SIGUSR2: saving a checkpoint" in logs and "Requeued job" in logs
    report = json.loads((run / "fit" / "report.json").read_text())
    assert report["complete"] and report["step"] == 20 and report["sessions"] == 2
    assert report["start_step"] >= 3 and report["resumed_from"].endswith(f"step-{report['start_step']:07d}")
    assert report["job_id"] == holder["job_id"]  # the same (requeued) job
