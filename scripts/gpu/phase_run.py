"""One short timed run of one phase (a stage of scripts/gpu/check.py), or the estimator for all phases.

GPU: ``models=random`` (full-size architectures, random weights) at the original's settings (the phase defaults),
``warmup + steps`` steps (``phase.known_iters=0`` so static's first steps mix SDS and reference steps as later on),
with the final validation shrunk. ``--rehearse``: ``models=tiny`` at the demo's CPU sizes. The phases chain in one
run dir (textual inversion → static → dynamic → refine), as ``phase=all`` does.

Measured: steady it/s (from ``train_step`` start times after ``warmup`` steps, the device synchronised), the
phase's own ``report.json`` it/s, ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``. The JSON is
rewritten after every step, so a run stopped at its budget still leaves what it measured.

Usage:
    python scripts/gpu/phase_run.py --phase static --run-dir DIR --json OUT.json [--rehearse] [--steps N]
    python scripts/gpu/phase_run.py --estimate --run-dir DIR --json OUT.json [--rehearse]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

GPU_STEPS = {"textual_inversion": 10, "static": 16, "dynamic": 10, "refine": 8}
GPU_OVERRIDES = {
    "textual_inversion": [],
    "static": ["phase.known_iters=0", "phase.val_views=1", "phase.val_size=64"],
    "dynamic": ["phase.val_frames=2", "phase.val_size=64"],
    "refine": ["phase.val_frames=2", "phase.val_size=64"],
}
"""Everything else stays at the original's settings (the config defaults); only the final validation is shrunk."""


def rehearse_overrides(phase: str) -> list[str]:
    """The demo's CPU-sized settings (animate124.demo.PIPELINE_OVERRIDES) for one phase run on its own."""
    from animate124.demo import PIPELINE_OVERRIDES

    out = []
    for o in PIPELINE_OVERRIDES:
        if o.startswith(f"phase.{phase}."):
            out.append("phase." + o[len(f"phase.{phase}."):])
        elif not o.startswith("phase."):
            out.append(o)
    cheaper = {"static": ["phase.known_iters=0", "phase.val_views=1", "phase.val_size=32"],
               "dynamic": ["phase.time_slots=2", "phase.val_frames=2", "phase.val_size=32"],
               "refine": ["phase.time_slots=2", "phase.val_frames=2", "phase.val_size=32"]}
    return out + cheaper.get(phase, [])  # the occupancy re-estimate at 16 slot times and the final videos dominate on CPU


def overrides(phase: str, run_dir: Path, rehearse: bool, steps: int) -> list[str]:
    from animate124.demo import PROMPT, example_image

    image = example_image(run_dir.parent / "input" / "blobs.png")
    common = [f"phase={phase}", f"image={image}", f"prompt={PROMPT}", f"run_dir={run_dir}", f"phase.max_steps={steps}",
              "phase.val_every=0", "phase.progress=false", f"phase.checkpoint_every={steps}"]
    sized = rehearse_overrides(phase) if rehearse else ["models=random", *GPU_OVERRIDES[phase]]
    return [o for o in sized if not o.startswith("phase.max_steps=")] + common  # later overrides win in Hydra


