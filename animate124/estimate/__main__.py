"""``python -m animate124.estimate [run overrides]``: peak GPU memory and time per phase, without a GPU.

Takes the same config as ``python -m animate124.run`` (``phase=all`` by default), traces one training step of each
step kind of each phase on fake tensors (nothing is allocated, nothing downloaded), prints a table per phase and
writes ``<run_dir>/estimate.json``. ``gpu_memory_gb=24`` runs the budget planner (animate124/estimate/levers.py)
and prints the levers it turned on; ``estimate.gpu=l4`` picks the GPU of the time column.

Example:
    python -m animate124.estimate phase=all gpu_memory_gb=24
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from animate124.errors import Animate124Error

EXIT_USER_ERROR = 2


def compose(argv: list[str]) -> Any:
    """The run config of ``argv`` (Hydra overrides), converted to the schema dataclasses."""
    from hydra import compose as hcompose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401

    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = hcompose("run", overrides=list(argv))
    return OmegaConf.to_object(cfg)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def table(est: dict[str, Any], gpu: str = "h100") -> str:
    """Per-phase lines: peak allocated, what the GPU needs (+ context, headroom), weights, H100 time at 100/40 %."""
    lines = [f"{'phase':<18} {'steps':>6} {'peak GB':>8} {'needs GB':>9} {'weights':>8} {'activ.':>7} "
             f"{'step s@100%':>11} {'total @100%':>11} {'total @40%':>10}  peak during"]
    for name, p in est["phases"].items():
        worst = max(p["variants"], key=lambda r: r["peak_gb"])
        cat = worst["peak_by_category_gb"]
        t = p["time"][gpu]
        lines.append(f"{name:<18} {p['steps']:>6} {p['peak_allocated_gb']:>8.2f} {p['needs_gb']:>9.2f} "
                     f"{cat['weights']:>8.2f} {cat['activations']:>7.2f} {t['100%']['step_s']:>11.3f} "
                     f"{_fmt_s(t['100%']['total_s']):>11} {_fmt_s(t['40%']['total_s']):>10}  "
                     f"{worst['variant']}: {worst['peak_during']}")
    if "total_time_s" in est:
        tot = est["total_time_s"][gpu]
        lines.append(f"{'all (total)':<18} {'':>6} {'':>8} {est['max_needs_gb']:>9.2f} {'':>8} {'':>7} {'':>11} "
                     f"{_fmt_s(tot['100%']):>11} {_fmt_s(tot['40%']):>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error for bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from animate124.run import check_gpu_memory_gb, one_line

    t0 = time.perf_counter()
    try:
        cfg = compose(argv)
        check_gpu_memory_gb(cfg.gpu_memory_gb)
        report = run(cfg)
    except Animate124Error as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # Hydra / OmegaConf composition errors: one line, like animate124.run
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if not isinstance(exc, (HydraException, OmegaConfBaseException)):
            raise
        print(f"error: {one_line(exc)}; check the overrides (python -m animate124.run --help)", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"estimate written to {report['path']} in {time.perf_counter() - t0:.0f} s (estimates, not measurements)")
    return 0


def run(cfg: Any) -> dict[str, Any]:
    """Estimate (and plan, with ``gpu_memory_gb``), print the tables, write ``<run_dir>/estimate.json``."""
    from animate124.config.store import default_run_dir
    from animate124.estimate.core import estimate_run

    gpu = cfg.estimate.gpu
    out: dict[str, Any] = {"kind": "estimate", "gpu": gpu}
    if cfg.gpu_memory_gb is not None:
        from animate124.estimate.levers import plan

        _, report = plan(cfg, float(cfg.gpu_memory_gb), gpu)
        print(f"== without a budget ({gpu}; estimates) ==\n{table(report['before'], gpu)}")
        print(f"\n== gpu_memory_gb={cfg.gpu_memory_gb:g} ({'fits' if report['fits'] else 'DOES NOT FIT'}) ==")
        for lv in report["levers"]:
            print(f"  lever: {lv['lever']:<38} {lv['override']:<70} {'exact' if lv['exact'] else 'changes results':<16}"
                  f" {lv['time_cost_s_h100_40']:+.0f} s (H100, 40 %)")
        print(table(report["after"], gpu))
        out.update(budget=report, estimate=report["after"])
    else:
        est = estimate_run(cfg, gpu)
        print(f"== per-phase estimate ({gpu}; estimates, not measurements) ==\n{table(est, gpu)}")
        out["estimate"] = est
    run_dir = Path(default_run_dir(cfg.run_dir, cfg.case.name, cfg.image, cfg.data.path))
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "estimate.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    out["path"] = str(path)
    return out


if __name__ == "__main__":
    sys.exit(main())
