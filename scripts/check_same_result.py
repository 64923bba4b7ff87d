#!/usr/bin/env python
"""Same result across two revisions: a fixed-seed ``models=tiny`` ``phase=all`` run on the demo input, compared.

    python scripts/check_same_result.py [BASE [HEAD]] [--atol 1e-6] [--work DIR] [--keep]
        [--base-override KEY=VALUE ...] [--head-override KEY=VALUE ...]

For each revision (default BASE = ``BASE_REV`` below, the main commit before issue 14's first ``phases/`` change;
HEAD = ``HEAD``) the script
1. exports the revision's tree with ``git archive`` into a temporary folder outside the repo (no worktree, no
   checkout: the working tree is untouched), adding the ``animate124/configs -> ../configs`` link that the editable
   install's ``package_dir`` mapping gives an installed tree;
2. runs ``python -m animate124.run phase=all models=tiny <SMALL>`` there with this interpreter (the current venv) and
   ``PYTHONPATH`` pointing at that tree, so each revision runs its own code (checked: ``animate124`` and
   ``animate124.configs`` must resolve inside the exported tree), with its own tiny-model cache, one CPU thread and
   the demo's input picture (``animate124.demo.example_image`` of HEAD, rendered once and shared by both runs);
3. collects every checkpoint tensor (``*/checkpoints/step-*/{model,optim}.safetensors``), each checkpoint's
   ``state.json`` (without the resolved config, which holds the run's paths), the learned textual-inversion embedding,
   and every phase report's metrics and step counts.
Then it compares the two: the same checkpoint files, tensors of equal dtype and shape whose largest absolute
difference is at most ``--atol`` (default 1e-6; 0 means bit for bit), the same state and the same metrics (within
``--atol`` relative). It prints one line per compared item class and exits 0 when everything agrees, 1 otherwise.

Overrides that exist in only one revision (e.g. a switch a later issue adds) go to ``--base-override`` /
``--head-override``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_REV = "ce573cf"
"""main just before issue 14's first change under animate124/phases/ (the reference of the acceptance check)."""

PROMPT = "colourful balls are bouncing"
SMALL = [
    "models=tiny", "field=small", "render=fast", "render.grid_resolution=32", "render.max_steps=64", "seed=3407",
    "phase.textual_inversion.max_steps=2", "phase.textual_inversion.batch_size=1",
    "phase.textual_inversion.resolution=64",
    "phase.static.max_steps=6", "phase.static.render_size=32", "phase.static.ref_size=32",
    "phase.static.known_iters=3", "phase.static.val_views=2", "phase.static.val_size=32",
    "phase.dynamic.max_steps=6", "phase.dynamic.num_frames=4", "phase.dynamic.render_size=32",
    "phase.dynamic.ref_size=32", "phase.dynamic.checkpoint_every=3", "phase.dynamic.val_frames=4",
    "phase.dynamic.val_size=32",
    "phase.refine.max_steps=3", "phase.refine.num_frames=4", "phase.refine.render_size=32",
    "phase.refine.ref_size=32", "phase.refine.val_frames=4", "phase.refine.val_size=32",
    "guidance.sd.resolution=64", "guidance.zero123.resolution=64", "guidance.video.height=64",
    "guidance.video.width=64", "guidance.controlnet.size=64",
    "phase.video_frames=4", "phase.video_size=32",
]
"""A fast CPU chain (the step counts of tests/test_phase_all.py's CHAIN_OVERRIDES, on the demo's input picture)."""

