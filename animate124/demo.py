"""``python -m animate124.demo`` (``make demo``): the offline end-to-end demo on a CPU.

1. Writes the synthetic blob scene (``animate124.data.synthetic``) to ``outputs/demo/data`` (skipped if present).
2. Fits the dynamic field to it with ``python -m animate124.run phase=fit ...`` (resumes / skips when already done).
3. Renders an orbit while the scene animates to ``outputs/demo/videos/orbit.mp4`` and prints it with the test PSNR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401
from animate124.data.synthetic import RADIUS, make_synthetic_scene
from animate124.errors import Animate124Error
from animate124.io.checkpoint import latest_checkpoint, load_checkpoint
from animate124.io.report import read_report
from animate124.io.run_dir import phase_dirs
from animate124.render.cameras import Cameras, orbit

VIDEO_SIZE = 96
"""Orbit video size: a multiple of 16, so ffmpeg's macro blocks need no resize."""


def fit_overrides(out: Path, steps: int) -> list[str]:
    """The ``phase=fit`` overrides of the demo (CPU-sized field and renderer)."""
    return ["phase=fit", f"data.path={out / 'data'}", f"run_dir={out}", "field=fit_cpu", "render=fit_cpu",
            f"phase.max_steps={steps}"]


@torch.no_grad()
def render_orbit(out: Path, overrides: list[str], frames: int = 48, fps: int = 12) -> Path:
    """Render ``frames`` views orbiting at elevation 20° while τ goes 0 → 1; write ``<out>/videos/orbit.mp4``."""
    from animate124.phases.fit import FitPhase

    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("run", overrides=overrides))
    phase = FitPhase(cfg, out)
    phase.build()
    ckpt = latest_checkpoint(phase.dirs.checkpoints)
    if ckpt is None:
        raise Animate124Error(f"no fit checkpoint in {phase.dirs.checkpoints}; re-run python -m animate124.demo")
    phase.load_modules(load_checkpoint(ckpt, map_location=phase.device)[0])
    elevation, azimuth, radius = orbit(frames, elevation=20.0, radius=RADIUS)
    cams = Cameras.from_spherical(elevation, azimuth, radius, size=VIDEO_SIZE, fovy_deg=40.0).to(phase.device)
    times = torch.linspace(0.0, 1.0, frames, device=phase.device)
    images = []
    for k in range(frames):
        rgb = phase.renderer.render_image(cams[k], times[k : k + 1][:, None],
                                          background=torch.ones(3, device=phase.device)).rgb[0, 0]
        images.append((rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
    path = out / "videos" / "orbit.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, images, fps=fps, quality=8, macro_block_size=16)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--steps", type=int, default=400, help="fit steps (default 400)")
    parser.add_argument("--size", type=int, default=96, help="synthetic scene image size (default 96)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not (out / "data" / "transforms_test.json").is_file():
        print(f"writing the synthetic scene to {out / 'data'} ...", flush=True)
        make_synthetic_scene(out / "data", size=args.size, n_train=100, n_test=20, n_val=0)
    from animate124.run import main as run_main

    overrides = fit_overrides(out, args.steps)
    print("python -m animate124.run " + " ".join(overrides), flush=True)
    code = run_main(overrides)
    if code != 0:
        return code
    try:
        video = render_orbit(out, overrides)
    except Animate124Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    psnr = read_report(phase_dirs(out, "fit").report).get("metrics", {}).get("test_psnr")
    print(f"test PSNR: {psnr:.2f} dB" if isinstance(psnr, float) else "test PSNR: n/a")
    print(f"video: {video.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
