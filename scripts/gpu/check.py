"""The one GPU check (run by ``scripts/gpu/check.sh``): stages with time budgets, one JSON + one markdown table.

Stages, in order (``--only a,b`` runs a subset; a failing stage never stops the next):

========== ================================================== =================================================
stage      on the GPU machine                                 ``--rehearse`` (CPU, tiny sizes)
========== ================================================== =================================================
wheels     pip install .whl/ offline into a target dir,       verify .whl/ (< 64 MiB, deps closed) and install
           editable install of the repo (no build)            it offline into a python3.12 target
build      AOT build of ``animate124._C`` for this GPU,       toolkit discovery + the nvcc flags setup.py uses
           import + export check
nerfacc    nerfacc's JIT build (background, own budget)       import nerfacc
pytest     ``pytest -m cuda``                                 ``pytest -m cuda`` (collects, skips without GPU)
bench      ``benchmark_speed.py`` torch / cuda / nerfacc      ``benchmark_speed.py --quick --device cpu``
phase_*    one short ``models=random`` run per phase at the   the same with ``models=tiny`` at the demo's sizes
           original's settings: it/s, max_memory_allocated
estimate   ``python -m animate124.estimate`` (when present)   the same (optional stage: never fails the check)
========== ================================================== =================================================

A global deadline (``--deadline``, default 285 s) caps the whole run under 5 minutes: each stage gets
``min(its budget, time left)``; stages past the deadline are recorded as ``skipped: out of time``. ``--out DIR``
gets ``check.json``, ``check.md`` and ``check.log`` (stage logs, tails); with ``--only`` earlier results in the
JSON are kept and the rerun stages replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_report as md  # noqa: E402 - scripts/gpu/check_report.py, next to this file

ROOT = Path(__file__).resolve().parents[2]
PHASES = ["textual_inversion", "static", "dynamic", "refine"]
HF_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class Stage:
    """One stage: commands run in order under one budget (seconds on the GPU, and in ``--rehearse``)."""

    name: str
    budget: float
    budget_rehearse: float
    commands: Callable[["Context"], list[list[str]]]
    optional: bool = False
    background: bool = False


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    env: dict[str, str]
    results: dict[str, dict] = field(default_factory=dict)
    running: dict[str, tuple[subprocess.Popen, float, Path]] = field(default_factory=dict)

    @property
    def py(self) -> str:
        return sys.executable

    @property
    def rehearse(self) -> bool:
        return bool(self.args.rehearse)


# ------------------------------------------------------------------------------------------------------- commands
def wheels_cmds(c: Context) -> list[list[str]]:
    imports = "import diffusers, hydra, omegaconf, kornia, nerfacc, animate124.configs; print('imports OK')"
    verify = [c.py, "scripts/gpu/verify_wheels.py", "--dir", c.args.wheels, "--json", str(c.work / "wheels.json")]
    if c.rehearse:
        return [verify + ["--install-test"], [c.py, "-c", imports]]
    wheels = sorted(str(p) for p in Path(c.args.wheels).glob("*.whl"))
    install = [c.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
               "--target", c.env["A124_SITE"], *wheels]
    editable = [c.py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", "-e", "."]
    return [verify, install, ["env", "BUILD_NO_CUDA=1", *editable], [c.py, "-c", imports]]


def build_cmds(c: Context) -> list[list[str]]:
    if c.rehearse:
        probe = ("import importlib.util as u, os\n"
                 "s = u.spec_from_file_location('tk', 'animate124/ops/_toolkit.py'); m = u.module_from_spec(s)\n"
                 "s.loader.exec_module(m)\n"
                 "archs = m.parse_arch_list(os.environ.get(m.ARCH_ENV, '9.0'))\n"
                 "print('gencode', ' '.join(m.gencode_flags(archs, 13)))\n"
                 "try:\n    print('CUDA_HOME', *m.find_cuda_home())\n"
                 "except m.CudaToolkitNotFound as e:\n    print('no toolkit here (fine on CPU):', e)\n")
        return [[c.py, "-c", probe]]
    editable = [c.py, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "-e", "."]
    check = [c.py, str(ROOT / "scripts/ci/check_ext.py"), "--cuda-py", str(ROOT / "animate124/ops/_cuda.py")]
    return [editable, ["sh", "-c", f'cd "{c.work}" && exec "$0" "$@"', *check]]


def nerfacc_cmds(c: Context) -> list[list[str]]:
    if c.rehearse:
        return [[c.py, "-c", "import nerfacc; print('nerfacc', nerfacc.__version__, '(import only on CPU)')"]]
    code = ("import time; t = time.time(); from nerfacc.cuda import _backend\n"
            "assert _backend._C is not None, 'nerfacc JIT build gave no module'\n"
            "print(f'nerfacc CUDA built/loaded in {time.time() - t:.1f} s')")
    return [[c.py, "-c", code]]


def pytest_cmds(c: Context) -> list[list[str]]:
    return [[c.py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "-rfE"]]


def bench_cmds(c: Context) -> list[list[str]]:
    out = ["--out", str(c.work / "bench.json")]
    if c.rehearse:
        return [[c.py, "scripts/benchmark_speed.py", "--quick", "--device", "cpu", "--backends", "torch", "--rays", "256",
                 "--points", "1024", "--min-time", "0.05", "--max-iters", "3", *out]]
    backends = "torch,cuda" + (",nerfacc" if c.results.get("nerfacc", {}).get("status") == "ok" else "")
    return [[c.py, "scripts/benchmark_speed.py", "--backends", backends, "--min-time", "1.0", "--max-iters", "30", *out]]


def phase_cmds(phase: str) -> Callable[[Context], list[list[str]]]:
    def cmds(c: Context) -> list[list[str]]:
        cmd = [c.py, "scripts/gpu/phase_run.py", "--phase", phase, "--run-dir", str(c.work / "run"),
               "--json", str(c.work / f"phase_{phase}.json")]
        return [cmd + (["--rehearse"] if c.rehearse else [])]
    return cmds


def estimate_cmds(c: Context) -> list[list[str]]:
    cmd = [c.py, "scripts/gpu/phase_run.py", "--estimate", "--run-dir", str(c.work / "estimate"),
           "--json", str(c.work / "estimate.json")]
    return [cmd + (["--rehearse"] if c.rehearse else [])]


STAGES = [
    Stage("wheels", 40, 120, wheels_cmds),
    Stage("nerfacc", 150, 60, nerfacc_cmds, background=True),
    Stage("build", 100, 60, build_cmds),
    Stage("pytest", 45, 240, pytest_cmds),
    Stage("bench", 45, 90, bench_cmds),
    *[Stage(f"phase_{p}", 30 if p != "textual_inversion" else 25, 300, phase_cmds(p)) for p in PHASES],
    Stage("estimate", 30, 180, estimate_cmds, optional=True),
]


# -------------------------------------------------------------------------------------------------------- running
def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group (start_new_session=True)
    except ProcessLookupError:
        pass
    proc.wait()


def _run_commands(stage: Stage, c: Context, budget: float, log: Path) -> tuple[str, str]:
    """Run a stage's commands in order within ``budget`` s; (status, detail)."""
    deadline = time.monotonic() + budget
    with open(log, "a") as fh:
        for cmd in stage.commands(c):
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=c.env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(proc)
                return "timeout", f"stopped at its {budget:.0f} s budget during: {' '.join(cmd[:4])} ..."
            if rc != 0:
                return "failed", f"exit {rc}: {' '.join(cmd[:4])} ..."
    return "ok", ""


