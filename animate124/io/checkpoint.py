"""Atomic checkpoints: ``checkpoints/step-{step:07d}/{model,optim}.safetensors + state.json`` (DESIGN.md §4).

A checkpoint is written into a temporary sibling directory and then ``os.replace``d into place, so a crash mid-write
leaves at most a ``.tmp-*`` directory that :func:`latest_checkpoint` ignores. ``state.json`` is written last inside the
temporary directory; a step directory without it is treated as incomplete. state.json records the size and sha256 of
both tensor files; :func:`load_latest_valid` checks them (and the safetensors headers) at resume and falls back to the
previous checkpoint, with a warning, when the newest is truncated or garbled. A full disk during the write raises
:class:`~animate124.io.disk.DiskFullError` and removes the temporary directory, leaving older checkpoints untouched.

Example:
    >>> path = save_checkpoint(ckpt_dir, 100, model_state, optimizer.state_dict(), {"phase": "fit"}, keep=2)
    >>> model_state, optim_state, state = load_checkpoint(latest_checkpoint(ckpt_dir))
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from animate124 import __version__
from animate124.errors import CheckpointError
from animate124.io.disk import disk_full_guard, fsync_dir

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d{7})$")
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
STATE_FILE = "state.json"

# Config entries that change tensor shapes: a checkpoint only loads into a config that agrees on all of them.
STRUCTURAL_KEYS: dict[str, tuple[str, ...]] = {
    "field": (
        "kind",
        "encoding",
        "num_levels",
        "features_per_level",
        "base_resolution",
        "max_resolution",
        "log2_table_size",
        "keyframes",
        "log2_table_size_4d",
        "time_resolution_4d",
        "hidden_dim",
    ),
    "render": ("grid_resolution",),
    "phase": ("time_slots",),
}


def step_dir_name(step: int) -> str:
    """``step-0000123`` for step 123."""
    return f"step-{step:07d}"


def config_hash(cfg: dict[str, Any]) -> str:
    """Short sha256 of a JSON-able config dict (key order independent)."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def structural_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The sub-dict of ``cfg`` (a resolved run config as a dict) whose values change tensor shapes."""
    out: dict[str, Any] = {}
    for group, keys in STRUCTURAL_KEYS.items():
        section = cfg.get(group) or {}
        for key in keys:
            if isinstance(section, dict) and key in section:
                out[f"{group}.{key}"] = section[key]
    return out


def structural_hash(cfg: dict[str, Any]) -> str:
    """Hash of :func:`structural_config` (what must match for a checkpoint to load)."""
    return config_hash(structural_config(cfg))


