"""The one training loop shared by every phase (DESIGN.md §2–3).

A phase subclasses :class:`Phase` and implements :meth:`Phase.build` (modules + ``self.optimizer``) and
:meth:`Phase.train_step`; optionally :meth:`Phase.init` (fresh start, e.g. from ``init_from``), :meth:`Phase.validate`,
:meth:`Phase.final`, :meth:`Phase.modules_to_save` and :meth:`Phase.refresh_occupancy`. :func:`train` does the rest:
seeding, resume from the latest checkpoint, AMP + GradScaler on CUDA, gradient clipping, the optimizer step, occupancy
refreshes every ``render.update_interval`` steps (checked before the step, spec §5.2), TensorBoard scalars, periodic /
final / stop checkpoints (Ctrl-C, SIGTERM, preemption: animate124.signals), non-finite loss detection, free-space
checks, corrupt-checkpoint fallback at resume and ``report.json``.

A phase module (``animate124.phases.<kind>``) exposes either ``PHASE`` (a Phase subclass, run with :func:`train`) or
``run(cfg, run_dir) -> dict`` (e.g. ``phase=all``, which calls other phases); see :func:`animate124.phases.run_phase`.

Example:
    >>> class MyPhase(Phase):
    ...     name = "fit"
    ...     def build(self): ...
    ...     def train_step(self, step): return StepOutput(loss, {"mse": loss.detach()})
    >>> report = train(MyPhase(cfg, run_dir))
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from animate124.config.phases import AdamPhaseConfig, TrainLoopConfig, typed_phase_config
from animate124.config.schema import RunConfig
from animate124.errors import Animate124Error, ConfigError
from animate124.io import lock
from animate124.io.checkpoint import (
    check_compatible,
    clean_partial,
    config_hash,
    latest_checkpoint,
    load_latest_valid,
    merge_states,
    save_checkpoint,
    set_rng_state,
    split_state,
    structural_hash,
)
from animate124.io.disk import check_free_space, dir_size, disk_full_guard
from animate124.io.report import environment_info, peak_cuda_mb, peak_rss_mb, read_report, write_report
from animate124.io.run_dir import PhaseDirs, phase_dirs
from animate124.pace import PaceWatch
from animate124.signals import StopSignals, TrainingInterrupted, TrainingPreempted

__all__ = ["NonFiniteLossError", "Phase", "StepOutput", "TrainingInterrupted", "TrainingPreempted", "train"]

log = logging.getLogger(__name__)


class NonFiniteLossError(Animate124Error):
    """The loss became NaN/inf; the last good state was saved as a checkpoint."""


@dataclass
class StepOutput:
    """What :meth:`Phase.train_step` returns."""

    loss: Tensor
    """Scalar loss to minimise (already weighted)."""
    stats: dict[str, Tensor | float] = field(default_factory=dict)
    """Statistics for TensorBoard / the progress bar / report.json: detached 0-dim tensors (read on the host only
    at log time, :func:`host_stats`, so a step never waits for the GPU) or plain floats."""


def host_stats(stats: dict[str, Tensor | float]) -> dict[str, float]:
    """Stats as Python floats (the one place where step statistics are read on the host)."""
    return {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in stats.items()}


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` → cuda if available else cpu; ``cpu``; ``cuda`` / ``cuda:N`` (ConfigError when unavailable)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"device={spec} is not a device; use device=auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec} but CUDA is not available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec} but only {torch.cuda.device_count()} CUDA device(s); use device=cuda:0")
    return device


def seed_everything(seed: int) -> None:
    """Seed torch (CPU + CUDA), python ``random`` and numpy."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A resolved run config (dataclass or DictConfig) as a plain JSON-able dict (enums as strings)."""
    node = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