def _start_background(stage: Stage, c: Context, budget: float, log: Path) -> None:
    cmds = stage.commands(c)
    script = " && ".join(" ".join(_sh_quote(a) for a in cmd) for cmd in cmds)
    fh = open(log, "a")  # noqa: SIM115 - closed when the stage is joined
    fh.write(f"$ {script}\n")
    fh.flush()
    proc = subprocess.Popen(["sh", "-c", script], cwd=ROOT, env=c.env, stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    c.running[stage.name] = (proc, time.monotonic() + budget, log)


def _sh_quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def join_background(name: str, c: Context, hard_deadline: float) -> None:
    """Wait for a background stage (until its own budget or the global deadline) and record its result."""
    if name not in c.running:
        return
    proc, deadline, log = c.running.pop(name)
    t0 = c.results[name]["t_start"]
    try:
        rc = proc.wait(timeout=max(0.1, min(deadline, hard_deadline) - time.monotonic()))
        status, detail = ("ok", "") if rc == 0 else ("failed", f"exit {rc}")
    except subprocess.TimeoutExpired:
        _kill(proc)
        status, detail = "timeout", f"stopped at its {c.results[name]['budget_s']:.0f} s budget"
    c.results[name].update(status=status, detail=detail, seconds=round(time.monotonic() - t0, 1),
                           log_tail=_tail(log))


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_stage(stage: Stage, c: Context, hard_deadline: float) -> None:
    """Run one stage (or start it, if it runs in the background) and record its result in ``c.results``."""
    log = c.work / "logs" / f"{stage.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    left = hard_deadline - time.monotonic()
    budget = min(stage.budget_rehearse if c.rehearse else stage.budget, left)
    entry = {"budget_s": round(budget, 1), "optional": stage.optional, "t_start": time.monotonic()}
    c.results[stage.name] = entry
    if left < 5:
        entry.update(status="skipped", detail="out of time: rerun with --only " + stage.name, seconds=0.0)
        return
    if stage.background:
        _start_background(stage, c, budget, log)
        entry.update(status="running", detail="in the background")
        return
    if stage.name == "bench":
        join_background("nerfacc", c, min(hard_deadline, time.monotonic() + budget / 2))
    status, detail = _run_commands(stage, c, budget, log)
    entry.update(status=status, detail=detail, seconds=round(time.monotonic() - entry["t_start"], 1),
                 log_tail=_tail(log))
    print(f"[check] {stage.name}: {status} in {entry['seconds']} s {detail}", flush=True)


def probe(c: Context) -> dict:
    """Device facts (torch, GPU name, capability, CUDA_HOME) from a subprocess: torch is never imported here."""
    code = ("import json, torch\n"
            "d = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': None, 'capability': None}\n"
            "if torch.cuda.is_available():\n"
            "    d['gpu'] = torch.cuda.get_device_name(0); d['capability'] = '%d.%d' % torch.cuda.get_device_capability(0)\n"
            "print(json.dumps(d))")
    out = subprocess.run([c.py, "-c", code], cwd=ROOT, env=c.env, capture_output=True, text=True, check=False)
    try:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        info = {"error": (out.stderr or out.stdout)[-500:]}
    info["python"] = sys.version.split()[0]
    return info


def environment(args: argparse.Namespace, work: Path) -> dict[str, str]:
    env = dict(os.environ, **HF_OFFLINE, PYTHONUNBUFFERED="1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(work / "torch_ext"))
    env.setdefault("ANIMATE124_CACHE", str(work / "cache"))
    site = str(work / "site")
    env["A124_SITE"] = site
    if not args.rehearse:
        env["PYTHONPATH"] = os.pathsep.join([site, *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    return env


def set_cuda_env(c: Context, info: dict) -> None:
    """CUDA_HOME (wrapper nvcc followed) and the arch of this GPU for our build and nerfacc's."""
    if info.get("capability"):
        c.env.setdefault("ANIMATE124_CUDA_ARCHS", info["capability"])
        c.env.setdefault("TORCH_CUDA_ARCH_LIST", info["capability"])
    if c.rehearse or c.env.get("CUDA_HOME"):
        return
    sys.path.insert(0, str(ROOT / "animate124" / "ops"))
    try:
        import _toolkit

        c.env["CUDA_HOME"], info["cuda_home_how"] = _toolkit.find_cuda_home(prefer=info.get("cuda"))
        c.env["PATH"] = os.pathsep.join([str(Path(c.env["CUDA_HOME"]) / "bin"), c.env.get("PATH", "")])
    except Exception as exc:  # noqa: BLE001 - recorded; the build stage then fails with the same reason
        info["cuda_home_error"] = str(exc)
    finally:
        sys.path.pop(0)
    info["cuda_home"] = c.env.get("CUDA_HOME")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rehearse", action="store_true", help="CPU rehearsal: tiny sizes, CUDA stages replaced")
    p.add_argument("--only", default="", help="comma-separated stages to (re)run: " + ",".join(s.name for s in STAGES))
    p.add_argument("--out", default="gpu_check_out", help="folder for check.json, check.md, check.log")
    p.add_argument("--work", default=None, help="scratch folder (default /tmp/a124_gpu_check[_rehearse])")
    p.add_argument("--wheels", default=".whl", help="wheel folder (scripts/gpu/wheels.sh)")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds for the whole check (default 285 on the GPU, 1800 in --rehearse on a shared CPU)")
    args = p.parse_args(argv)
    names = {s.name for s in STAGES}
    args.deadline = args.deadline or (1800.0 if args.rehearse else 285.0)
    args.only = [s for s in args.only.split(",") if s]
    bad = [s for s in args.only if s not in names]
    if bad:
        p.error(f"--only: unknown stage(s) {', '.join(bad)}; use {', '.join(s.name for s in STAGES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    hard_deadline = t0 + args.deadline
    work = Path(args.work or ("/tmp/a124_gpu_check_rehearse" if args.rehearse else "/tmp/a124_gpu_check")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    c = Context(args=args, work=work, env=environment(args, work))
    info = probe(c)
    set_cuda_env(c, info)
    print(f"[check] {'rehearsal on CPU' if args.rehearse else 'GPU check'}: {json.dumps(info)}", flush=True)
    for stage in STAGES:
        if not args.only or stage.name in args.only:
            run_stage(stage, c, hard_deadline)
    for name in list(c.running):
        join_background(name, c, hard_deadline)
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "mode": "rehearse" if args.rehearse else "gpu", "total_s": round(time.monotonic() - t0, 1), **info}
    result = md.collect(out / "check.json", meta, c.results, work)
    md.write_outputs(out, result, work)
    failed = [n for n, r in c.results.items() if r["status"] != "ok" and not r.get("optional")]
    print(f"[check] {'OK' if not failed else 'FAILED: ' + ', '.join(failed)} in {meta['total_s']} s; wrote "
          f"{out / 'check.json'}, {out / 'check.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