def check_compatible(saved_cfg: dict[str, Any], cfg: dict[str, Any], run_dir: str | Path) -> None:
    """Raise CheckpointError when the saved config's tensor-shaping entries differ from the current ones.

    Args:
        saved_cfg: The resolved config stored in the checkpoint's state.json.
        cfg: The current resolved config.
        run_dir: The run directory (named in the message).
    """
    old, new = structural_config(saved_cfg), structural_config(cfg)
    diffs = [f"{k} {old[k]} vs {new[k]}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]
    if diffs:
        raise CheckpointError(
            f"run_dir {run_dir} holds a checkpoint of an incompatible config ({', '.join(diffs)}; saved vs now); "
            "use a new run_dir= or the original settings"
        )


# ----------------------------------------------------------------------------------------------- RNG state
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def get_rng_state() -> dict[str, Any]:
    """JSON-able RNG states of torch (CPU and every CUDA device), python ``random`` and numpy."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only when the device count matches)."""
    torch.set_rng_state(_unb64(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])


# ------------------------------------------------------------------------------------------ optimizer state
def flatten_optimizer_state(optim_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able rest.

    Returns:
        tensors: ``{"state.<param index>.<key>": tensor}`` for every tensor in the per-parameter state.
        meta: ``{"param_groups": [...], "scalars": {"<index>.<key>": value}}`` for everything else.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, pstate in optim_state.get("state", {}).items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": optim_state.get("param_groups", []), "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state` (a dict ``optimizer.load_state_dict`` accepts)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta.get("param_groups", [])}


def _to_saveable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; clone to contiguous CPU copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


# --------------------------------------------------------------------------------------------- save / load
def save_checkpoint(
    ckpt_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any] | None,
    state: dict[str, Any],
    keep: int = 2,
    needed_bytes: int = 0,
) -> Path:
    """Write ``ckpt_dir/step-{step:07d}/`` atomically and delete all but the newest ``keep`` checkpoints.

    Args:
        ckpt_dir: The phase's ``checkpoints/`` folder (created if missing).
        step: Completed optimisation steps.
        model_state: Named tensors of every saved module (e.g. ``field.*``, ``occupancy.*``).
        optim_state: ``optimizer.state_dict()`` (or None).
        state: JSON-able phase state (phase name, config, scaler state, ...); ``step``, ``version`` and the RNG
            states are added here.
        keep: How many checkpoints to keep (>= 1).
        needed_bytes: Expected size (e.g. of the previous checkpoint), named in a disk-full error.

    Returns:
        The final checkpoint directory.

    Raises:
        DiskFullError: ENOSPC / EDQUOT; the temporary directory is removed and older checkpoints are untouched.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / step_dir_name(step)
    tmp = ckpt_dir / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with disk_full_guard(f"checkpoint {final.name}", ckpt_dir, needed=needed_bytes or None):
            _write_checkpoint_files(tmp, step, model_state, optim_state, state)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written directory behind
        raise
    if final.exists():  # same step saved twice (e.g. periodic + final): swap the old one out, then delete it
        trash = ckpt_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(ckpt_dir)
    prune_checkpoints(ckpt_dir, keep)
    return final


def _write_checkpoint_files(tmp: Path, step: int, model_state: dict[str, torch.Tensor], optim_state: dict[str, Any] | None,
                            state: dict[str, Any]) -> None:
    """model.safetensors, optim.safetensors, then state.json (with their sizes and sha256) into ``tmp``."""
    tmp.mkdir()
    save_file(_to_saveable(model_state), str(tmp / MODEL_FILE))
    optim_tensors, optim_meta = flatten_optimizer_state(optim_state or {})
    save_file(_to_saveable(optim_tensors), str(tmp / OPTIM_FILE))
    full_state = dict(state)
    full_state.update(step=int(step), version=__version__, rng=get_rng_state(), optimizer=optim_meta,
                      files={name: file_digest(tmp / name) for name in (MODEL_FILE, OPTIM_FILE)})
    with open(tmp / STATE_FILE, "w") as f:
        json.dump(full_state, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())


def file_digest(path: str | Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of a file (fsynced first, so what is hashed is what is on disk)."""
    h = hashlib.sha256()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
        size = f.tell()
    return {"bytes": size, "sha256": h.hexdigest()}


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories (``step-NNNNNNN`` holding state.json), oldest first. Temp dirs are ignored."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = {}
    for p in ckpt_dir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found[p] = int(m.group(1))
    return sorted(found, key=found.__getitem__)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in ``ckpt_dir``, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and stale temp dirs of this process."""
    found = list_checkpoints(ckpt_dir)
    for old in found[: max(0, len(found) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory.

    Args:
        path: A ``step-NNNNNNN`` directory.
        map_location: Device of the returned tensors.

    Returns:
        model_state: Named tensors of model.safetensors.
        optim_state: A dict for ``optimizer.load_state_dict`` (empty state when none was saved).
        state: The parsed state.json (with ``step``, ``rng``, ``config``, ...).

    Raises:
        CheckpointError: Missing or corrupt files (the message names the path and the fix).
    """
    path = Path(path)
    fix = "delete it (the run restarts from the previous checkpoint or from scratch) or pass init_from=..."
    for name in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete ({name} missing); {fix}")
    try:
        with open(path / STATE_FILE) as f:
            state = json.load(f)
        device = str(map_location)
        model_state = load_file(str(path / MODEL_FILE), device=device)
        optim_tensors = load_file(str(path / OPTIM_FILE), device=device)
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(exc).__name__}: {exc}); {fix}") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} has a state.json without 'step'; {fix}")
    optim_state = unflatten_optimizer_state(optim_tensors, state.get("optimizer", {}))
    return model_state, optim_state, state


def verify_checkpoint(path: str | Path) -> None:
    """Check the sizes and sha256 that state.json records for the tensor files (CheckpointError on a mismatch).

    Checkpoints written before the digests were recorded pass (their safetensors headers are still checked on load).
    """
    path = Path(path)
    fix = "delete it (the run restarts from the previous checkpoint or from scratch) or pass init_from=..."
    try:
        with open(path / STATE_FILE) as f:
            files = json.load(f).get("files") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt (state.json unreadable: {exc}); {fix}") from exc
    for name, want in files.items():
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete ({name} missing); {fix}")
        size = (path / name).stat().st_size
        if size != want.get("bytes"):
            raise CheckpointError(f"checkpoint {path} is corrupt ({name} has {size} bytes, state.json recorded "
                                  f"{want.get('bytes')}); {fix}")
        h = hashlib.sha256()
        with open(path / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        if h.hexdigest() != want.get("sha256"):
            raise CheckpointError(f"checkpoint {path} is corrupt ({name} does not match the sha256 in state.json); {fix}")


def load_latest_valid(
    ckpt_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]], list[dict[str, str]]] | None:
    """Load the newest checkpoint that verifies, falling back over corrupt ones (each moved aside with one warning).

    Returns:
        None when ``ckpt_dir`` holds no checkpoint; else ``(path, (model_state, optim_state, state), fallbacks)``
        where ``fallbacks`` lists ``{"checkpoint", "moved_to", "reason"}`` of every corrupt newer checkpoint.

    Raises:
        CheckpointError: Every checkpoint is corrupt (one line naming the newest problem and the fix).
    """
    found = list_checkpoints(ckpt_dir)
    fallbacks: list[dict[str, str]] = []
    for path in reversed(found):
        try:
            verify_checkpoint(path)
            loaded = load_checkpoint(path, map_location=map_location)
        except CheckpointError as exc:
            aside = path.with_name(f".corrupt-{path.name}-{os.getpid()}")
            os.replace(path, aside)  # keep it for inspection, out of list_checkpoints and pruning
            fallbacks.append({"checkpoint": str(path), "moved_to": str(aside), "reason": str(exc)})
            log.warning("%s; falling back to the previous checkpoint (the corrupt one is kept as %s)", exc, aside.name)
            continue
        return path, loaded, fallbacks
    if fallbacks:
        raise CheckpointError(
            f"every checkpoint in {ckpt_dir} is corrupt (newest: {fallbacks[0]['reason'].split('; ')[0]}); they are "
            f"kept as .corrupt-*; delete the folder to restart the phase from scratch, or pass init_from=..."
        )
    return None


def clean_partial(ckpt_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-*`` / ``.old-*`` directories left by a killed save (call while holding the run lock)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    gone = [p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".old-"))]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def split_state(model_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``model_state`` under ``prefix.`` with the prefix removed (one module's state_dict)."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in model_state.items() if k.startswith(head)}


def merge_states(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """``{"<name>.<key>": tensor}`` over the state_dicts of ``modules``."""
    out: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            if isinstance(value, torch.Tensor):
                out[f"{name}.{key}"] = value
    return out
