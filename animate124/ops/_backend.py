"""Lazy loader of the compiled extension ``animate124._C`` (the only place that imports it).

Resolution order, on the first call of :func:`get` (never at import time):
1. ``from animate124 import _C`` (built by ``setup.py`` when a CUDA torch was importable at build time);
2. a JIT build of the same sources in ``cuda_ext/`` with ``torch.utils.cpp_extension.load`` (needs ``nvcc`` and a CUDA
   torch; cached in ``TORCH_EXTENSIONS_DIR``), printing once;
3. ``None``: the pure-torch reference in ``_reference.py`` is used (a warning is logged once if CUDA was expected).

``ANIMATE124_FORCE_REFERENCE=1`` forces the reference path for debugging.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

_SOURCE_DIR = Path(__file__).resolve().parents[2] / "cuda_ext"
_state: dict[str, object] = {"resolved": False, "module": None, "how": "unresolved", "error": None}


def force_reference() -> bool:
    """True when ``ANIMATE124_FORCE_REFERENCE`` is set to a true value."""
    return os.environ.get("ANIMATE124_FORCE_REFERENCE", "0").lower() not in ("", "0", "false", "no")


def _sources() -> list[str]:
    if not _SOURCE_DIR.is_dir():
        return []
    srcs = [str(_SOURCE_DIR / "bindings.cpp")] + sorted(str(p) for p in (_SOURCE_DIR / "src").glob("*.cu"))
    return [s for s in srcs if Path(s).exists()]


def _jit_build() -> ModuleType | None:
    from torch.utils.cpp_extension import CUDA_HOME, load

    sources = _sources()
    if not sources or CUDA_HOME is None or shutil.which("nvcc") is None:
        return None
    print("animate124: JIT-building the CUDA kernels (first use only; cached in TORCH_EXTENSIONS_DIR) ...", flush=True)
    return load(
        name="animate124_C",
        sources=sources,
        extra_include_paths=[str(_SOURCE_DIR / "include")],
        extra_cflags=["-O3"],  # no -std: torch adds the standard its headers need
        extra_cuda_cflags=["-O3"],  # no --use_fast_math: the march lattice must round like the reference
        verbose=False,
    )


def get() -> ModuleType | None:
    """The compiled extension, or None when it is unavailable (resolved once per process)."""
    if _state["resolved"]:
        return _state["module"]  # type: ignore[return-value]
    _state["resolved"] = True
    if not torch.cuda.is_available():
        _state["how"] = "no CUDA device"
        return None
    try:
        from animate124 import _C  # type: ignore[attr-defined]

        _state.update(module=_C, how="prebuilt animate124._C")
        return _C
    except ImportError:
        pass
    try:
        module = _jit_build()
    except Exception as exc:  # a failed JIT build must not kill the run: fall back to the reference, loudly
        _state.update(how="JIT build failed", error=repr(exc))
        log.warning("animate124: CUDA kernels unavailable (%s); using the pure-torch reference (slower).", exc)
        return None
    if module is None:
        _state["how"] = "no nvcc/CUDA toolkit or no sources"
        log.warning("animate124: CUDA kernels cannot be built here; using the pure-torch reference (slower).")
        return None
    _state.update(module=module, how="JIT build")
    return module


def available() -> bool:
    """True when the compiled kernels can be used."""
    return get() is not None


def backend_info() -> dict[str, object]:
    """How the backend was resolved (for report.json and benchmarks)."""
    get()
    return {"available": _state["module"] is not None, "how": _state["how"], "error": _state["error"],
            "force_reference": force_reference()}


def use_cuda(*tensors: torch.Tensor) -> bool:
    """Dispatch rule of every public op: CUDA inputs, kernels available, reference not forced."""
    return all(t.is_cuda for t in tensors) and not force_reference() and available()
