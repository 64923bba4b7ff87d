"""Runs that survive clusters (issue 15): stop signals, the run-dir lock, full disks, corrupt checkpoints.

All in-process on a toy phase (a Linear layer + Adam) so each test takes well under a second of CPU; the CLI versions
(SIGTERM + resume, a second run on a locked run dir) are in tests/test_run_cli.py.
"""

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
import torch

from animate124.errors import CheckpointError
from animate124.io import checkpoint as ckpt_mod
from animate124.io import disk
from animate124.io.checkpoint import latest_checkpoint, list_checkpoints, load_latest_valid
from animate124.io.disk import DiskFullError
from animate124.io.lock import LOCK_FILE, RunLock, RunLockedError, read_lock
from animate124.io.run_dir import phase_done
from animate124.signals import EXIT_PREEMPTED, TrainingInterrupted, TrainingPreempted, preempt_signal


def _toy(run_dir, max_steps=8, hook=None, width=3, checkpoint_every=3):
    from animate124.config.phases import FitPhaseConfig
    from animate124.config.schema import RunConfig
    from animate124.phases.base import Phase, StepOutput

    class Toy(Phase):
        name = "toy"

        def build(self):
            self.field = torch.nn.Linear(width, 2 if width == 3 else width)
            self.optimizer = torch.optim.Adam(self.field.parameters(), lr=1e-2)

        def train_step(self, step):
            if hook is not None:
                hook(step)
            loss = self.field(torch.randn(4, width)).pow(2).mean()
            return StepOutput(loss, {})

    cfg = RunConfig(phase=FitPhaseConfig(max_steps=max_steps, checkpoint_every=checkpoint_every, progress=False), seed=7)
    return Toy(cfg, run_dir)


def _kill_self_at(at, sig=signal.SIGTERM):
    def hook(step):
        if step == at:
            os.kill(os.getpid(), sig)  # delivered to the main thread before the next bytecode: mid-step

    return hook


def _train(phase):
    from animate124.phases.base import train

    return train(phase)


def _ckpts(run):
    return run / "toy" / "checkpoints"


# ------------------------------------------------------------------------------------------------ 1. stop signals
def test_sigterm_saves_at_step_boundary_then_resume_is_bitwise(tmp_path):
    ref = _toy(tmp_path / "ref")
    _train(ref)
    with pytest.raises(TrainingPreempted, match=r"interrupted at step 5; .*resume \(stopped by SIGTERM\)") as info:
        _train(_toy(tmp_path / "run", hook=_kill_self_at(4)))
    assert info.value.exit_code == EXIT_PREEMPTED == 75
    assert latest_checkpoint(_ckpts(tmp_path / "run")).name == "step-0000005"
    report = json.loads((tmp_path / "run" / "toy" / "report.json").read_text())
    assert not report["complete"] and report["step"] == 5 and report["stopped_by"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    resumed = _toy(tmp_path / "run")
    report = _train(resumed)
    assert report["start_step"] == 5 and report["step"] == 8 and report["complete"] and report["stopped_by"] is None
    for a, b in zip(ref.field.parameters(), resumed.field.parameters()):
        assert torch.equal(a, b)


def test_sigint_is_handled_the_same_way(tmp_path):
    with pytest.raises(TrainingInterrupted, match="interrupted at step 2;") as info:
        _train(_toy(tmp_path, hook=_kill_self_at(1, signal.SIGINT)))
    assert info.value.exit_code == 130 and not isinstance(info.value, TrainingPreempted)
    assert latest_checkpoint(_ckpts(tmp_path)).name == "step-0000002"


def test_second_signal_during_the_save_is_ignored(tmp_path, monkeypatch, caplog):
    from animate124.phases import base

    real, calls = base.save_checkpoint, []

    def save_with_a_second_signal(*args, **kwargs):
        calls.append(args[1])
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the stop checkpoint is being written
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "save_checkpoint", save_with_a_second_signal)
    with caplog.at_level(logging.WARNING, logger="animate124.signals"):
        with pytest.raises(TrainingPreempted, match="interrupted at step 2;"):
            _train(_toy(tmp_path, hook=_kill_self_at(1), checkpoint_every=0))
    assert calls == [2]
    assert any("again while saving the checkpoint; ignored" in r.message for r in caplog.records)
    path, (model_state, _, state), fallbacks = load_latest_valid(_ckpts(tmp_path))
    assert state["step"] == 2 and not fallbacks and set(model_state) == {"field.weight", "field.bias"}


