"""`python -m animate124.run`: one-line errors with exit code 2; resume after SIGINT / SIGTERM; one run per run dir."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from animate124.data.synthetic import make_synthetic_scene
from animate124.run import main

TINY = ["phase=fit", "field=small", "render=fast", "render.grid_resolution=16", "phase.time_slots=1",
        "phase.batch_rays=64", "phase.val_every=0", "phase.eval_max_frames=1", "phase.progress=false"]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    return make_synthetic_scene(tmp_path_factory.mktemp("scene"), size=16, n_train=4, n_test=1, n_val=1)


def _error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_missing_dataset_folder(tmp_path, capsys):
    code = main([*TINY, f"data.path={tmp_path / 'nope'}", f"run_dir={tmp_path / 'run'}"])
    assert code == 2
    assert "nope not found" in _error_line(capsys)


def test_missing_data_path(tmp_path, capsys):
    assert main([*TINY, f"run_dir={tmp_path / 'run'}"]) == 2
    assert "data.path=DIR" in _error_line(capsys)


def test_camera_less_dataset(tmp_path, capsys):
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.7, "frames": []}))
    assert main([*TINY, f"data.path={tmp_path}", f"run_dir={tmp_path / 'run'}"]) == 2
    assert "has no frames" in _error_line(capsys)


@pytest.mark.parametrize(
    "override, expected",
    [("phase.max_stepz=3", "max_stepz"), ("phase.max_steps=abc", "abc"), ("field=nope", "nope")],
    ids=["typo", "wrong_type", "unknown_option"],
)
def test_composition_errors(tmp_path, capsys, override, expected):
    assert main([*TINY, override, f"run_dir={tmp_path / 'run'}"]) == 2
    assert expected in _error_line(capsys)


def test_incompatible_checkpoint(tmp_path, capsys, tiny_scene):
    run = tmp_path / "run"
    args = [*TINY, f"data.path={tiny_scene}", f"run_dir={run}", "phase.max_steps=1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "field.num_levels=4"]) == 2
    assert "incompatible config (field.num_levels 8 vs 4" in _error_line(capsys)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Wait for ``path`` to appear while ``proc`` runs (a generous ceiling: the machine may be loaded)."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists():
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear (exit code {proc.poll()})")


# SIGINT runs in the slow suite only: the in-process tests/test_faults.py covers it; SIGTERM is the cluster case.
@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow), (signal.SIGTERM, 75)],
                         ids=["sigint", "sigterm"])
def test_interrupt_then_resume(tmp_path, tiny_scene, capsys, sig, code):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "animate124.run", *TINY, f"data.path={tiny_scene}", f"run_dir={run}",
           "phase.max_steps=100000", "phase.checkpoint_every=3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(run / "fit" / "checkpoints" / "step-0000003", proc)
        # a second run on the same run dir stops at once, naming the holder
        assert main(cmd[3:]) == 2
        assert f"is in use by pid {proc.pid} on host" in _error_line(capsys)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "re-run the same command to resume" in err
    assert not (run / ".lock").exists()
    first = json.loads((run / "fit" / "report.json").read_text())
    stopped = first["step"]
    assert stopped >= 3 and not first["complete"] and first["stopped_by"] == sig.name

    # Re-run the same command with fewer total steps so it finishes quickly: it must start at `stopped`, not 0.
    finish = stopped + 2
    cmd_resume = [c if not c.startswith("phase.max_steps=") else f"phase.max_steps={finish}" for c in cmd]
    done = subprocess.run(cmd_resume, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "fit" / "report.json").read_text())
    assert report["complete"] and report["start_step"] == stopped and report["step"] == finish
    assert report["resumed_from"].endswith(f"step-{stopped:07d}") and report["sessions"] == 2
