"""Stop requests at step boundaries: Ctrl-C (SIGINT), SIGTERM and submitit's preemption signal.

While a :class:`StopSignals` block is active, each of these signals only sets a flag; the training loop checks it after
every optimizer step, saves a checkpoint, writes report.json as incomplete and raises :class:`TrainingInterrupted`
(SIGINT, exit code 130) or :class:`TrainingPreempted` (SIGTERM / preemption, exit code 75 = EX_TEMPFAIL: "re-run to
resume"). A second signal while the checkpoint is written is logged and ignored, so it cannot cut the save short (the
save is atomic in any case: see animate124.io.checkpoint).

submitit (``hydra/launcher=submitit_slurm|submitit_local``) installs its own handler for the preemption signal
(``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default): it calls the launcher's ``checkpoint()``, which resubmits the same
job, requeues it and exits. :meth:`StopSignals.chain` hands the signal on to that handler once our checkpoint is on
disk, so submitit's own requeue does the rest and the requeued job resumes from the checkpoint.

Example:
    >>> with StopSignals() as stop:
    ...     for step in range(n):
    ...         train_step(step)
    ...         if stop.requested:
    ...             save(); break
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any, Callable

from animate124.errors import Animate124Error, ConfigError

log = logging.getLogger(__name__)

PREEMPT_ENV = "SUBMITIT_PREEMPT_SIGNAL"
EXIT_INTERRUPTED = 130
EXIT_PREEMPTED = 75


class TrainingInterrupted(Animate124Error):
    """Ctrl-C during training; a checkpoint was saved. The CLI prints the message and exits 130."""

    exit_code = EXIT_INTERRUPTED


class TrainingPreempted(TrainingInterrupted):
    """SIGTERM or the preemption signal during training; a checkpoint was saved. The CLI exits 75 (re-run resumes)."""

    exit_code = EXIT_PREEMPTED


def preempt_signal() -> signal.Signals:
    """The preemption signal: ``$SUBMITIT_PREEMPT_SIGNAL`` (a name such as USR2 / SIGUSR2, or a number), else SIGUSR2."""
    raw = os.environ.get(PREEMPT_ENV, "USR2").strip()
    try:
        return signal.Signals(int(raw)) if raw.isdigit() else signal.Signals["SIG" + raw.upper().removeprefix("SIG")]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{PREEMPT_ENV}={raw} is not a signal; unset it or use a name such as USR2") from exc


def stop_signals() -> tuple[signal.Signals, ...]:
    """SIGINT, SIGTERM and the preemption signal (without duplicates)."""
    return tuple(dict.fromkeys((signal.SIGINT, signal.SIGTERM, preempt_signal())))


class StopSignals:
    """Context manager turning the stop signals into a flag (a no-op outside the main thread)."""

    def __init__(self, signals: tuple[signal.Signals, ...] | None = None) -> None:
        self.signals = stop_signals() if signals is None else signals
        self.received: signal.Signals | None = None
        """The first stop signal received (None until then)."""
        self.saving = False
        """Set by the loop while it writes the stop checkpoint (a second signal is then ignored)."""
        self._previous: dict[signal.Signals, Any] = {}
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self.received is None:
            self.received = sig
            log.warning("received %s: saving a checkpoint at the end of this step, then stopping", sig.name)
        else:
            log.warning("received %s again while %s; ignored so the checkpoint stays whole", sig.name,
                        "saving the checkpoint" if self.saving else "stopping")

    def install(self) -> "StopSignals":
        """Install the handlers (only in the main thread, where Python runs signal handlers) and return self."""
        if threading.current_thread() is threading.main_thread() and not self._installed:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
            self._installed = True
        return self

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        if not self._installed:
            return
        for sig, old in self._previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._installed = False

    def previous_handler(self, sig: signal.Signals) -> Callable[[int, FrameType | None], Any] | None:
        """The Python handler installed before ours for ``sig`` (e.g. submitit's), if any."""
        old = self._previous.get(sig)
        if callable(old) and old is not signal.default_int_handler:
            return old
        return None

    def error(self, message: str) -> TrainingInterrupted:
        """The exception for the received signal: TrainingInterrupted for SIGINT, TrainingPreempted otherwise."""
        if self.received in (None, signal.SIGINT):
            return TrainingInterrupted(message)
        return TrainingPreempted(f"{message} (stopped by {self.received.name})")

    def chain(self) -> None:
        """Restore the previous handlers and call the one of the received signal (submitit's requeue), if any."""
        sig = self.received
        self.restore()
        handler = self.previous_handler(sig) if sig is not None else None
        if handler is not None:
            log.info("handing %s on to the previous handler (%s)", sig.name, getattr(handler, "__qualname__", handler))
            handler(int(sig), None)
