"""Training phases. ``run_phase`` dispatches on ``cfg.phase.kind`` to ``animate124.phases.<module>`` (imported lazily).

A phase module exposes ``PHASE`` (a :class:`~animate124.phases.base.Phase` subclass, run by
:func:`~animate124.phases.base.train`) or ``run(cfg, run_dir) -> dict`` (a runner of other phases, e.g. ``all``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from animate124.config.phases import PHASES, PhaseKind, phase_module
from animate124.errors import ConfigError

PHASE_MODULES: dict[PhaseKind, str] = {spec.kind: phase_module(spec.kind) for spec in PHASES}
"""Kind → module, from the one phase table (config/phases.py::PHASES)."""


def load_phase_module(kind: PhaseKind | str) -> Any:
    """Import the module implementing phase ``kind`` (ConfigError when it does not exist in this version)."""
    try:
        kind = PhaseKind(kind)
    except ValueError as exc:
        raise ConfigError(f"unknown phase '{kind}'; use one of {', '.join(k.value for k in PhaseKind)}") from exc
    name = PHASE_MODULES[kind]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # a dependency of the phase module is missing: not ours to rename
            raise
        raise ConfigError(f"phase={kind.value} is not implemented in this version ({name} is missing); "
                          f"use one of the available phases, e.g. phase=fit") from exc


def run_phase(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) the phase ``cfg.phase.kind`` in ``run_dir`` and return its report dict."""
    module = load_phase_module(cfg.phase.kind)
    if hasattr(module, "run"):
        return module.run(cfg, Path(run_dir))
    if not hasattr(module, "PHASE"):
        raise ConfigError(f"{module.__name__} defines neither PHASE nor run(); it cannot be started")
    from animate124.phases.base import train

    return train(module.PHASE(cfg, Path(run_dir)))
