#!/usr/bin/env python
"""Run the pipeline and the metrics over a benchmark folder, then aggregate a table and a bar plot.

    python scripts/run_benchmark.py benchmark=/path/to/animate124-benchmark out=outputs/bench \
        [cases=panda-dance,cat-wave] [models=tiny] [launcher=joblib|submitit_slurm|...] \
        [pipeline='phase=all phase.static.max_steps=...'] [metrics='frames=16 resolution=128'] \
        [--skip-pipeline] [--skip-metrics] [--aggregate-only]

Steps (each a Hydra multirun, so one case = one job, with whatever launcher ``launcher=`` names — basic by default,
joblib for several GPUs of one machine, submitit_slurm for a cluster; the launcher plugin must be installed):
1. ``python -m animate124.run -m case.name=a,b case.root=BENCH models=M run_dir=OUT/runs/${case.name}
   hydra.sweep.dir=OUT/runs hydra.sweep.subdir=${case.name} <pipeline>``
2. ``python -m animate124.metrics -m run_dir=OUT/runs/a,OUT/runs/b models=M captions_file=BENCH/benchmark.json
   <metrics>`` (cases whose run has no checkpoint are skipped and reported as failed)
3. ``OUT/results.md`` + ``OUT/results.json`` (per case and mean) and ``OUT/results.png`` (one bar panel per metric).
Exit code 0 when every case has a metrics.json, 1 otherwise (the failed cases are listed with the command that re-runs
only them). With ``launcher=slurm`` (configs/hydra/launcher/slurm.yaml) each case is one SLURM job, requeued on
preemption and resumed from its last checkpoint (docs/cluster.md).
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

METRICS = ("clip_t", "r_precision", "clip_i", "clip_i_all_views", "temporal_consistency", "lpips_flicker")
LABELS = {"clip_t": "CLIP-T ↑", "r_precision": "R-precision@1 ↑", "clip_i": "CLIP-I (ref view) ↑",
          "clip_i_all_views": "CLIP-I (all views) ↑", "temporal_consistency": "temporal consistency ↑",
          "lpips_flicker": "LPIPS flicker ↓"}
OPTIONS = {"benchmark": None, "out": "outputs/benchmark", "cases": "all", "models": "pretrained", "launcher": None,
           "pipeline": "", "metrics": ""}
FLAGS = ("--skip-pipeline", "--skip-metrics", "--aggregate-only")


def parse_args(argv: Sequence[str]) -> tuple[dict[str, Any], set[str]]:
    """``key=value`` options (see OPTIONS) and ``--flags``."""
    opts, flags = dict(OPTIONS), set()
    for arg in argv:
        if arg in FLAGS:
            flags.add(arg)
        elif "=" in arg and arg.split("=", 1)[0] in OPTIONS:
            key, value = arg.split("=", 1)
            opts[key] = value
        else:
            raise SystemExit(f"error: unknown argument {arg!r}; use {', '.join(k + '=' for k in OPTIONS)} "
                             f"or {', '.join(FLAGS)}")
    if not opts["benchmark"] and "--aggregate-only" not in flags:
        raise SystemExit("error: benchmark=<folder with benchmark.json> is required")
    return opts, flags


def select_cases(benchmark: str | Path, cases: str) -> list[dict[str, str]]:
    """The {name, caption} items of benchmark.json, all or the comma-separated ``cases`` (in that order)."""
    path = Path(benchmark) / "benchmark.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; benchmark= must point at a folder with benchmark.json")
    items = json.loads(path.read_text())
    if cases in ("all", ""):
        return items
    by_name = {it["name"]: it for it in items}
    wanted = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in by_name]
    if unknown:
        raise SystemExit(f"error: cases {unknown} are not in {path}")
    return [by_name[c] for c in wanted]


def _quote(value: str) -> str:
    """A Hydra override value quoted so paths with special characters survive the sweep grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pipeline_command(opts: dict[str, Any], names: list[str], out: Path) -> list[str]:
    """The Hydra multirun of the generation pipeline (one job per case)."""
    cmd = [sys.executable, "-m", "animate124.run", "-m", "case.name=" + ",".join(names),
           f"case.root={_quote(str(Path(opts['benchmark']).resolve()))}", f"models={opts['models']}",
           "run_dir=" + str(out.resolve() / "runs") + "/${case.name}",
           # in a multirun the job's output dir is sweep.dir/sweep.subdir: make it the case's run_dir as well
           f"hydra.sweep.dir={_quote(str(out.resolve() / 'runs'))}", "hydra.sweep.subdir=${case.name}"]
    if opts["launcher"]:
        cmd.append(f"hydra/launcher={opts['launcher']}")
    return cmd + shlex.split(opts["pipeline"])