class Phase:
    """Base class of a training phase. Subclasses set ``name`` and implement build() and train_step()."""

    name: str = ""
    """The phase's folder name in the run directory (the PhaseKind value)."""
    pcfg: TrainLoopConfig
    """``cfg.phase`` as its phase's dataclass (subclasses narrow the annotation to their own config class)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.pcfg = typed_phase_config(cfg.phase)
        self.run_dir = Path(run_dir)
        self.device = device if device is not None else select_device(cfg.device)
        self.dirs: PhaseDirs = phase_dirs(self.run_dir, self.name)
        self.optimizer: torch.optim.Optimizer | None = None
        self.field: nn.Module | None = None
        self.occupancy: nn.Module | None = None
        self.history: list[dict[str, float]] = []
        """Validation metrics over the run (step, train time, metrics), restored on resume."""
        self.grad_scaler: torch.amp.GradScaler | None = None
        """The loop's GradScaler (set by :func:`train`; disabled when AMP is off)."""

    # ------------------------------------------------------------------ to implement / override
    def build(self) -> None:
        """Create modules on ``self.device`` and ``self.optimizer`` (called once, after seeding)."""
        raise NotImplementedError

    def init(self) -> None:
        """Fresh start (no checkpoint in this phase's folder): e.g. load ``cfg.init_from`` or the previous phase."""

    def train_step(self, step: int) -> StepOutput:
        """Forward pass of step ``step`` (0-based) under autocast; the loop does backward and the optimizer step."""
        raise NotImplementedError

    def refresh_occupancy(self, step: int) -> None:
        """Update the occupancy grid (called when ``step % render.update_interval == 0``, before the step)."""
        if self.occupancy is not None and self.field is not None:
            density = self.field.density  # type: ignore[union-attr]
            dynamic = bool(getattr(self.field, "is_dynamic", False))
            self.occupancy.update(lambda x, t: density(x, t if dynamic else None),  # type: ignore[operator]
                                  dynamic=dynamic)

    def validate(self, step: int) -> dict[str, float]:
        """Validation renders / metrics every ``val_every`` steps (not at the end: see final())."""
        return {}

    def final(self, step: int) -> dict[str, float]:
        """End-of-phase evaluation; the returned metrics go into report.json."""
        return {}

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (schedules, annealing)."""

    def modules_to_save(self) -> dict[str, nn.Module]:
        """Modules whose state goes into model.safetensors, by prefix (default: field and occupancy)."""
        mods = {"field": self.field, "occupancy": self.occupancy}
        return {k: v for k, v in mods.items() if v is not None}

    def load_modules(self, model_state: dict[str, Tensor]) -> None:
        """Load model.safetensors tensors into :meth:`modules_to_save` (strict; shape errors → CheckpointError)."""
        from animate124.fields import GridField, load_field_state

        for name, module in self.modules_to_save().items():
            state = split_state(model_state, name)
            if isinstance(module, GridField):
                load_field_state(module, state)
            else:
                module.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        """JSON-able phase state for state.json (beyond modules, optimizer and RNG)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ------------------------------------------------------------------ helpers
    @property
    def max_steps(self) -> int:
        return int(self.pcfg.max_steps)

    @property
    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.cfg)

    def _amp(self) -> bool:
        return bool(self.pcfg.amp) and self.device.type == "cuda"

    def _grad_clip(self) -> float | None:
        return self.pcfg.optim.grad_clip_value if isinstance(self.pcfg, AdamPhaseConfig) else None


# ---------------------------------------------------------------------------------------------- the loop
@dataclass
class _Session:
    phase: Phase
    scaler: torch.amp.GradScaler
    start_step: int = 0
    done: int = 0
    resumed_from: str | None = None
    t0: float = field(default_factory=time.perf_counter)
    val_time: float = 0.0
    last_stats: dict[str, Tensor | float] = field(default_factory=dict)
    """The last step's loss and stats, kept as tensors; converted by :func:`host_stats` when written."""
    last_saved: int = -1
    prev_train_time: float = 0.0
    """Training time (s, without validation) of earlier sessions, from the resumed checkpoint."""
    last_size: int = 0
    """Bytes of the last checkpoint written or loaded (the free-space precheck of the next one)."""
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    """Corrupt checkpoints skipped at resume (reported in report.json)."""
    stopped_by: str | None = None
    """The signal that stopped this session (SIGINT, SIGTERM, SIGUSR2...)."""
    pace: PaceWatch | None = None
    """Times the first steps; one warning when a CPU run would take hours (report.json ``cpu_estimate``)."""

    def save(self) -> Path:
        p = self.phase
        state = {
            "phase": p.name,
            "config": p.config_dict,
            "config_hash": config_hash(p.config_dict),
            "structural_hash": structural_hash(p.config_dict),
            "scaler": self.scaler.state_dict(),
            "history": p.history,
            "extra": p.extra_state(),
            "train_time_s": self.train_time(),
        }
        optim_state = p.optimizer.state_dict() if p.optimizer is not None else None
        keep = int(p.pcfg.keep_checkpoints)
        check_free_space(p.dirs.checkpoints, self.last_size, f"checkpoint step {self.done}")
        path = save_checkpoint(p.dirs.checkpoints, self.done, merge_states(p.modules_to_save()), optim_state, state,
                               keep, needed_bytes=self.last_size)
        self.last_saved, self.last_size = self.done, dir_size(path)
        lock.heartbeat(p.run_dir)
        return path

    def train_time(self) -> float:
        return self.prev_train_time + time.perf_counter() - self.t0 - self.val_time


