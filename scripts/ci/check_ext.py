"""Check a built ``animate124._C``: it imports, and it exports exactly the functions ``ops/_cuda.py`` calls.

Usage (from a folder where the clone's ``animate124`` does not shadow the installed one):
    python scripts/ci/check_ext.py --cuda-py /path/to/clone/animate124/ops/_cuda.py [--ninja build.ninja]

``--ninja`` also checks that the recorded nvcc flags embed PTX for compute_90 (newer GPUs JIT from it).
Exit code 0 when everything holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def used_names(cuda_py: Path) -> set[str]:
    """Every ``_ext().NAME`` in ops/_cuda.py."""
    return set(re.findall(r"_ext\(\)\.(\w+)", cuda_py.read_text()))


def exported_names(module) -> set[str]:
    """Public callables of the compiled module."""
    return {n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cuda-py", required=True, type=Path)
    p.add_argument("--ninja", type=Path, default=None, help="build.ninja of the build, to check the PTX flag")
    args = p.parse_args(argv)
    import torch

    import animate124
    from animate124 import _C

    problems: list[str] = []
    want, have = used_names(args.cuda_py), exported_names(_C)
    if not want:
        problems.append(f"no _ext().NAME calls found in {args.cuda_py}")
    if want - have:
        problems.append(f"_C lacks {sorted(want - have)} that ops/_cuda.py calls")
    if have - want:
        problems.append(f"_C exports {sorted(have - want)} that ops/_cuda.py never calls")
    if args.ninja is not None:
        flags = args.ninja.read_text() if args.ninja.is_file() else ""
        if "code=compute_90" not in flags:
            problems.append(f"no PTX for compute_90 in the nvcc flags of {args.ninja}")
        print("nvcc gencode:", " ".join(sorted(set(re.findall(r"-gencode=\S+", flags)))))
    print(f"_C: {_C.__file__}\npackage: {animate124.__file__}\ntorch {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"exports ({len(have)}): {', '.join(sorted(have))}")
    for line in problems:
        print(f"check_ext: {line}", file=sys.stderr)
    print("check_ext: OK" if not problems else f"check_ext: FAILED ({len(problems)} problems)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