def metrics_command(opts: dict[str, Any], run_dirs: list[Path], out: Path) -> list[str]:
    """The Hydra multirun of the metrics (one job per run directory)."""
    cmd = [sys.executable, "-m", "animate124.metrics", "-m", "run_dir=" + ",".join(_quote(str(r)) for r in run_dirs),
           f"models={opts['models']}",
           f"hydra.sweep.dir={_quote(str(out.resolve() / 'multirun' / 'metrics'))}"]
    if opts["benchmark"]:
        cmd.append(f"captions_file={_quote(str(Path(opts['benchmark']).resolve() / 'benchmark.json'))}")
    if opts["launcher"]:
        cmd.append(f"hydra/launcher={opts['launcher']}")
    return cmd + shlex.split(opts["metrics"])


def has_checkpoint(run_dir: Path) -> bool:
    """True when any phase of the run holds a complete checkpoint."""
    return any(run_dir.glob("*/checkpoints/step-*/state.json"))


# ------------------------------------------------------------------------------------------------- aggregation
def _model_label(protocol: dict[str, Any]) -> str | None:
    """The CLIP model of a metrics.json protocol, flagged when it was a random stand-in (models=tiny/random)."""
    name, kind = protocol.get("clip_model"), protocol.get("models")
    if name is None or kind in (None, "pretrained"):
        return name
    return f"{name} (models={kind}: random stand-in)"


def aggregate(out: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """Collect ``OUT/runs/<name>/metrics.json`` into per-case rows and a mean row (over cases that have the value).

    Returns:
        ``{"cases": {name: {metric: value | None, "status": "ok" | "failed"}}, "mean": {metric: value | None},
        "n_cases": {metric: count}, "clip_model": ..., "protocol": ...}``.
    """
    out = Path(out)
    rows: dict[str, dict[str, Any]] = {}
    protocol, clip_model = None, None
    for name in names:
        path = out / "runs" / name / "metrics.json"
        if path.is_file():
            data = json.loads(path.read_text())
            rows[name] = {k: data.get(k) for k in METRICS} | {"status": "ok"}
            protocol = protocol or data.get("protocol")
            clip_model = clip_model or _model_label(data.get("protocol") or {})
        else:
            rows[name] = dict.fromkeys(METRICS) | {"status": "failed"}
    mean, count = {}, {}
    for key in METRICS:
        vals = [r[key] for r in rows.values() if isinstance(r[key], (int, float)) and math.isfinite(r[key])]
        mean[key] = sum(vals) / len(vals) if vals else None
        count[key] = len(vals)
    return {"cases": rows, "mean": mean, "n_cases": count, "clip_model": clip_model, "protocol": protocol}


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}"


def markdown_table(result: dict[str, Any]) -> str:
    """The Markdown table (one row per case, then the mean)."""
    head = "| case | " + " | ".join(LABELS[k] for k in METRICS) + " | status |"
    lines = [f"CLIP model: `{result['clip_model']}`", "", head, "|" + "---|" * (len(METRICS) + 2)]
    for name, row in result["cases"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row[k]) for k in METRICS) + f" | {row['status']} |")
    mean = result["mean"]
    lines.append("| **mean** | " + " | ".join(_fmt(mean[k]) for k in METRICS) + " | |")
    return "\n".join(lines) + "\n"