def _resume(session: _Session) -> None:
    p = session.phase
    clean_partial(p.dirs.checkpoints)
    found = load_latest_valid(p.dirs.checkpoints, map_location=p.device)
    if found is None:
        p.init()
        return
    ckpt, (model_state, optim_state, state), session.fallbacks = found
    session.last_size = dir_size(ckpt)
    check_compatible(state.get("config", {}), p.config_dict, p.run_dir)
    p.load_modules(model_state)
    if p.optimizer is not None and optim_state.get("param_groups"):
        p.optimizer.load_state_dict(optim_state)
    if state.get("scaler"):
        session.scaler.load_state_dict(state["scaler"])
    if "rng" in state:
        set_rng_state(state["rng"])
    p.history = list(state.get("history", []))
    p.load_extra_state(state.get("extra", {}))
    session.start_step = session.done = session.last_saved = int(state["step"])
    session.prev_train_time = float(state.get("train_time_s", 0.0))
    session.resumed_from = str(ckpt)
    log.info("%s: resuming from %s (step %d)", p.name, ckpt, session.done)


def _progress(phase: Phase, start: int):
    enabled = bool(phase.pcfg.progress) and sys.stderr.isatty()
    from tqdm.auto import tqdm

    return tqdm(total=phase.max_steps, initial=start, disable=not enabled, desc=phase.name, dynamic_ncols=True,
                smoothing=0.1)


def _optimizer_step(phase: Phase, session: _Session, loss: Tensor) -> None:
    opt = phase.optimizer
    if opt is None:
        raise ConfigError(f"phase {phase.name} built no optimizer; set self.optimizer in build()")
    opt.zero_grad(set_to_none=True)
    session.scaler.scale(loss).backward()
    clip = phase._grad_clip()
    if clip is not None:
        session.scaler.unscale_(opt)
        params = [q for g in opt.param_groups for q in g["params"] if q.grad is not None]
        torch.nn.utils.clip_grad_value_(params, clip)
    session.scaler.step(opt)
    session.scaler.update()


def _log_scalars(writer: Any, phase: Phase, step: int, out: StepOutput) -> None:
    writer.add_scalar("train/loss", float(out.loss.detach()), step)
    for key, value in host_stats(out.stats).items():
        writer.add_scalar(f"train/{key}", value, step)
    if phase.optimizer is not None:
        for i, group in enumerate(phase.optimizer.param_groups):
            writer.add_scalar(f"lr/{group.get('name', i)}", group["lr"], step)


def _validate(phase: Phase, session: _Session, writer: Any, step: int) -> dict[str, float]:
    t = time.perf_counter()
    metrics = phase.validate(step)
    session.val_time += time.perf_counter() - t
    if metrics:
        phase.history.append({"step": step, "train_time_s": round(session.train_time(), 3), **metrics})
        for key, value in metrics.items():
            writer.add_scalar(f"val/{key}", value, step)
    return metrics