def test_preempt_signal_chains_to_submitits_handler(tmp_path, monkeypatch):
    """Like submitit's checkpoint_and_try_requeue: called after our checkpoint is on disk, it requeues and exits."""
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert preempt_signal() == signal.SIGUSR1
    seen = []

    def submitit_like(signum, frame):
        seen.append((signum, latest_checkpoint(_ckpts(tmp_path)).name))
        sys.exit(144)  # submitit's local executor: LOCAL_REQUEUE_RETURN_CODE

    old = signal.signal(signal.SIGUSR1, submitit_like)
    try:
        with pytest.raises(SystemExit) as info:
            _train(_toy(tmp_path, hook=_kill_self_at(2, signal.SIGUSR1), checkpoint_every=0))
        assert info.value.code == 144 and seen == [(signal.SIGUSR1, "step-0000003")]
        assert signal.getsignal(signal.SIGUSR1) is submitit_like
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert json.loads((tmp_path / "toy" / "report.json").read_text())["stopped_by"] == "SIGUSR1"


def test_preempt_signal_env(monkeypatch):
    from animate124.errors import ConfigError

    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert preempt_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "SIGHUP")
    assert preempt_signal() == signal.SIGHUP
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "NOPE")
    with pytest.raises(ConfigError, match="SUBMITIT_PREEMPT_SIGNAL=NOPE is not a signal"):
        preempt_signal()


# ---------------------------------------------------------------------------------------------- 2. run-dir lock
def _fake_holder(run, **fields):
    run.mkdir(parents=True, exist_ok=True)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "job_id": None, "heartbeat": time.time(), "token": "x"}
    holder.update(fields)
    (run / LOCK_FILE).write_text(json.dumps(holder))