def bar_plot(result: dict[str, Any], path: str | Path, panel: tuple[int, int] = (360, 0)) -> Path:
    """One horizontal bar panel per metric (cases + mean), drawn with PIL (no matplotlib needed)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    names = list(result["cases"]) + ["mean"]
    row_h, label_w, pad = 14, 120, 8
    pw = panel[0]
    ph = 24 + row_h * len(names) + pad
    cols = 2
    rows = math.ceil(len(METRICS) / cols)
    img = Image.new("RGB", (cols * pw, rows * ph), "white")
    draw = ImageDraw.Draw(img)
    for m, key in enumerate(METRICS):
        ox, oy = (m % cols) * pw, (m // cols) * ph
        # PIL's default bitmap font has no arrows
        label = LABELS[key].replace("↑", "(higher is better)").replace("↓", "(lower is better)")
        draw.text((ox + pad, oy + 4), label, fill="black", font=font)
        values = [result["cases"][n][key] for n in names[:-1]] + [result["mean"][key]]
        finite = [abs(v) for v in values if isinstance(v, (int, float))]
        top = max(finite + [1e-9])
        bar_w = pw - label_w - 2 * pad - 50
        for i, (name, v) in enumerate(zip(names, values)):
            y = oy + 22 + i * row_h
            draw.text((ox + pad, y), name[:18], fill="black", font=font)
            if isinstance(v, (int, float)):
                w = int(bar_w * max(v, 0.0) / top)
                colour = (200, 80, 60) if name == "mean" else (70, 120, 190)
                draw.rectangle([ox + label_w, y + 2, ox + label_w + max(w, 1), y + row_h - 3], fill=colour)
                draw.text((ox + label_w + w + 4, y), f"{v:.3f}", fill="black", font=font)
            else:
                draw.text((ox + label_w, y), "n/a", fill=(150, 150, 150), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_results(out: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """Aggregate and write OUT/results.{md,json,png}; returns the aggregated dict."""
    out = Path(out)
    result = aggregate(out, names)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown_table(result))
    (out / "results.json").write_text(json.dumps(result, indent=1))
    bar_plot(result, out / "results.png")
    return result


def _run(cmd: list[str]) -> int:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    opts, flags = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(opts["out"])
    if "--aggregate-only" in flags and not opts["benchmark"]:
        names = sorted(p.parent.name for p in (out / "runs").glob("*/metrics.json"))
    else:
        names = [it["name"] for it in select_cases(opts["benchmark"], opts["cases"])]
    if "--aggregate-only" not in flags:
        if "--skip-pipeline" not in flags and _run(pipeline_command(opts, names, out)) != 0:
            print("warning: the pipeline multirun failed for at least one case; continuing with the others",
                  file=sys.stderr)
        ready = [out / "runs" / n for n in names if has_checkpoint(out / "runs" / n)]
        if "--skip-metrics" not in flags and ready and _run(metrics_command(opts, [r.resolve() for r in ready],
                                                                            out)) != 0:
            print("warning: the metrics multirun failed for at least one case", file=sys.stderr)
    result = write_results(out, names)
    print(markdown_table(result))
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")
    failed = [n for n, r in result["cases"].items() if r["status"] != "ok"]
    if failed:
        print(f"failed cases ({len(failed)}): {', '.join(failed)}; re-run only them (finished phases are skipped, "
              f"interrupted ones resume): {rerun_command(sys.argv[1:] if argv is None else argv, failed)}",
              file=sys.stderr)
    return 0 if not failed else 1


def rerun_command(argv: Sequence[str], failed: Sequence[str]) -> str:
    """This script's command line with ``cases=`` set to the failed cases."""
    args = [a for a in argv if not a.startswith("cases=")] + ["cases=" + ",".join(failed)]
    return " ".join(shlex.quote(a) for a in ["python", "scripts/run_benchmark.py", *args])


if __name__ == "__main__":
    sys.exit(main())
