"""Run directory layout (DESIGN.md §4): ``<run_dir>/inputs.json`` + one subfolder per phase.

```
<run_dir>/
  inputs.json                 image, prompt, static_prompt, case (later phases need not repeat them)
  <phase>/config.yaml         the resolved config of the phase's latest session
  <phase>/report.json         wall time, steps, it/s, memory, metrics; "complete": true once finished
  <phase>/checkpoints/        step-NNNNNNN/{model,optim}.safetensors + state.json
  <phase>/tb/ val/ videos/    TensorBoard events, validation renders, videos
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animate124.errors import InputError

INPUTS_FILE = "inputs.json"
INPUT_KEYS = ("image", "prompt", "static_prompt", "case")


@dataclass(frozen=True)
class PhaseDirs:
    """Paths of one phase's folder inside a run directory."""

    root: Path
    """``<run_dir>/<phase>``."""

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tb(self) -> Path:
        return self.root / "tb"

    @property
    def val(self) -> Path:
        return self.root / "val"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    def make(self) -> "PhaseDirs":
        """Create the folders (idempotent) and return self."""
        for d in (self.root, self.checkpoints, self.tb, self.val, self.videos):
            d.mkdir(parents=True, exist_ok=True)
        return self


def phase_dirs(run_dir: str | Path, phase: str) -> PhaseDirs:
    """The (not yet created) folders of ``phase`` in ``run_dir``."""
    return PhaseDirs(Path(run_dir) / str(phase))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to ``path`` through a temp file + ``os.replace`` (readers never see a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves neither a half-written file nor a temp file
        raise


def read_json(path: str | Path) -> dict[str, Any]:
    """Parse a JSON object file; InputError (naming the file and the fix) when unreadable."""
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{path} not found; check the path") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); fix or delete the file") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object; fix or delete the file")
    return data


def save_inputs(
    run_dir: str | Path,
    image: str | None = None,
    prompt: str | None = None,
    static_prompt: str | None = None,
    case: str | None = None,
) -> dict[str, Any]:
    """Record the run's inputs in ``<run_dir>/inputs.json``, merging with what is already there.

    Non-None arguments override stored values; the image path is stored absolute. Returns the merged inputs.
    """
    merged = load_inputs(run_dir)
    given = {"image": str(Path(image).resolve()) if image else None, "prompt": prompt,
             "static_prompt": static_prompt, "case": case}
    merged.update({k: v for k, v in given.items() if v is not None})
    write_json_atomic(Path(run_dir) / INPUTS_FILE, merged)
    return merged


def load_inputs(run_dir: str | Path) -> dict[str, Any]:
    """The stored inputs of a run (keys image, prompt, static_prompt, case; missing ones are None)."""
    path = Path(run_dir) / INPUTS_FILE
    data = read_json(path) if path.is_file() else {}
    return {k: data.get(k) for k in INPUT_KEYS} | {k: v for k, v in data.items() if k not in INPUT_KEYS}


def phase_done(run_dir: str | Path, phase: str) -> bool:
    """True when ``<run_dir>/<phase>/report.json`` marks the phase complete."""
    path = phase_dirs(run_dir, phase).report
    if not path.is_file():
        return False
    try:
        return bool(read_json(path).get("complete", False))
    except InputError:
        return False
