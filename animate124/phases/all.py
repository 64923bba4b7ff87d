"""``phase=all`` (the default): textual_inversion → static → dynamic → refine in one run directory.

Finished phases (``<run_dir>/<phase>/report.json`` with ``complete: true``) are skipped, an interrupted one resumes
from its latest checkpoint (the phases' own resume), so re-running the same command after a crash or ``kill -9``
finishes the chain. Before each phase a chain table is printed: every phase's state, steps and an ETA (from the
phase's own measured speed when it ran before, else from the speed of the previous phase scaled by nothing — shown as
``?`` until measured). At the end: an orbit video of the last phase (``animate124.export``), the animated GLB
(``<run_dir>/mesh/animated.glb``) and the web viewer (``<run_dir>/viewer/``) with the cheap defaults of
``phase.outputs`` (each switchable off; one that fails logs a warning and is recorded in report.json, the run is kept),
and ``<run_dir>/report.json`` summing all phases.

Example:
    python -m animate124.run case=panda-dance case.root=/data/animate124-benchmark
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

from animate124.config.phases import AllPhasesConfig, chain_order
from animate124.data.case import apply_case
from animate124.io.report import read_report, write_report
from animate124.io.run_dir import phase_dirs, phase_done, save_inputs

log = logging.getLogger(__name__)

ORDER = chain_order()
"""textual_inversion → static → dynamic → refine (the chain rows of config/phases.py::PHASES)."""


def _fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def phase_status(run_dir: Path, name: str, max_steps: int) -> dict[str, Any]:
    """State of one phase from its report.json: done / partial (step k) / pending, with its measured speed."""
    rep = read_report(phase_dirs(run_dir, name).report)
    step = int(rep.get("step", 0) or 0)
    state = "done" if rep.get("complete") else ("partial" if rep else "pending")
    speed = float(rep.get("it_per_s", 0.0) or 0.0)
    remaining = 0 if state == "done" else max(max_steps - step, 0)
    eta = 0.0 if remaining == 0 else (remaining / speed if speed > 0 else None)
    return {"phase": name, "state": state, "step": step, "max_steps": max_steps, "eta_s": eta,
            "wall_time_s": float(rep.get("wall_time_s", 0.0) or 0.0)}


def chain_table(run_dir: Path, pcfg: AllPhasesConfig, current: Optional[str] = None) -> str:
    """A small text table of the chain: one line per phase with state, steps and ETA, plus the total ETA."""
    lines, total, unknown = [], 0.0, False
    for i, name in enumerate(ORDER):
        st = phase_status(run_dir, name, int(getattr(pcfg, name).max_steps))
        mark = ">" if name == current else " "
        lines.append(f"{mark} [{i + 1}/{len(ORDER)}] {name:<18} {st['state']:<8} {st['step']:>6}/{st['max_steps']:<6} "
                     f"ETA {_fmt_time(st['eta_s'])}")
        if st["eta_s"] is None:
            unknown = True
        else:
            total += st["eta_s"]
    lines.append(f"  chain ETA {_fmt_time(total)}{'+?' if unknown else ''}")
    return "\n".join(lines)


def _say(text: str) -> None:
    """Chain status on the console (Hydra's logging handler when configured, else stderr) and in run.log."""
    if logging.getLogger().handlers:
        log.info("chain status\n%s", text)
    else:
        print(text, file=sys.stderr, flush=True)


def _final_video(cfg: Any, run_dir: Path, pcfg: AllPhasesConfig) -> Optional[str]:
    """Orbit-while-animating video of the last finished phase (None when disabled)."""
    if not pcfg.video:
        return None
    from animate124.config.export import ExportConfig
    from animate124.export.outputs import export

    ecfg = ExportConfig(run_dir=str(run_dir), path="orbit", frames=pcfg.video_frames, size=pcfg.video_size,
                        fps=pcfg.video_fps, out=str(run_dir / "videos" / "orbit.mp4"), device=cfg.device)
    written = export(ecfg)
    return str(written[0]) if written else None


def _final_outputs(cfg: Any, run_dir: Path, pcfg: AllPhasesConfig) -> dict[str, Any]:
    """The GLB and the viewer (``phase.outputs``); {"glb": path | None, "viewer": path | None, "output_errors": {...}}."""
    from animate124.config.export import ExportConfig
    from animate124.errors import Animate124Error
    from animate124.export.outputs import export

    o = pcfg.outputs
    result: dict[str, Any] = {"glb": None, "viewer": None, "output_errors": {}}
    jobs = []
    if o.glb:
        ecfg = ExportConfig(run_dir=str(run_dir), format="mesh", frames=o.glb_frames, device=cfg.device, progress=False)
        ecfg.mesh.resolution = o.glb_resolution
        jobs.append(("glb", ecfg, run_dir / "mesh" / "animated.glb"))
    if o.viewer:
        ecfg = ExportConfig(run_dir=str(run_dir), format="viewer", device=cfg.device, progress=False)
        ecfg.viewer.views, ecfg.viewer.times, ecfg.viewer.size = o.viewer_views, o.viewer_times, o.viewer_size
        jobs.append(("viewer", ecfg, run_dir / "viewer" / "index.html"))
    for key, ecfg, target in jobs:
        try:
            export(ecfg)
            result[key] = str(target)
        except Animate124Error as exc:  # the phases are done: a failed extra is reported, the run is kept
            log.warning("phase=all: the end-of-run %s was not written: %s", key, exc)
            result["output_errors"][key] = str(exc)
    return result


def summarize(run_dir: Path, reports: dict[str, dict[str, Any]], video: Optional[str], wall: float) -> dict[str, Any]:
    """Top-level report: per-phase summaries and the sums of steps, wall and train time."""
    phases = {}
    for name, rep in reports.items():
        phases[name] = {k: rep.get(k) for k in ("complete", "step", "max_steps", "wall_time_s", "train_time_s",
                                                "it_per_s", "sessions", "peak_rss_mb", "peak_cuda_mb", "metrics")}
    keys = ("step", "wall_time_s", "train_time_s")
    totals = {k: round(sum(float(r.get(k) or 0.0) for r in reports.values()), 3) for k in keys}
    return {
        "phase": "all",
        "complete": all(bool(r.get("complete")) for r in reports.values()) and len(reports) == len(ORDER),
        "order": list(ORDER),
        "total_steps": int(totals["step"]),
        "total_wall_time_s": totals["wall_time_s"],
        "total_train_time_s": totals["train_time_s"],
        "this_session_wall_time_s": round(wall, 3),
        "video": video,
        "phases": phases,
    }


def release_memory() -> None:
    """Free what the finished phase held (its models, field, optimizer) before the next one loads its own: collect the
    reference cycles now and return the CUDA caching allocator's free blocks, so phases do not stack in memory."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Run the missing phases in order; returns the top-level report (also written to ``<run_dir>/report.json``)."""
    from animate124.phases import run_phase

    t0 = time.perf_counter()
    pcfg: AllPhasesConfig = cfg.phase
    cfg = apply_case(cfg)
    run_dir = Path(run_dir)
    save_inputs(run_dir, image=cfg.image, prompt=cfg.prompt, static_prompt=cfg.static_prompt, case=cfg.case.name)
    reports: dict[str, dict[str, Any]] = {}
    for name in ORDER:
        if phase_done(run_dir, name):
            reports[name] = read_report(phase_dirs(run_dir, name).report)
            continue
        _say(chain_table(run_dir, pcfg, current=name))
        reports[name] = run_phase(dataclasses.replace(cfg, phase=getattr(pcfg, name)), run_dir)
        release_memory()
    _say(chain_table(run_dir, pcfg))
    video = _final_video(cfg, run_dir, pcfg)
    extras = _final_outputs(cfg, run_dir, pcfg)
    report = summarize(run_dir, reports, video, time.perf_counter() - t0) | extras
    write_report(run_dir / "report.json", report)
    _say(f"all phases done in {_fmt_time(report['total_wall_time_s'])}; report {run_dir / 'report.json'}"
         + (f", video {video}" if video else ""))
    return report
