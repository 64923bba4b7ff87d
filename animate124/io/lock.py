"""One run per run dir: ``<run_dir>/.lock`` holds pid, host, job id and a heartbeat time.

A second run on the same run dir stops at once with a one-line :class:`RunLockedError` naming the holder. The holder
refreshes the heartbeat at every checkpoint (:func:`heartbeat`) and every ``heartbeat_s`` seconds from a daemon thread.
A lock is stale, and is taken over with one warning, when

- its heartbeat is older than ``stale_s`` seconds (a crashed run on another host),
- its pid is dead on this host (kill -9, OOM), or
- its job id equals ours (a SLURM job requeued onto another node; submitit's local executor keeps the id too).

The file is created with ``os.link`` from a complete temporary file (exclusive and never half-written) and rewritten
with ``os.replace``; a takeover re-reads the file to make sure it won a race with another taker.

Example:
    >>> with RunLock(run_dir, stale_s=900, heartbeat_s=60):
    ...     run_phase(cfg, run_dir)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from animate124.errors import Animate124Error

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_HELD: dict[Path, "RunLock"] = {}


class RunLockedError(Animate124Error):
    """Another live run holds the run directory's lock."""


def job_id() -> str | None:
    """The scheduler's job id: SLURM (array task aware), else submitit's local executor, else None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return f"slurm:{env['SLURM_JOB_ID']}"
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"local:{socket.gethostname()}:{env['SUBMITIT_LOCAL_JOB_ID']}"
    return None


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (a zombie counts as alive until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(path: str | Path) -> dict[str, Any] | None:
    """The lock's content; None when there is no lock; ``{}`` when it is unreadable."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host h (job slurm:45), heartbeat 12 s ago``."""
    age = time.time() - float(holder.get("heartbeat", 0.0))
    job = f" (job {holder['job_id']})" if holder.get("job_id") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{job}, heartbeat {age:.0f} s ago"


def stale_reason(holder: dict[str, Any], stale_s: float) -> str | None:
    """Why ``holder`` may be taken over (None when it is live)."""
    if not holder:
        return "the lock file is unreadable"
    age = time.time() - float(holder.get("heartbeat", 0.0))
    if age > stale_s:
        return f"its heartbeat is {age:.0f} s old (> {stale_s:.0f} s)"
    ours = job_id()
    if ours is not None and holder.get("job_id") == ours:
        return f"it belongs to this job ({ours}), requeued"
    if holder.get("host") == socket.gethostname() and not pid_alive(int(holder.get("pid", -1))):
        return f"pid {holder.get('pid')} is not running on this host"
    return None


class RunLock:
    """The lock of one run directory (a context manager; re-entrant within one process)."""

    def __init__(self, run_dir: str | Path, stale_s: float = 900.0, heartbeat_s: float = 60.0) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.stale_s = float(stale_s)
        self.heartbeat_s = float(heartbeat_s)
        self.token = uuid.uuid4().hex
        self.took_over: dict[str, Any] | None = None
        """The holder this lock replaced, with the reason (None for a fresh lock)."""
        self._stop = threading.Event()
        self._write_lock = threading.Lock()  # the heartbeat thread and a checkpoint may beat at the same time
        self._thread: threading.Thread | None = None
        self._depth = 0
        self._outer: RunLock | None = None

    def _content(self) -> dict[str, Any]:
        now = time.time()
        return {"pid": os.getpid(), "host": socket.gethostname(), "job_id": job_id(), "heartbeat": now,
                "heartbeat_utc": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
                "token": self.token}

    def _write_tmp(self) -> Path:
        tmp = self.path.with_name(f"{LOCK_FILE}.tmp-{os.getpid()}-{self.token[:8]}")
        with open(tmp, "w") as f:
            json.dump(self._content(), f)
        return tmp

    def acquire(self) -> "RunLock":
        """Take the lock (RunLockedError when a live run holds it; a stale one is taken over with a warning)."""
        key = self.run_dir.resolve()
        if key in _HELD:  # this process already holds it (e.g. phase=all around its phases)
            self._outer = _HELD[key]
            self._outer._depth += 1
            return self._outer
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp()
        try:
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                self._take_over(tmp)
        finally:
            tmp.unlink(missing_ok=True)
        self._depth = 1
        _HELD[key] = self
        self._start_thread()
        return self

    def _take_over(self, tmp: Path) -> None:
        holder = read_lock(self.path)
        reason = stale_reason(holder or {}, self.stale_s) if holder is not None else "it vanished"
        if reason is None:
            raise RunLockedError(
                f"run_dir {self.run_dir} is in use by {describe(holder or {})}; wait for that run to end or stop it, "
                f"or use another run_dir= (a lock is taken over once its heartbeat is older than {self.stale_s:.0f} s)"
            )
        os.replace(tmp, self.path)
        if (read_lock(self.path) or {}).get("token") != self.token:
            raise RunLockedError(f"run_dir {self.run_dir} was taken by another run at the same moment; "
                                 f"use another run_dir= or retry")
        self.took_over = {**(holder or {}), "reason": reason}
        if holder:
            log.warning("took over the stale lock of run_dir %s from %s: %s", self.run_dir, describe(holder), reason)
        else:
            log.warning("took over the lock of run_dir %s: %s", self.run_dir, reason)

    def _start_thread(self) -> None:
        if self.heartbeat_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="animate124-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - a failed heartbeat must not kill training; the next one retries
                log.warning("could not refresh the lock %s: %s", self.path, exc)

    def owned(self) -> bool:
        """True while the lock file holds this lock's token."""
        return (read_lock(self.path) or {}).get("token") == self.token

    def heartbeat(self) -> None:
        """Rewrite the heartbeat time (RunLockedError when another run has taken the lock over)."""
        if not self.owned():
            raise RunLockedError(f"the lock of run_dir {self.run_dir} was taken over by "
                                 f"{describe(read_lock(self.path) or {})}; this run stops so the two do not mix")
        with self._write_lock:
            tmp = self._write_tmp()
            os.replace(tmp, self.path)

    def release(self) -> None:
        """Drop the lock (only the file that holds our token is removed)."""
        if self._outer is not None:
            outer, self._outer = self._outer, None
            outer.release()
            return
        self._depth -= 1
        if self._depth > 0:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        _HELD.pop(self.run_dir.resolve(), None)
        if self.owned():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def heartbeat(run_dir: str | Path) -> None:
    """Refresh the heartbeat of the lock this process holds on ``run_dir`` (no-op when it holds none)."""
    lock = _HELD.get(Path(run_dir).resolve())
    if lock is not None:
        lock.heartbeat()
