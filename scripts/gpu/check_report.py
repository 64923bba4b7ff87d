"""check.json / check.md / check.log of scripts/gpu/check.py (stdlib only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {"march+composite": 20.0, "grid_encode": 10.0}
"""Issue 3's targets: our kernels' speed-up over the torch reference (and march+composite ≥ nerfacc)."""


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(previous: Path, meta: dict, results: dict[str, dict], work: Path) -> dict:
    """Merge this run's stage results (and the files their stages wrote in ``work``) into an earlier check.json."""
    old = _load(previous) or {}
    stages = dict(old.get("stages", {}))
    data = dict(old.get("data", {}))
    for name, r in results.items():
        stages[name] = {k: v for k, v in r.items() if k != "t_start"}
        stages[name]["run"] = meta["date"]
        files = {"wheels": ["wheels.json"], "bench": ["bench.json"], "estimate": ["estimate.json"]}.get(name, [])
        if name.startswith("phase_"):
            files = [f"{name}.json"]
        for f in files:
            loaded = _load(work / f) if stages[name]["status"] != "skipped" else None
            if loaded is not None:
                data[f.removesuffix(".json")] = loaded
    runs = list(old.get("runs", [])) + [meta]
    return {"meta": meta, "runs": runs, "stages": stages, "data": data}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def stage_table(result: dict) -> list[str]:
    rows = ["| stage | status | seconds | budget (s) | detail |", "|---|---|---|---|---|"]
    for name, s in result["stages"].items():
        detail = str(s.get("detail", "")).replace("|", "\\|")
        opt = " (optional)" if s.get("optional") else ""
        rows.append(f"| {name}{opt} | {s.get('status')} | {_fmt(s.get('seconds'))} | {_fmt(s.get('budget_s'))} | {detail} |")
    return rows


def bench_table(bench: dict | None) -> list[str]:
    if not bench:
        return ["(no benchmark results)"]
    res = bench.get("results", {})
    backends = [b for b in ("torch", "cuda", "nerfacc") if b in res]
    keys = sorted({k for r in res.values() for k in r}, key=lambda k: (not k.startswith("march"), k))
    rows = ["| workload | " + " | ".join(backends) + " | cuda / torch | cuda / nerfacc | target |",
            "|---|" + "---|" * len(backends) + "---|---|---|"]
    for k in keys:
        vals = [res[b].get(k) for b in backends]
        torch_v, cuda_v, nacc_v = (res.get(b, {}).get(k) for b in ("torch", "cuda", "nerfacc"))
        speed = cuda_v / torch_v if cuda_v and torch_v else None
        vs_nacc = cuda_v / nacc_v if cuda_v and nacc_v else None
        target = TARGETS["march+composite" if k.startswith("march") else "grid_encode"]
        ok = "-" if speed is None else ("met" if speed >= target and (vs_nacc is None or vs_nacc >= 1.0) else "MISSED")
        rows.append(f"| {k} | " + " | ".join(_fmt(v) for v in vals) +
                    f" | {_fmt(speed, 3)} | {_fmt(vs_nacc, 3)} | ≥ {target:g}×{' and ≥ nerfacc' if k.startswith('march') else ''}: {ok} |")
    errors = bench.get("meta", {}).get("errors") or {}
    return rows + [f"- {b} failed: {e}" for b, e in errors.items()]


def _estimate_peak(estimate: dict | None, phase: str) -> float | None:
    """The estimator's peak memory for ``phase`` in MiB, if its JSON has a recognisable entry (format of issue 12)."""
    if not isinstance(estimate, dict):
        return None
    if isinstance(estimate.get("estimate"), dict):  # animate124.estimate's estimate.json: {"kind", "gpu", "estimate"}
        estimate = estimate["estimate"]
    node = estimate.get("phases", estimate).get(phase) if isinstance(estimate.get("phases", estimate), dict) else None
    if not isinstance(node, dict):
        return None
    for key, scale in (("peak_mib", 1.0), ("peak_mb", 1.0), ("peak_gib", 1024.0), ("peak_gb", 1024.0),
                       ("peak_bytes", 2.0 ** -20),
                       ("peak_allocated_gb", 1e9 / 2.0 ** 20)):  # the estimator's GB are 1e9 bytes
        value = node.get(key)
        if isinstance(value, (int, float)):
            return float(value) * scale
    return None


def phase_table(result: dict) -> list[str]:
    data = result["data"]
    estimate = (data.get("estimate") or {}).get("estimate")
    rows = ["| phase | steps (timed) | it/s steady | it/s report.json | max_memory_allocated (MiB) | "
            "max_memory_reserved (MiB) | setup (s) | estimate peak (MiB) | allocated / estimate |",
            "|---|---|---|---|---|---|---|---|---|"]
    for phase in ("textual_inversion", "static", "dynamic", "refine"):
        r = data.get(f"phase_{phase}")
        if not r:
            rows.append(f"| {phase} | - | - | - | - | - | - | - | - |")
            continue
        est = _estimate_peak(estimate, phase)
        alloc = r.get("max_memory_allocated_mib")
        ratio = alloc / est if alloc and est else None
        rows.append(f"| {phase} | {_fmt(r.get('report_step'))} ({_fmt(r.get('steady_steps'))}) | "
                    f"{_fmt(r.get('steady_it_per_s'))} | {_fmt(r.get('report_it_per_s'))} | {_fmt(alloc)} | "
                    f"{_fmt(r.get('max_memory_reserved_mib'))} | {_fmt(r.get('setup_s'))} | {_fmt(est)} | "
                    f"{_fmt(ratio, 3)} |")
    return rows


def markdown(result: dict) -> str:
    m = result["meta"]
    head = [f"# animate124 GPU check ({m.get('mode')})", "",
            f"- date: {m.get('date')}; total {m.get('total_s')} s (this invocation)",
            f"- device: {m.get('gpu') or 'CPU (rehearsal)'}; capability {m.get('capability')}; torch {m.get('torch')} "
            f"(CUDA {m.get('cuda')}); python {m.get('python')}; CUDA_HOME {m.get('cuda_home')}",
            f"- command: `{m.get('command')}`", ""]
    body = ["## Stages", "", *stage_table(result), "", "## Kernels (scripts/benchmark_speed.py)", "",
            *bench_table(result["data"].get("bench")), "",
            "## Phases (one short run each; GPU: models=random at the original's settings)", "", *phase_table(result)]
    return "\n".join(head + body) + "\n"


def write_outputs(out: Path, result: dict, work: Path) -> None:
    """check.json, check.md and check.log (every stage log of this invocation, last 150 lines each)."""
    (out / "check.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "check.md").write_text(markdown(result))
    parts = []
    for name in result["stages"]:
        log = work / "logs" / f"{name}.log"
        if log.is_file() and result["stages"][name].get("run") == result["meta"]["date"]:
            lines = log.read_text(errors="replace").splitlines()
            parts.append(f"===== {name} ({len(lines)} lines, last 150) =====\n" + "\n".join(lines[-150:]))
    (out / "check.log").write_text("\n\n".join(parts) + "\n")
