"""``python -m animate124.run [overrides]``: compose the Hydra config, convert it once, run the phase.

Errors meant for the user (:class:`~animate124.errors.Animate124Error`, Hydra composition errors such as a typo'd key,
a wrong type or an unknown group option) print ONE line ``error: <message>`` on stderr and exit with code 2; a full
traceback only with ``debug=true``. Ctrl-C saves a checkpoint and exits 130; SIGTERM and the preemption signal
(``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default) save one and exit 75 (under submitit, its requeue takes over); re-running
the same command resumes. A second run on the same run dir stops at once (``<run_dir>/.lock``, animate124.io.lock).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import animate124.config.store  # noqa: F401  (registers the schemas before Hydra composes)
from animate124.errors import Animate124Error, ConfigError

log = logging.getLogger("animate124.run")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


_EXIT: dict[str, int] = {"code": 0}
"""Exit code set by the task function: raising out of it would make Hydra print 'Error executing job ...'."""


def one_line(exc: BaseException) -> str:
    """A one-line message of ``exc`` and its causes: the first line of each message, joined with '; '."""
    parts: list[str] = []
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        first = next((ln.strip() for ln in str(cur).splitlines() if ln.strip()), type(cur).__name__)
        if first not in parts:
            parts.append(first)
        cur = cur.__cause__
    return "; ".join(parts)


def override_hint(exc: BaseException, argv: list[str]) -> str:
    """The fix for a bad override: how to quote non-ASCII text (Hydra's lexer rejects it unquoted), else --help."""
    if "NoViableAlt" in one_line(exc):
        for i, arg in enumerate(argv):
            if "=" in arg and not arg.isascii():
                key, value = arg.split("=", 1)
                rest = itertools.takewhile(lambda a: "=" not in a and not a.startswith("-"), argv[i + 1:])
                value = " ".join([value, *rest]).strip("'\"").replace("'", "\\'")
                return (f"Hydra reads non-ASCII text only inside quotes: write \"{key}='{value}'\" (single quotes for "
                        f"Hydra, double quotes around them for the shell)")
    return "check the override (python -m animate124.run --help lists groups and keys)"


def _debug_requested(argv: list[str]) -> bool:
    return any(a.lstrip("+").lower() in ("debug=true", "debug=1", "debug=yes") for a in argv)


def check_gpu_memory_gb(value: float | None) -> None:
    """``gpu_memory_gb`` is unset or a positive number of GB (ConfigError naming the fix otherwise)."""
    if value is not None and not value > 0:
        raise ConfigError(f"gpu_memory_gb={value} is not a memory budget; give a positive number of GB "
                          f"(e.g. gpu_memory_gb=24) or leave it unset")


def apply_memory_budget(obj: Any, run_dir: Path) -> Any:
    """``gpu_memory_gb`` set: the estimator's budget planner turns memory levers on (exact ones first) until every
    phase's estimate fits. The levers go to ``<run_dir>/memory_budget.json`` and, as ``memory_lever=...`` tags, to
    report.json; each is logged (by the planner) with its estimated time cost and whether it changes results."""
    import dataclasses
    import json

    from animate124.estimate.levers import plan

    planned, budget = plan(obj, float(obj.gpu_memory_gb))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "memory_budget.json").write_text(json.dumps(budget, indent=1, default=str))
    if not budget["fits"]:
        log.warning("gpu_memory_gb=%g: the estimate does not fit even with every lever on; running anyway",
                    obj.gpu_memory_gb)
    tags = [f"memory_lever={lv['override']}" for lv in budget["levers"]]
    return dataclasses.replace(planned, extra=[*planned.extra, *tags])


def _run(cfg: DictConfig) -> dict[str, Any]:
    """Convert the composed config and run the phase in Hydra's run dir."""
    from animate124.io.run_dir import save_inputs
    from animate124.phases import run_phase

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    obj = OmegaConf.to_object(cfg)
    check_gpu_memory_gb(obj.gpu_memory_gb)
    if obj.gpu_memory_gb is not None:
        obj = apply_memory_budget(obj, run_dir)
    if obj.image or obj.prompt or obj.static_prompt or obj.case.name:
        save_inputs(run_dir, image=obj.image, prompt=obj.prompt, static_prompt=obj.static_prompt, case=obj.case.name)
    report = run_phase(obj, run_dir)
    metrics = report.get("metrics", {}) if isinstance(report, dict) else {}
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{obj.phase.kind.value} done: {run_dir}" + (f" ({shown})" if shown else ""))
    return report


@hydra.main(config_path="pkg://animate124.configs", config_name="run", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from animate124.io.lock import RunLock
    from animate124.signals import TrainingInterrupted

    debug = bool(cfg.get("debug", False))
    _EXIT["code"] = 0
    try:
        # one run per run dir (<run_dir>/.lock, held for the whole phase or chain; see animate124.io.lock)
        with RunLock(HydraConfig.get().runtime.output_dir, stale_s=float(cfg.lock_stale_s),
                     heartbeat_s=float(cfg.lock_heartbeat_s)):
            _run(cfg)
    except Animate124Error as exc:
        if debug:
            traceback.print_exc()
        prefix = "" if isinstance(exc, TrainingInterrupted) else "error: "
        print(f"{prefix}{one_line(exc)}", file=sys.stderr)
        _EXIT["code"] = int(getattr(exc, "exit_code", EXIT_USER_ERROR))
    except OmegaConfBaseException as exc:  # e.g. a required value left MISSING, caught by to_object
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}; check the overrides (python -m animate124.run --cfg job shows the config)",
              file=sys.stderr)
        _EXIT["code"] = EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point: run Hydra and translate user errors into one line + exit code 2. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = _debug_requested(argv)
    # HYDRA_FULL_ERROR makes Hydra re-raise composition errors instead of printing a multi-line report + exit 1,
    # so they can be shown as one line here.
    old_full, old_argv = os.environ.get("HYDRA_FULL_ERROR"), sys.argv
    os.environ["HYDRA_FULL_ERROR"] = "1"
    sys.argv = [old_argv[0] if old_argv else "animate124.run", *argv]
    _EXIT["code"] = 0
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(exc)}; {override_hint(exc, argv)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as exc:  # --help, --cfg, or Hydra's own argument errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USER_ERROR)
        return EXIT_USER_ERROR if code == 1 else code
    finally:
        sys.argv = old_argv
        if old_full is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = old_full
    return _EXIT["code"]


if __name__ == "__main__":
    sys.exit(main())
