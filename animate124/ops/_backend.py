"""Lazy loader of the compiled extension ``animate124._C`` (the only place that imports it).

Resolution order, on the first call of :func:`get` (never at import time):
1. ``from animate124 import _C`` (built by ``setup.py`` when a CUDA torch was importable at build time);
2. a JIT build of the same sources in ``cuda_ext/`` with ``torch.utils.cpp_extension.load`` (needs a CUDA torch and
   the toolkit, found by ``_toolkit.find_cuda_home``: ``nvcc`` need not be on PATH; cached in
   ``TORCH_EXTENSIONS_DIR``), printing once;
3. ``None``: the pure-torch reference in ``_reference.py`` is used. With a CUDA device present that is a fallback:
   ONE warning names the reason, and ``backend_info()['fallback']`` keeps it for report.json (``env.backend``).

``ANIMATE124_FORCE_REFERENCE=1`` forces the reference path for debugging.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from types import ModuleType

import torch

from animate124.ops._toolkit import CudaToolkitNotFound, find_cuda_home

log = logging.getLogger(__name__)

_SOURCE_DIR = Path(__file__).resolve().parents[2] / "cuda_ext"


def _initial_state() -> dict[str, object]:
    return {"resolved": False, "module": None, "how": "unresolved", "error": None, "fallback": None,
            "prebuilt_error": None, "cuda_home": None}


_state: dict[str, object] = _initial_state()


def force_reference() -> bool:
    """True when ``ANIMATE124_FORCE_REFERENCE`` is set to a true value."""
    return os.environ.get("ANIMATE124_FORCE_REFERENCE", "0").lower() not in ("", "0", "false", "no")


def _sources() -> list[str]:
    if not _SOURCE_DIR.is_dir():
        return []
    srcs = [str(_SOURCE_DIR / "bindings.cpp")] + sorted(str(p) for p in (_SOURCE_DIR / "src").glob("*.cu"))
    return [s for s in srcs if Path(s).exists()]


def _use_cuda_home(home: str) -> None:
    """Make torch's extension builder use ``home`` (its module-level guess is fixed at import time)."""
    import torch.utils.cpp_extension as cpp

    os.environ["CUDA_HOME"] = home
    cpp.CUDA_HOME = home


def _jit_build() -> ModuleType:
    """JIT-build the kernels for the GPUs present.

    Raises:
        CudaToolkitNotFound: no sources, no toolkit, or a toolkit without ``bin/nvcc`` (the reason is the message).
    """
    sources = _sources()
    if not sources:
        raise CudaToolkitNotFound(f"no CUDA sources under {_SOURCE_DIR} (an install without cuda_ext/)")
    home, how = find_cuda_home(prefer=torch.version.cuda)
    if not (Path(home) / "bin" / "nvcc").is_file():
        raise CudaToolkitNotFound(f"the CUDA toolkit {home} ({how}) has no bin/nvcc: set CUDA_HOME to a full toolkit")
    _use_cuda_home(home)
    _state["cuda_home"] = home
    from torch.utils.cpp_extension import load

    print(f"animate124: JIT-building the CUDA kernels with CUDA_HOME={home} (first use only; cached in "
          "TORCH_EXTENSIONS_DIR) ...", flush=True)
    return load(
        name="animate124_C",
        sources=sources,
        extra_include_paths=[str(_SOURCE_DIR / "include")],
        extra_cflags=["-O3"],  # no -std: torch adds the standard its headers need
        extra_cuda_cflags=["-O3"],  # no --use_fast_math: the march lattice must round like the reference
        verbose=False,
    )


def _prebuilt() -> ModuleType | None:
    """``animate124._C`` if it imports; a present but broken build (ABI mismatch, ...) is recorded, not raised."""
    if importlib.util.find_spec("animate124._C") is None:
        return None
    try:
        from animate124 import _C  # type: ignore[attr-defined]
    except ImportError as exc:
        _state["prebuilt_error"] = f"{type(exc).__name__}: {exc}"
        return None
    return _C


def _fall_back(how: str, reason: str) -> None:
    """Record why the kernels are unavailable and say so once: the run goes on with the (slower) reference."""
    _state.update(how=how, error=reason, fallback=f"{how}: {reason}")
    log.warning("animate124: CUDA kernels unavailable (%s: %s); using the pure-torch reference ops (same results, "
                "much slower). See report.json env.backend.", how, reason)


def get() -> ModuleType | None:
    """The compiled extension, or None when it is unavailable (resolved once per process).

    Without a CUDA device this is the expected CPU path (no warning). With one, a failed import and a failed or
    impossible JIT build log ONE warning naming the reason, which ``backend_info()['fallback']`` (in report.json) keeps.
    """
    if _state["resolved"]:
        return _state["module"]  # type: ignore[return-value]
    _state["resolved"] = True
    if not torch.cuda.is_available():
        _state["how"] = "no CUDA device"
        return None
    module = _prebuilt()
    if module is not None:
        _state.update(module=module, how="prebuilt animate124._C")
        return module
    try:
        module = _jit_build()
    except CudaToolkitNotFound as exc:
        _fall_back("no CUDA toolkit", str(exc))
        return None
    except Exception as exc:  # noqa: BLE001 - a failed JIT build must not kill the run: fall back, loudly
        _fall_back("JIT build failed", f"{type(exc).__name__}: {exc}")
        return None
    _state.update(module=module, how="JIT build")
    return module


def reset() -> None:
    """Forget the resolution (tests; the next :func:`get` resolves again)."""
    _state.clear()
    _state.update(_initial_state())


def available() -> bool:
    """True when the compiled kernels can be used."""
    return get() is not None


def backend_info() -> dict[str, object]:
    """How the backend was resolved (for report.json and benchmarks)."""
    get()
    return {"available": _state["module"] is not None, "how": _state["how"], "error": _state["error"],
            "fallback": _state["fallback"], "prebuilt_error": _state["prebuilt_error"], "cuda_home": _state["cuda_home"],
            "force_reference": force_reference()}


def use_cuda(*tensors: torch.Tensor) -> bool:
    """Dispatch rule of every public op: CUDA inputs, kernels available, reference not forced."""
    return all(t.is_cuda for t in tensors) and not force_reference() and available()