class Timer:
    """Wraps the phase class's ``train_step`` to stamp each step's start (device synchronised)."""

    def __init__(self, out: Path, record: dict, warmup: int) -> None:
        self.out, self.record, self.warmup, self.stamps = out, record, warmup, []

    def install(self, phase: str) -> None:
        from animate124.phases import load_phase_module

        cls = load_phase_module(phase).PHASE
        original = cls.train_step
        timer = self

        def train_step(self, step):  # noqa: ANN001 - same signature as Phase.train_step
            timer.stamp()
            return original(self, step)

        cls.train_step = train_step

    def stamp(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        self.record["steps_started"] = len(self.stamps)
        self.record["setup_s"] = round(self.stamps[0] - self.record["_t0"], 2)
        n = len(self.stamps) - 1 - self.warmup
        if n >= 1:
            self.record["steady_it_per_s"] = round(n / (self.stamps[-1] - self.stamps[self.warmup]), 4)
            self.record["steady_steps"] = n
        self.record.update(memory())
        write(self.out, self.record)


def memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    mib = 2.0 ** 20
    return {"max_memory_allocated_mib": round(torch.cuda.max_memory_allocated() / mib, 1),
            "max_memory_reserved_mib": round(torch.cuda.max_memory_reserved() / mib, 1)}


def write(path: Path, record: dict) -> None:
    path.write_text(json.dumps({k: v for k, v in record.items() if not k.startswith("_")}, indent=2))


def videos_as_png_dirs() -> bool:
    """Without imageio-ffmpeg (not carried to the GPU machine: ~68 MB), write validation videos as PNG folders."""
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        return False
    from animate124.export import writers

    original = writers.write_frames

    def write_frames(out, frames, fps=24.0, quality=8):  # noqa: ANN001 - writers.write_frames' signature
        out = Path(out)
        return original(out.with_suffix("") if out.suffix.lower() == ".mp4" else out, frames, fps, quality)

    writers.write_frames = write_frames
    return True


def run_phase(args: argparse.Namespace) -> int:
    from animate124.io.report import read_report
    from animate124.io.run_dir import phase_dirs
    from animate124.run import main as run_main

    steps = args.steps or (2 if args.rehearse else GPU_STEPS[args.phase] + args.warmup)
    shutil.rmtree(phase_dirs(args.run_dir, args.phase).root, ignore_errors=True)  # a rerun times fresh steps, not a resume
    ov = overrides(args.phase, args.run_dir, args.rehearse, steps)
    record = {"phase": args.phase, "command": "python -m animate124.run " + " ".join(ov), "max_steps": steps,
              "warmup": args.warmup, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "_t0": time.perf_counter()}
    write(args.json, record)
    timer = Timer(args.json, record, args.warmup)
    timer.install(args.phase)
    record["videos_as_png_dirs"] = videos_as_png_dirs()
    code = run_main(ov)
    if timer.stamps:
        record["last_step_s"] = round(time.perf_counter() - timer.stamps[-1], 2)  # last step + final validation
    report = read_report(phase_dirs(args.run_dir, args.phase).report)
    record.update(memory(), exit_code=code, report_it_per_s=report.get("it_per_s"), report_step=report.get("step"),
                  report_peak_cuda_mb=report.get("peak_cuda_mb"), backend=report.get("env", {}).get("backend"),
                  wall_s=round(time.perf_counter() - record["_t0"], 2))
    write(args.json, record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("backend", "_t0")}), flush=True)
    return code


def run_estimate(args: argparse.Namespace) -> int:
    """``python -m animate124.estimate phase=all ...`` when the estimator exists; its estimate.json is copied in."""
    record: dict = {"available": importlib.util.find_spec("animate124.estimate") is not None}
    if not record["available"]:
        record["note"] = "animate124.estimate is not in this version: the estimate column stays empty"
        write(args.json, record)
        print(record["note"])
        return 0
    ov = [o for o in overrides("static", args.run_dir, args.rehearse, 1) if not o.startswith("phase.")]
    cmd = [sys.executable, "-m", "animate124.estimate", "phase=all", *ov]
    record["command"] = " ".join(cmd[1:])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    print(out.stdout[-4000:], out.stderr[-2000:], sep="\n")
    record["exit_code"] = out.returncode
    found = sorted(args.run_dir.rglob("estimate.json"))
    if found:
        record["estimate"] = json.loads(found[0].read_text())
        record["estimate_file"] = str(found[0])
    write(args.json, record)
    return out.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=list(GPU_STEPS))
    p.add_argument("--estimate", action="store_true", help="run the estimator for phase=all instead")
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--rehearse", action="store_true")
    p.add_argument("--steps", type=int, default=None, help="max_steps (default: warmup + a per-phase count)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the steady it/s")
    args = p.parse_args(argv)
    if args.rehearse:
        args.warmup = min(args.warmup, 1)
    if not args.estimate and not args.phase:
        p.error("give --phase or --estimate")
    args.run_dir.mkdir(parents=True, exist_ok=True)
    return run_estimate(args) if args.estimate else run_phase(args)


if __name__ == "__main__":
    raise SystemExit(main())