def test_lock_contents_heartbeat_and_release(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    with RunLock(tmp_path, heartbeat_s=0.05) as lock:
        first = read_lock(tmp_path / LOCK_FILE)
        assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
        assert first["job_id"] == "slurm:4242" and first["heartbeat_utc"]
        deadline = time.time() + 60  # the heartbeat thread rewrites it; generous ceiling for a loaded machine
        while read_lock(tmp_path / LOCK_FILE)["heartbeat"] == first["heartbeat"] and time.time() < deadline:
            time.sleep(0.05)
        assert read_lock(tmp_path / LOCK_FILE)["heartbeat"] > first["heartbeat"]
        with RunLock(tmp_path) as inner:  # re-entrant in one process (phase=all around its phases)
            assert inner is lock
        assert lock.owned()
    assert not (tmp_path / LOCK_FILE).exists()


def test_live_lock_stops_a_second_run(tmp_path):
    _fake_holder(tmp_path, job_id="slurm:1")
    with pytest.raises(RunLockedError, match=rf"run_dir {tmp_path} is in use by pid {os.getppid()} on host "
                                             rf"{socket.gethostname()} \(job slurm:1\), heartbeat \d+ s ago; "):
        RunLock(tmp_path).acquire()
    assert read_lock(tmp_path / LOCK_FILE)["token"] == "x"  # untouched


@pytest.mark.parametrize("case", ["old_heartbeat", "dead_pid", "same_job", "garbled"])
def test_stale_lock_is_taken_over_with_a_warning(tmp_path, monkeypatch, caplog, case):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SUBMITIT_LOCAL_JOB_ID", raising=False)
    if case == "old_heartbeat":
        _fake_holder(tmp_path, host="elsewhere", heartbeat=time.time() - 1000)
        expected = "heartbeat is 1000 s old"
    elif case == "dead_pid":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _fake_holder(tmp_path, pid=dead.pid)
        expected = f"pid {dead.pid} is not running"
    elif case == "same_job":  # requeued onto another node
        monkeypatch.setenv("SLURM_JOB_ID", "77")
        _fake_holder(tmp_path, host="other-node", job_id="slurm:77")
        expected = "belongs to this job (slurm:77), requeued"
    else:
        (tmp_path / LOCK_FILE).write_text("{not json")
        expected = "unreadable"
    with caplog.at_level(logging.WARNING, logger="animate124.io.lock"):
        lock = RunLock(tmp_path, stale_s=900, heartbeat_s=0).acquire()
    try:
        assert lock.owned() and expected in lock.took_over["reason"]
        assert sum("took over" in r.message for r in caplog.records) == 1
    finally:
        lock.release()


def test_heartbeat_fails_when_the_lock_was_taken_over(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0).acquire()
    try:
        _fake_holder(tmp_path, pid=12345678, host="thief")
        with pytest.raises(RunLockedError, match="was taken over by pid 12345678 on host thief"):
            lock.heartbeat()
    finally:
        lock.release()
    assert read_lock(tmp_path / LOCK_FILE)["host"] == "thief"  # not ours: left in place


# --------------------------------------------------------------------------------------------------- 3. full disk
def _enospc_on_call(n, monkeypatch):
    """save_file that writes half a file and then raises ENOSPC on its n-th call (as a full disk does)."""
    real, count = ckpt_mod.save_file, {"n": 0}

    def shim(tensors, path, *args, **kwargs):
        count["n"] += 1
        if count["n"] == n:
            with open(path, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "save_file", shim)


def _assert_only_good_checkpoint(run, step):
    names = sorted(p.name for p in _ckpts(run).iterdir())
    assert names == [f"step-{step:07d}"], names  # no .tmp-* left behind
    path, (_, _, state), fallbacks = load_latest_valid(_ckpts(run))
    assert state["step"] == step and not fallbacks


def test_enospc_during_a_checkpoint_write(tmp_path, monkeypatch):
    _enospc_on_call(3, monkeypatch)  # calls 1-2: checkpoint at step 3; call 3: model file of step 6
    with pytest.raises(DiskFullError, match=r"no space left on the disk of .*checkpoints while writing checkpoint "
                                            r"step-0000006 \(it needs about [\d.]+ MB, [\d.]+ MB free\); free some"):
        _train(_toy(tmp_path))
    _assert_only_good_checkpoint(tmp_path, 3)


def test_free_space_precheck_uses_the_last_checkpoint_size(tmp_path, monkeypatch):
    real = disk.shutil.disk_usage
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DiskFullError, match=r"checkpoint step 6 \(it needs about 1.0 MB, 0.0 MB free\)"):
        _train(_toy(tmp_path))  # the first checkpoint has no size to compare with; the second is refused up front
    _assert_only_good_checkpoint(tmp_path, 3)


def test_enospc_on_report_leaves_the_old_report(tmp_path, monkeypatch):
    from animate124.io import run_dir as run_dir_mod

    _train(_toy(tmp_path, max_steps=3))
    old = (tmp_path / "toy" / "report.json").read_text()

    def full(data, f, **kwargs):
        f.write("{half")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(run_dir_mod, "json", types.SimpleNamespace(dump=full, load=json.load))
    with pytest.raises(DiskFullError, match="while writing report report.json"):
        _train(_toy(tmp_path, max_steps=4))
    assert (tmp_path / "toy" / "report.json").read_text() == old
    assert not [p for p in (tmp_path / "toy").iterdir() if ".tmp-" in p.name]


def test_disk_full_guard_recognises_safetensors_text():
    from safetensors import SafetensorError

    assert disk.is_disk_full(SafetensorError('IoError(Os { code: 28, kind: StorageFull, message: "No space left" })'))
    assert disk.is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert not disk.is_disk_full(OSError(errno.EACCES, "denied"))


