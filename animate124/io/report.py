"""``report.json`` of a phase: wall time, steps, it/s, peak memory, seed, config hash, device, backend, metrics."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from animate124 import __version__
from animate124.io.disk import disk_full_guard
from animate124.io.run_dir import read_json, write_json_atomic


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def peak_cuda_mb(device: torch.device) -> float | None:
    """Peak CUDA memory allocated on ``device`` in MiB (None off CUDA)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / (1024.0 * 1024.0)


def git_commit() -> str | None:
    """The commit of the source tree animate124 was imported from, if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def backend_info() -> dict[str, Any]:
    """``animate124.ops._backend.backend_info()`` (a dict with an error entry if the backend module fails)."""
    try:
        from animate124.ops import _backend

        return dict(_backend.backend_info())
    except Exception as exc:  # noqa: BLE001 - the report must be written whatever the backend does
        return {"available": False, "error": f"{type(exc).__name__}: {exc}"}


def environment_info(device: torch.device) -> dict[str, Any]:
    """Static facts about where the phase ran."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "animate124": __version__,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "backend": backend_info(),
    }


def read_report(path: str | Path) -> dict[str, Any]:
    """The report at ``path`` ({} when there is none or it is unreadable)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return read_json(path)
    except Exception:  # noqa: BLE001 - a broken report is rewritten, never fatal
        return {}


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write report.json atomically (DiskFullError on ENOSPC / EDQUOT; the previous report stays)."""
    with disk_full_guard(f"report {Path(path).name}", Path(path).parent):
        write_json_atomic(path, report)
