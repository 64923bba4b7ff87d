"""Find the CUDA toolkit and turn an arch list into nvcc flags (stdlib only: ``setup.py`` loads this file by path).

Used by ``setup.py`` (AOT build of ``animate124._C``) and ``ops/_backend.py`` (JIT build). torch's own guess of
``CUDA_HOME`` is the parent of the ``nvcc`` found on PATH; when that ``nvcc`` is a wrapper script outside the toolkit
(``/usr/local/bin/nvcc`` doing ``exec /usr/local/cuda-13.0/bin/nvcc "$@"``) the guess holds no headers and the build
fails with "cuda_runtime.h: No such file". :func:`find_cuda_home` follows links and wrapper scripts instead.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

ARCH_ENV = "ANIMATE124_CUDA_ARCHS"
DEFAULT_ARCHS = "7.0;7.5;8.0;8.6;8.9;9.0"  # 7.0 is dropped under CUDA 13 (see gencode_flags)
_MARKER = Path("include") / "cuda_runtime.h"
_NVCC_IN_SCRIPT = re.compile(r"""(/[^\s"'`;|&()<>$]*/nvcc)(?![\w.-])""")
_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)(?:\.(\d))?([af]?)$")


class CudaToolkitNotFound(RuntimeError):
    """No CUDA toolkit (a folder holding ``include/cuda_runtime.h``) could be found."""


def is_toolkit(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds ``include/cuda_runtime.h``."""
    return (Path(path) / _MARKER).is_file()


def _script_targets(path: Path) -> list[Path]:
    """Absolute ``.../nvcc`` paths named in a small text file (a wrapper script), in order of appearance."""
    try:
        if path.stat().st_size > 65536:
            return []
        text = path.read_bytes()
    except OSError:
        return []
    if b"\0" in text:  # a real binary, not a wrapper
        return []
    return [Path(m) for m in _NVCC_IN_SCRIPT.findall(text.decode("utf-8", "replace"))]


def nvcc_toolkit(nvcc: str | os.PathLike[str], depth: int = 4) -> Path | None:
    """The toolkit behind an ``nvcc`` path: follows symlinks and wrapper scripts (up to ``depth`` hops)."""
    real = Path(os.path.realpath(nvcc))
    if is_toolkit(real.parent.parent):
        return real.parent.parent
    if depth <= 0:
        return None
    for target in _script_targets(real):
        if target != real and target.exists():
            found = nvcc_toolkit(target, depth - 1)
            if found is not None:
                return found
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    nums = re.findall(r"\d+", path.name)
    return tuple(int(n) for n in nums) if nums else (-1,)


def conventional_toolkits(roots: tuple[str, ...] = ("/usr/local", "/opt")) -> list[Path]:
    """``<root>/cuda`` then ``<root>/cuda-X.Y`` (newest first) under each root, keeping only real toolkits."""
    found: list[Path] = []
    for root in map(Path, roots):
        if is_toolkit(root / "cuda"):
            found.append(root / "cuda")
        versioned = [p for p in root.glob("cuda-*") if is_toolkit(p)] if root.is_dir() else []
        found += sorted(versioned, key=_version_key, reverse=True)
    return found


def find_cuda_home(env: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which,
                   roots: tuple[str, ...] = ("/usr/local", "/opt"), prefer: str | None = None) -> tuple[str, str]:
    """The CUDA toolkit to build against, and how it was found.

    Order: ``CUDA_HOME`` / ``CUDA_PATH`` (must be a toolkit); the ``nvcc`` on PATH, following links and wrapper
    scripts; ``/usr/local/cuda`` and ``/usr/local/cuda-X.Y`` (``prefer="13.0"``, torch's CUDA version, ranks that
    release's folder first, then its major), likewise under ``/opt``.

    Returns:
        ``(cuda_home, how)``: the folder holding ``include/cuda_runtime.h`` and a short description of the source.

    Raises:
        CudaToolkitNotFound: a variable points at no toolkit, or nothing was found (the message names the fix).
    """
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = env.get(var, "")
        if value:
            if is_toolkit(value):
                return str(Path(value)), f"{var}"
            raise CudaToolkitNotFound(f"{var}={value} holds no {_MARKER}: point it at the CUDA toolkit folder or unset it")
    nvcc = which("nvcc")
    if nvcc:
        home = nvcc_toolkit(nvcc)
        if home is not None:
            return str(home), f"nvcc on PATH ({nvcc})"
    candidates = conventional_toolkits(roots)
    if prefer and candidates:
        major = prefer.split(".")[0]
        candidates.sort(key=lambda p: (p.name != f"cuda-{prefer}", not p.name.startswith(f"cuda-{major}.")))
    if candidates:
        return str(candidates[0]), "conventional folder"
    where = f"nvcc on PATH is {nvcc}, which leads to no toolkit" if nvcc else "no nvcc on PATH"
    raise CudaToolkitNotFound(f"no CUDA toolkit found ({where}; no {'/cuda*, '.join(roots)}/cuda*): "
                              f"set CUDA_HOME to the folder that holds {_MARKER}")


def parse_arch_list(spec: str, source: str = ARCH_ENV) -> list[str]:
    """Compute capabilities from ``"8.0;9.0;9.0a"``, ``"80 90"``, ``"7.5,8.6+PTX"`` or ``"sm_90a"`` → ``["80", "90", "90a"]``.

    Separators are ``;``, ``,`` and whitespace; a ``+PTX`` suffix is accepted and ignored (PTX is embedded for the
    highest plain arch anyway, see :func:`gencode_flags`); duplicates are dropped, order kept.

    Raises:
        ValueError: an entry is not a compute capability (the message names ``source`` and the expected form).
    """
    out: list[str] = []
    for raw in re.split(r"[;,\s]+", spec.strip()):
        if not raw:
            continue
        token = raw[:-4] if raw.lower().endswith("+ptx") else raw
        m = _ARCH.match(token.lower())
        if m is None or (m.group(2) is None and len(m.group(1)) < 2):
            raise ValueError(f"{source}: cannot parse {raw!r} as a CUDA arch (use e.g. \"8.0;9.0;9.0a\" or \"80;90\")")
        arch = f"{m.group(1)}{m.group(2) or ''}{m.group(3)}"
        if arch not in out:
            out.append(arch)
    if not out:
        raise ValueError(f"{source}: empty arch list (use e.g. \"8.0;9.0\")")
    return out


def _arch_number(arch: str) -> int:
    return int(arch.rstrip("af"))


def gencode_flags(archs: list[str], cuda_major: int) -> list[str]:
    """nvcc ``-gencode`` flags: SASS for every arch, plus PTX for the highest plain arch so newer GPUs JIT from it.

    CUDA 13 dropped sm_70/sm_72 (Volta): archs below 75 are removed there. Arch-specific targets (``90a``) get SASS
    only, since their PTX does not run on later GPUs.

    Raises:
        ValueError: no arch is left for this CUDA version.
    """
    kept = [a for a in archs if cuda_major < 13 or _arch_number(a) >= 75]
    if not kept:
        raise ValueError(f"{ARCH_ENV}: none of {archs} is supported by CUDA {cuda_major} (it needs sm_75 or newer)")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in kept]
    plain = [a for a in kept if a.isdigit()]
    if plain:
        top = max(plain, key=_arch_number)
        flags.append(f"-gencode=arch=compute_{top},code=compute_{top}")
    return flags
