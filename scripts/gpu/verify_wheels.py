"""Check the wheel folder for the GPU machine: one wheel per listed package, under the size limit, every dependency
either carried or already on the machine, and (``--install-test``) an offline ``pip install --target`` for Python 3.12.

Usage:
    python scripts/gpu/verify_wheels.py [--dir .whl] [--install-test] [--json OUT.json]

Exit code 0 when everything holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_MIB = 64.0
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "os_name": "posix",
              "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "extra": ""}


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> list[str]:
    """Names in a list file (``#`` comments; whitespace or newlines separate; ``name==version`` keeps the name)."""
    words = " ".join(line.split("#", 1)[0] for line in path.read_text().splitlines()).split()
    return [norm(re.split(r"[=<>!~\[; ]", w, maxsplit=1)[0]) for w in words]


def wheel_requires(wheel: Path) -> tuple[str, list[str]]:
    """(distribution name, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    name = re.search(r"^Name: (.+)$", text, re.M)
    return norm(name.group(1).strip() if name else wheel.name.split("-")[0]), re.findall(r"^Requires-Dist: (.+)$", text, re.M)


def needed_on_device(req: str) -> str | None:
    """The dependency name if ``req`` applies on the device (Python 3.12, Linux x86-64, no extras), else None."""
    from packaging.requirements import Requirement

    r = Requirement(req)
    if r.marker is not None and not r.marker.evaluate(DEVICE_ENV):
        return None
    return norm(r.name)


def check(folder: Path, listed: list[str], device: set[str], limit_mib: float) -> tuple[list[str], dict]:
    """Problems and a summary of the wheel folder."""
    problems: list[str] = []
    wheels = sorted(folder.glob("*.whl"))
    names: dict[str, list[str]] = {}
    reqs: dict[str, list[str]] = {}
    for w in wheels:
        name, requires = wheel_requires(w)
        names.setdefault(name, []).append(w.name)
        reqs[name] = requires
    size_mib = sum(w.stat().st_size for w in wheels) / 2**20
    for name, files in names.items():
        if len(files) > 1:
            problems.append(f"{name}: {len(files)} wheels ({', '.join(files)}); keep one (two stop the device install)")
    for name in listed:
        if name not in names:
            problems.append(f"{name}: listed in wheels.txt but no wheel in {folder}")
    for name in names:
        if name not in listed:
            problems.append(f"{name}: a wheel in {folder} that wheels.txt does not list")
    for name, requires in reqs.items():
        for req in requires:
            dep = needed_on_device(req)
            if dep is not None and dep not in names and dep not in device:
                problems.append(f"{name} needs {req!r}: neither carried nor on the GPU machine; add it to wheels.txt")
    if size_mib >= limit_mib:
        problems.append(f"the wheels take {size_mib:.1f} MiB, over the {limit_mib:g} MiB the GPU machine accepts")
    summary = {"folder": str(folder), "wheels": [w.name for w in wheels], "size_mib": round(size_mib, 2),
               "limit_mib": limit_mib}
    return problems, summary


def install_test(folder: Path) -> tuple[list[str], float]:
    """Offline ``pip install --no-index --target`` of every wheel for CPython 3.12 (as on the device)."""
    with tempfile.TemporaryDirectory(prefix="a124_whl_target_") as target:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", target,
               "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
               *[f"--platform={p}" for p in PLATFORMS], *map(str, sorted(folder.glob("*.whl")))]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return [f"offline install failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"], 0.0
        dist_infos = list(Path(target).glob("*.dist-info"))
        size = sum(f.stat().st_size for f in Path(target).rglob("*") if f.is_file()) / 2**20
        wanted = len(list(folder.glob("*.whl")))
        if len(dist_infos) != wanted:
            return [f"offline install put {len(dist_infos)} distributions in the target, expected {wanted}"], size
        return [], size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path(".whl"))
    p.add_argument("--list", type=Path, default=HERE / "wheels.txt")
    p.add_argument("--device-packages", type=Path, default=HERE / "device_packages.txt")
    p.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    p.add_argument("--install-test", action="store_true", help="also pip install --no-index --target for Python 3.12")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    problems, summary = check(args.dir, read_names(args.list), set(read_names(args.device_packages)), args.limit_mib)
    if args.install_test and not problems:
        more, installed = install_test(args.dir)
        problems += more
        summary["installed_mib"] = round(installed, 2)
    summary["problems"] = problems
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    for line in problems:
        print(f"verify_wheels: {line}", file=sys.stderr)
    status = "OK" if not problems else f"FAILED ({len(problems)} problems)"
    print(f"verify_wheels: {status}: {len(summary['wheels'])} wheels, {summary['size_mib']} MiB"
          + (f", offline install into a python3.12 target OK ({summary['installed_mib']} MiB)" if "installed_mib" in summary
             else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