def _mount_tmpfs(path, size):
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def test_real_full_tmpfs(tmp_path, monkeypatch):
    """A real ENOSPC from safetensors on a 1 MiB tmpfs (skipped where this process cannot mount one)."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("cannot mount a tmpfs here; the write shim tests cover ENOSPC")
    try:
        monkeypatch.setattr(disk, "check_free_space", lambda *a, **k: None)
        from animate124.phases import base

        monkeypatch.setattr(base, "check_free_space", lambda *a, **k: None)  # let the write itself hit ENOSPC
        with pytest.raises(DiskFullError, match="no space left on the disk"):
            _train(_toy(mnt, max_steps=30, width=256, checkpoint_every=1))  # ~0.8 MB per checkpoint
        steps = [int(p.name[5:]) for p in list_checkpoints(_ckpts(mnt))]
        assert steps and not [p for p in _ckpts(mnt).iterdir() if p.name.startswith(".tmp-")]
        assert load_latest_valid(_ckpts(mnt))[2] == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=60)


# -------------------------------------------------------------------------------------------- 4. corrupt checkpoints
def _two_checkpoints(run):
    _train(_toy(run, max_steps=8))  # checkpoints at 6 and 8 (keep=2)
    return [p.name for p in list_checkpoints(_ckpts(run))]


@pytest.mark.parametrize("damage", ["truncate", "garble", "bad_header_without_digest", "state_json"])
def test_corrupt_latest_falls_back_to_the_previous(tmp_path, caplog, damage):
    assert _two_checkpoints(tmp_path) == ["step-0000006", "step-0000008"]
    latest = _ckpts(tmp_path) / "step-0000008"
    model = latest / "model.safetensors"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:-7])
    elif damage == "garble":
        data = bytearray((latest / "optim.safetensors").read_bytes())
        data[-3] ^= 0xFF
        (latest / "optim.safetensors").write_bytes(bytes(data))
    elif damage == "bad_header_without_digest":  # a checkpoint from before the digests: the header check remains
        state = json.loads((latest / "state.json").read_text())
        state.pop("files")
        (latest / "state.json").write_text(json.dumps(state))
        model.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    else:
        (latest / "state.json").write_text('{"step": 8, "files": ')
    with caplog.at_level(logging.WARNING, logger="animate124.io.checkpoint"):
        report = _train(_toy(tmp_path, max_steps=10))
    warnings = [r.message for r in caplog.records if "falling back to the previous checkpoint" in r.message]
    assert len(warnings) == 1 and "step-0000008 is corrupt" in warnings[0]
    assert report["start_step"] == 6 and report["resumed_from"].endswith("step-0000006") and report["step"] == 10
    assert len(report["checkpoint_fallbacks"]) == 1 and "corrupt" in report["checkpoint_fallbacks"][0]["reason"]
    assert [p.name for p in _ckpts(tmp_path).iterdir() if p.name.startswith(".corrupt-step-0000008")]
    assert phase_done(tmp_path, "toy")


def test_corrupt_only_history_is_one_line_error(tmp_path):
    _two_checkpoints(tmp_path)
    for path in list_checkpoints(_ckpts(tmp_path)):
        (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"every checkpoint in .* is corrupt \(newest: checkpoint .*step-0000008 "
                                              r"is corrupt \(model.safetensors has 0 bytes.*delete the folder") as info:
        _train(_toy(tmp_path, max_steps=10))
    assert "\n" not in str(info.value)


def test_killed_save_leaves_only_a_tmp_dir_which_resume_cleans(tmp_path):
    _train(_toy(tmp_path, max_steps=3))
    (_ckpts(tmp_path) / ".tmp-step-0000006-999").mkdir()
    (_ckpts(tmp_path) / ".tmp-step-0000006-999" / "model.safetensors").write_bytes(b"half")
    report = _train(_toy(tmp_path, max_steps=4))
    assert report["start_step"] == 3
    assert sorted(p.name for p in _ckpts(tmp_path).iterdir()) == ["step-0000003", "step-0000004"]
