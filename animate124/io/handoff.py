"""The one place that turns ``init_from`` / a run dir / phase names into a checkpoint (phase hand-off and export).

Used by the dynamic phase (start from static), refine (start from, and freeze, dynamic), fit (``init_from``) and
``export.scene`` (the latest finished phase of a run). Nothing is found by a relative-path guess: ``init_from`` is a
``step-NNNNNNN`` folder, a ``checkpoints/`` folder, a phase folder or a run dir; without it the run dir's phase folders
are searched in the given order, finished phases (``report.json`` ``complete``) first.

Example:
    >>> path, phase = find_checkpoint("outputs/cat", ("static",))                # the static phase's latest
    >>> path, phase = find_checkpoint("outputs/cat", ("refine", "dynamic", "static", "fit"))  # latest finished
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from animate124.errors import CheckpointError
from animate124.io.checkpoint import STATE_FILE, latest_checkpoint
from animate124.io.run_dir import phase_dirs, phase_done

log = logging.getLogger(__name__)


def _from_init(init_from: str, phases: Sequence[str]) -> Path:
    p = Path(init_from).expanduser()
    if (p / STATE_FILE).is_file():
        return p
    for cand in (p, p / "checkpoints", *(p / name / "checkpoints" for name in phases)):
        found = latest_checkpoint(cand)
        if found is not None:
            return found
    raise CheckpointError(f"init_from={init_from} holds no checkpoint (no step-NNNNNNN/state.json); pass a "
                          f"checkpoints/step-NNNNNNN folder, a phase folder with checkpoints/ or a run dir with "
                          f"{'|'.join(phases)}/checkpoints")


def find_checkpoint(run_dir: str | Path, phases: Sequence[str], init_from: Optional[str] = None,
                    missing: Optional[str] = None) -> tuple[Path, Optional[str]]:
    """The checkpoint to start from (or load), and the phase folder it came from.

    Args:
        run_dir: the run directory searched when ``init_from`` is not given.
        phases: phase names, in order of preference (e.g. ``("static",)`` for the dynamic phase).
        init_from: ``init_from=`` (a step folder, a checkpoints folder, a phase folder or a run dir), or None.
        missing: the error message when the run dir holds none (``{run_dir}`` is filled in).

    Returns:
        (checkpoint folder, phase name; None when it came from ``init_from``).

    Raises:
        CheckpointError: nothing found (the message names what is missing and how to fix it).
    """
    if init_from:
        return _from_init(init_from, phases), None
    run_dir = Path(run_dir)
    latest = {name: latest_checkpoint(phase_dirs(run_dir, name).checkpoints) for name in phases}
    for name in phases:
        found = latest[name]
        if found is not None and phase_done(run_dir, name):
            return found, name
    for name in phases:
        found = latest[name]
        if found is not None:
            if len(phases) > 1:
                log.warning("no finished phase in %s; using the unfinished phase %s", run_dir, name)
            return found, name
    raise CheckpointError((missing or "{run_dir} holds no checkpoint of " + ", ".join(phases)).format(run_dir=run_dir))