REPORT_KEYS = ("complete", "step", "start_step", "max_steps", "metrics")
"""Per-phase report entries that must agree (times and memory peaks are measurements, not results)."""
STATE_SKIP = ("config", "config_hash", "train_time_s")
"""state.json entries that differ between any two runs (the resolved config holds the run's paths; a time)."""


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def export_tree(rev: str, dest: Path) -> Path:
    """``git archive rev`` unpacked into ``dest`` plus the ``animate124/configs`` link; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    link = dest / "animate124" / "configs"
    if not link.exists():
        link.symlink_to(Path("..") / "configs")
    return dest


def _env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ANIMATE124_CACHE=str(tree.parent / f"cache-{tree.name}"),
               TORCH_EXTENSIONS_DIR=str(tree.parent / f"ext-{tree.name}"), PYTHONHASHSEED="0")
    return env


def check_imports(tree: Path) -> None:
    """Fail unless ``animate124`` and its configs resolve inside ``tree`` (not the editable install of this repo)."""
    code = "import animate124, animate124.configs as c; print(animate124.__file__); print(list(c.__path__)[0])"
    out = subprocess.run([sys.executable, "-c", code], env=_env(tree), cwd=tree, check=True, capture_output=True,
                         text=True).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"error: {path} is outside {tree}: PYTHONPATH does not take precedence over the install")


def run_rev(tree: Path, image: Path, extra: list[str]) -> Path:
    """Run the chain in ``tree``; returns its run dir (raises with the log tail when the run fails)."""
    run_dir = tree.parent / f"run-{tree.name}"
    cmd = [sys.executable, "-m", "animate124.run", "phase=all", *SMALL, *extra, f"image={image}", f"prompt={PROMPT}",
           f"run_dir={run_dir}", f"hydra.run.dir={run_dir}", f"models.cache_dir={tree.parent / f'models-{tree.name}'}"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=_env(tree), cwd=tree, capture_output=True, text=True)
    (tree.parent / f"log-{tree.name}.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"error: the run of {tree.name} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    print(f"  {tree.name}: phase=all done in {time.perf_counter() - t0:.1f} s", flush=True)
    return run_dir


def collect(run_dir: Path) -> dict[str, Any]:
    """Tensors (by 'relative file::key'), checkpoint states, reports, all from one run dir."""
    import torch
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    states: dict[str, Any] = {}
    for f in sorted(run_dir.glob("*/checkpoints/step-*/*.safetensors")):
        for key, t in load_file(str(f)).items():
            tensors[f"{f.relative_to(run_dir)}::{key}"] = t
    for f in sorted(run_dir.glob("*/checkpoints/step-*/state.json")):
        text = f.read_text().replace(str(run_dir), "<run_dir>")  # paths inside the run (init_checkpoint, ...)
        states[str(f.relative_to(run_dir))] = {k: v for k, v in json.loads(text).items() if k not in STATE_SKIP}
    for f in sorted(run_dir.glob("textual_inversion/*.bin")):
        for key, t in torch.load(f, map_location="cpu", weights_only=True).items():
            tensors[f"{f.relative_to(run_dir)}::{key}"] = t
    for f in sorted(run_dir.glob("textual_inversion/*.safetensors")):
        for key, t in load_file(str(f)).items():
            tensors[f"{f.relative_to(run_dir)}::{key}"] = t
    video = run_dir / "videos" / "orbit.mp4"
    if video.is_file():  # the final orbit video, decoded (uint8 frames)
        import imageio.v3 as iio

        tensors["videos/orbit.mp4::frames"] = torch.from_numpy(iio.imread(video))
    reports = {}
    for f in sorted(run_dir.glob("*/report.json")):
        rep = json.loads(f.read_text())
        reports[f.parent.name] = {k: rep.get(k) for k in REPORT_KEYS}
    top = json.loads((run_dir / "report.json").read_text())
    reports["all"] = {k: top.get(k) for k in ("complete", "total_steps", "order")}
    return {"tensors": tensors, "states": states, "reports": reports}


def _close(a: Any, b: Any, atol: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], atol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return (math.isnan(a) and math.isnan(float(b))) or abs(a - b) <= atol * max(1.0, abs(a), abs(b))
    return a == b


def compare(base: dict[str, Any], head: dict[str, Any], atol: float) -> list[str]:
    """Human-readable differences (empty when the runs agree)."""
    problems: list[str] = []
    bt, ht = base["tensors"], head["tensors"]
    for key in sorted(set(bt) ^ set(ht)):
        problems.append(f"tensor only in {'base' if key in bt else 'head'}: {key}")
    worst = 0.0
    for key in sorted(set(bt) & set(ht)):
        a, b = bt[key], ht[key]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"tensor {key}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
            continue
        if a.is_floating_point():
            diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
            nan_same = bool((a.isnan() == b.isnan()).all())
            diff = 0.0 if math.isnan(diff) and nan_same else diff
        else:
            diff = 0.0 if bool((a == b).all()) else math.inf
        worst = max(worst, diff)
        if not diff <= atol:
            problems.append(f"tensor {key}: max |diff| = {diff:.3g} > {atol:g}")
    print(f"  tensors: {len(set(bt) & set(ht))} compared, largest |diff| {worst:.3g}")
    for kind in ("states", "reports"):
        b, h = base[kind], head[kind]
        for key in sorted(set(b) | set(h)):
            if key not in b or key not in h or not _close(b[key], h[key], atol):
                problems.append(f"{kind[:-1]} {key}: {json.dumps(b.get(key))[:400]} vs {json.dumps(h.get(key))[:400]}")
        print(f"  {kind}: {len(set(b) & set(h))} compared")
    print("  metrics: " + "; ".join(f"{k}: {v.get('metrics')}" for k, v in head["reports"].items() if v.get("metrics")))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", default=BASE_REV)
    parser.add_argument("head", nargs="?", default="HEAD")
    parser.add_argument("--atol", type=float, default=1e-6)
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--base-override", action="append", default=[])
    parser.add_argument("--head-override", action="append", default=[])
    args = parser.parse_args(argv)
    revs = {"base": _git("rev-parse", "--short", args.base), "head": _git("rev-parse", "--short", args.head)}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="a124-same-"))
    print(f"same-result check: base {revs['base']} vs head {revs['head']} (atol {args.atol:g}) in {work}", flush=True)
    sys.path.insert(0, str(ROOT))
    from animate124.demo import example_image

    image = example_image(work / "input" / "blobs.png")
    results = {}
    try:
        for side, extra in (("base", args.base_override), ("head", args.head_override)):
            tree = export_tree(revs[side], work / f"{side}-{revs[side]}")
            check_imports(tree)
            results[side] = collect(run_rev(tree, image, extra))
        problems = compare(results["base"], results["head"], args.atol)
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print(f"DIFF {p}")
    print(f"{'SAME' if not problems else 'DIFFERENT'}: {revs['base']} vs {revs['head']} ({len(problems)} differences)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
