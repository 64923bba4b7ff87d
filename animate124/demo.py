"""``python -m animate124.demo`` (``make demo``): offline end-to-end demos on a CPU, on inputs the project makes itself.

``--mode pipeline`` (default), the main job:
1. renders an example input picture (RGBA, 128²) of the synthetic blob scene of ``animate124.data.synthetic`` at τ = 0
   from the reference view, to ``outputs/demo/input/blobs.png`` (never the shared benchmark images);
2. runs the whole generation pipeline ``python -m animate124.run phase=all models=tiny ...`` (textual inversion →
   static → dynamic → refine) with tiny random diffusion models and CPU-sized settings (resumes / skips finished
   phases when run again);
3. prints the orbit-while-animating video of the result (``outputs/demo/pipeline/videos/orbit.mp4``). With tiny
   random models the video shows the plumbing, not a meaningful animation: real results need real weights (GPU).

``--mode fit``: the representation's yardstick. Writes the synthetic multi-view video to ``outputs/demo/data``, fits the
dynamic field with ``phase=fit`` and exports an orbit video (``outputs/demo/fit/videos/orbit.mp4``) + the test PSNR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from animate124.data.synthetic import RADIUS, default_scene, make_synthetic_scene, render_view, spherical_position
from animate124.errors import Animate124Error
from animate124.io.report import read_report
from animate124.io.run_dir import phase_dirs

PROMPT = "colourful balls are bouncing"
"""The example's motion caption."""

PIPELINE_OVERRIDES = [
    "models=tiny", "field=small", "render=fast", "render.grid_resolution=32", "render.max_steps=96",
    "phase.textual_inversion.max_steps=20", "phase.textual_inversion.batch_size=2",
    "phase.textual_inversion.resolution=64",
    "phase.static.max_steps=200", "phase.static.render_size=48", "phase.static.ref_size=48",
    "phase.static.known_iters=150", "phase.static.val_views=4", "phase.static.val_size=48",
    "phase.dynamic.max_steps=20", "phase.dynamic.num_frames=6", "phase.dynamic.render_size=32",
    "phase.dynamic.ref_size=48", "phase.dynamic.checkpoint_every=10", "phase.dynamic.val_frames=8",
    "phase.dynamic.val_size=48",
    "phase.refine.max_steps=8", "phase.refine.num_frames=6", "phase.refine.render_size=32",
    "phase.refine.ref_size=48", "phase.refine.val_frames=8", "phase.refine.val_size=48",
    "guidance.sd.resolution=64", "guidance.zero123.resolution=64", "guidance.video.height=64",
    "guidance.video.width=64", "guidance.controlnet.size=64",
    "phase.video_frames=48", "phase.video_size=96",
    # Tiny RANDOM diffusion models give noise, not knowledge: every SDS term still runs (the plumbing is what the demo
    # shows), weighted 1000× down so that the reference-view losses shape the object.
    "guidance.sd.weight=0.001", "guidance.zero123.weight=0.04", "guidance.video.weight=0.001",
    "guidance.controlnet.weight=0.001",
]
"""CPU-sized settings of the tiny-model pipeline (a few minutes on 2 cores)."""


def example_image(path: Path, size: int = 128) -> Path:
    """Render the example input (RGBA PNG) from the reference view (elevation 0, azimuth 0) at τ = 0."""
    if not path.is_file():
        from animate124.data.synthetic import look_at

        c2w = look_at(spherical_position(0.0, 0.0, RADIUS))
        rgba = render_view(default_scene(), c2w, 0.0, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, (rgba.numpy() * 255 + 0.5).astype(np.uint8))
    return path


def _run(overrides: list[str]) -> int:
    from animate124.run import main as run_main

    print("python -m animate124.run " + " ".join(overrides), flush=True)
    return run_main(overrides)


def _export_orbit(run_dir: Path, radius: float, size: int = 96, frames: int = 48) -> Path:
    from animate124.config.export import CameraPathConfig, ExportConfig
    from animate124.export.outputs import export

    out = run_dir / "videos" / "orbit.mp4"
    cfg = ExportConfig(run_dir=str(run_dir), path="orbit", frames=frames, size=size, fps=12.0, out=str(out),
                       camera=CameraPathConfig(elevation=20.0, radius=radius), contact_sheet=False)
    export(cfg)
    return out


def pipeline(out: Path) -> int:
    image = example_image(out / "input" / "blobs.png")
    run_dir = out / "pipeline"
    code = _run(["phase=all", *PIPELINE_OVERRIDES, f"image={image}", f"prompt={PROMPT}", f"run_dir={run_dir}"])
    if code != 0:
        return code
    report = read_report(run_dir / "report.json")
    video = report.get("video") or str(run_dir / "videos" / "orbit.mp4")
    print(f"input: {image.resolve()}")
    print(f"video: {Path(video).resolve()}")
    return 0


def fit(out: Path, steps: int, size: int) -> int:
    data, run_dir = out / "data", out / "fit"
    if not (data / "transforms_test.json").is_file():
        print(f"writing the synthetic scene to {data} ...", flush=True)
        make_synthetic_scene(data, size=size, n_train=100, n_test=20, n_val=0)
    code = _run(["phase=fit", f"data.path={data}", f"run_dir={run_dir}", "field=fit_cpu", "render=fit_cpu",
                 f"phase.max_steps={steps}"])
    if code != 0:
        return code
    video = _export_orbit(run_dir, radius=RADIUS)
    psnr = read_report(phase_dirs(run_dir, "fit").report).get("metrics", {}).get("test_psnr")
    print(f"test PSNR: {psnr:.2f} dB" if isinstance(psnr, float) else "test PSNR: n/a")
    print(f"video: {video.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["pipeline", "fit"], default="pipeline")
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--steps", type=int, default=400, help="fit steps (--mode fit)")
    parser.add_argument("--size", type=int, default=96, help="synthetic scene image size (--mode fit)")
    args = parser.parse_args(argv)
    try:
        return pipeline(Path(args.out)) if args.mode == "pipeline" else fit(Path(args.out), args.steps, args.size)
    except Animate124Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