def _write_report(session: _Session, complete: bool, metrics: dict[str, float]) -> dict[str, Any]:
    p = session.phase
    old = read_report(p.dirs.report)
    wall = time.perf_counter() - session.t0
    steps_now = session.done - session.start_step
    report = {
        "phase": p.name,
        "complete": complete,
        "step": session.done,
        "max_steps": p.max_steps,
        "start_step": session.start_step,
        "resumed_from": session.resumed_from,
        "sessions": int(old.get("sessions", 0)) + 1,
        "wall_time_s": round(float(old.get("wall_time_s", 0.0)) + wall, 3),
        "session_wall_time_s": round(wall, 3),
        "train_time_s": round(session.train_time(), 3),
        "it_per_s": round(steps_now / max(wall - session.val_time, 1e-9), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_cuda_mb": peak_cuda_mb(p.device),
        "seed": p.cfg.seed,
        "config_hash": config_hash(p.config_dict),
        "structural_hash": structural_hash(p.config_dict),
        "env": environment_info(p.device),
        "metrics": metrics,
        "last_train_stats": host_stats(session.last_stats),
        "history": p.history,
        "extra": list(p.cfg.extra),
        "stopped_by": session.stopped_by,
        "job_id": lock.job_id(),
        "cpu_estimate": session.pace.estimate if session.pace is not None else None,
        "checkpoint_fallbacks": session.fallbacks,
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(p.dirs.report, report)
    return report


def _stop(session: _Session, stop: StopSignals, writer: Any, bar: Any) -> None:
    """Save a checkpoint and an incomplete report, hand the signal on (submitit requeues), raise the stop error."""
    bar.close()
    stop.saving = True  # a second signal from here on is logged and ignored
    session.stopped_by = stop.received.name if stop.received is not None else None
    try:
        path = session.save()
        _write_report(session, complete=False, metrics={})
        writer.close()
    finally:
        stop.restore()
    stop.chain()
    raise stop.error(f"interrupted at step {session.done}; checkpoint saved to {path}; re-run the same command to resume")


def train(phase: Phase) -> dict[str, Any]:
    """Run (or resume) ``phase`` to ``max_steps`` and return its report.

    Raises:
        TrainingInterrupted: Ctrl-C (a checkpoint of the completed steps was saved first).
        TrainingPreempted: SIGTERM or the preemption signal (likewise; under submitit its requeue runs instead).
        DiskFullError: No space for a checkpoint, video or report (older checkpoints stay intact).
        NonFiniteLossError: NaN/inf loss (the last good state was saved first).
        CheckpointError: The run dir holds an incompatible or corrupt checkpoint.
    """
    from torch.utils.tensorboard import SummaryWriter

    seed_everything(phase.cfg.seed)
    phase.dirs.make()
    phase.build()
    amp = phase._amp()
    session = _Session(phase, torch.amp.GradScaler("cuda", enabled=amp))
    phase.grad_scaler = session.scaler  # e.g. the static phase's sds_balance=original reads its scale
    _resume(session)
    phase.dirs.config.write_text(OmegaConf.to_yaml(OmegaConf.create(phase.config_dict)))
    interval = max(1, int(phase.cfg.render.update_interval))
    log_every = max(1, int(phase.pcfg.log_every))
    ckpt_every = int(phase.pcfg.checkpoint_every)
    val_every = int(phase.pcfg.val_every)
    writer = SummaryWriter(log_dir=str(phase.dirs.tb))
    bar = _progress(phase, session.done)
    session.pace = PaceWatch(phase.name, phase.device, session.start_step, phase.max_steps)
    stop = StopSignals().install()  # SIGINT / SIGTERM / preemption only set a flag, read at the step boundary
    try:
        for step in range(session.start_step, phase.max_steps):
            if step % interval == 0:
                phase.refresh_occupancy(step)
            with torch.autocast(phase.device.type, dtype=torch.float16, enabled=amp):
                out = phase.train_step(step)
            if not bool(torch.isfinite(out.loss.detach())):
                path = session.save()
                _write_report(session, complete=False, metrics={})
                raise NonFiniteLossError(
                    f"{phase.name}: loss became {float(out.loss.detach())} at step {step}; the last good state is "
                    f"saved in {path}; lower phase.optim.lr or set phase.optim.grad_clip_value=1.0, then re-run"
                )
            _optimizer_step(phase, session, out.loss)
            phase.after_step(step)
            session.done = step + 1
            session.last_stats = {"loss": out.loss.detach(), **out.stats}
            if session.done % log_every == 0 or session.done == phase.max_steps:
                _log_scalars(writer, phase, session.done, out)
                bar.set_postfix(loss=f"{float(out.loss.detach()):.4g}", refresh=False)
            bar.update(1)
            session.pace.step(session.done)
            if stop.requested:
                break
            if ckpt_every > 0 and session.done % ckpt_every == 0:
                session.save()
            if val_every > 0 and session.done % val_every == 0 and session.done < phase.max_steps:
                _validate(phase, session, writer, session.done)
    except KeyboardInterrupt:  # raised by a phase, or SIGINT outside the main thread
        stop.received = stop.received or signal.SIGINT
    finally:
        if not stop.requested:
            stop.restore()
    if stop.requested:
        _stop(session, stop, writer, bar)
    bar.close()
    if session.last_saved != session.done or latest_checkpoint(phase.dirs.checkpoints) is None:
        session.save()
    t = time.perf_counter()
    with disk_full_guard(f"the final renders of {phase.name}", phase.dirs.root, cleanup=[phase.dirs.videos]):
        metrics = phase.final(session.done)
    session.val_time += time.perf_counter() - t
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"final/{key}", value, session.done)
    writer.close()
    report = _write_report(session, complete=True, metrics=metrics)
    log.info("%s: done at step %d; report %s", phase.name, session.done, phase.dirs.report)
    return report
