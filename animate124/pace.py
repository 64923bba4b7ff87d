"""One warning when a CPU run has GPU-sized settings, with the time it will take, measured on its own first steps.

After a warm-up step, :class:`PaceWatch` times ``window`` steps; when the device is a CPU and the remaining steps at
that pace take longer than ``threshold_s`` (30 min), it logs one warning naming the estimate and the CPU-sized
alternatives (``preset=cpu``, ``preset=smoke``; for phase=fit ``field=fit_cpu render=fit_cpu``). The estimate goes into
report.json (``cpu_estimate``). Measured for the issue: phase=fit with the default field took 5 min for 50 steps on a
2-core CPU, ``field=fit_cpu render=fit_cpu`` a few seconds.

Example:
    >>> pace = PaceWatch("static", torch.device("cpu"), start_step=0, max_steps=10_000)
    >>> for step in ...: ...; pace.step(step + 1)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

log = logging.getLogger(__name__)

CPU_WARN_S = 1800.0
"""Remaining CPU time (s) above which a run counts as GPU-sized."""


def hms(seconds: float) -> str:
    """``1 h 05 min`` / ``12 min`` / ``40 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


class PaceWatch:
    """Times a few steps of a session and warns once if a CPU run would take longer than ``threshold_s``."""

    def __init__(self, phase: str, device: torch.device, start_step: int, max_steps: int, warmup: int = 1,
                 window: int = 3, threshold_s: float = CPU_WARN_S) -> None:
        self.phase, self.device = phase, device
        self.start, self.max_steps = start_step, max_steps
        self.warmup, self.window, self.threshold_s = warmup, window, threshold_s
        self._t0: float | None = None
        self.estimate: dict[str, Any] | None = None
        """``{"s_per_step", "remaining_steps", "remaining_s", "warned"}`` once measured (CPU only)."""

    def step(self, done: int) -> None:
        """Call after each completed step with the number of completed steps."""
        if self.device.type != "cpu" or self.estimate is not None:
            return
        if done == self.start + self.warmup:
            self._t0 = time.perf_counter()
        elif self._t0 is not None and done == self.start + self.warmup + self.window:
            per_step = (time.perf_counter() - self._t0) / self.window
            left = self.max_steps - done
            remaining = per_step * left
            self.estimate = {"s_per_step": round(per_step, 4), "remaining_steps": left,
                             "remaining_s": round(remaining, 1), "warned": remaining > self.threshold_s}
            if remaining > self.threshold_s:
                alt = " (phase=fit: field=fit_cpu render=fit_cpu)" if self.phase == "fit" else ""
                log.warning("%s runs on the CPU with GPU-sized settings: %.2f s/step over steps %d-%d, so the "
                            "remaining %d steps take about %s (estimate); use a GPU, or preset=cpu for CPU-sized "
                            "settings%s, or preset=smoke to check the plumbing", self.phase, per_step,
                            self.start + self.warmup, done, left, hms(remaining), alt)
