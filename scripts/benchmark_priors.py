"""Time and memory of one SDS step (forward + backward to the pixels) of each video prior.

    python scripts/benchmark_priors.py --models tiny --frames 8 --size 64            # CPU smoke numbers
    python scripts/benchmark_priors.py --models random --frames 16 --size 128 --out priors.json   # GPU, full size

``--models random`` builds the full-size architectures with random weights (same FLOPs and bytes as the real
models); ``--models pretrained`` loads the real ones. The text prior runs at its configured latent size
(ModelScope 256² by default), the image prior (SVD) at ``--svd-size``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from animate124.config.guidance import ImageVideoGuidanceConfig, VideoGuidanceConfig
from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.types import GuidanceContext


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(kind: str, args: argparse.Namespace, models_cfg: ModelsConfig, device: torch.device):
    from animate124.guidance.base import TermInputs

    if kind == "text":
        from animate124.guidance.video import VideoSDS

        cfg = VideoGuidanceConfig(height=args.video_size, width=args.video_size)
        return VideoSDS(cfg, TermInputs(device=device, models_cfg=models_cfg, prompt="a panda is dancing"))
    from animate124.guidance.image_video import ImageVideoGuidance

    ref = torch.rand(3, args.svd_size, args.svd_size, device=device)
    return ImageVideoGuidance(ImageVideoGuidanceConfig(height=args.svd_size, width=args.svd_size),
                              TermInputs(device=device, models_cfg=models_cfg, reference=ref))


def bench(kind: str, args: argparse.Namespace) -> dict[str, float | str | int]:
    device = torch.device(args.device)
    models_cfg = ModelsConfig(kind=ModelsKind(args.models))
    t0 = time.perf_counter()
    term = _build(kind, args, models_cfg, device)
    load_s = time.perf_counter() - t0
    b, f = 1, args.frames
    zeros = torch.zeros(b, f, device=device)
    times = []
    for step in range(args.warmup + args.steps):
        images = torch.rand(b, f, 3, args.size, args.size, device=device, requires_grad=True)
        ctx = GuidanceContext(step=step, elevation=zeros, azimuth=zeros, radius=zeros + 1.8)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = term(images, ctx)
        out.loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    return {"prior": kind, "models": args.models, "device": str(device), "frames": f, "render_size": args.size,
            "latent_size": (args.video_size if kind == "text" else args.svd_size) // 8,
            "load_s": round(load_s, 2), "step_ms_median": round(1000 * times[len(times) // 2], 1),
            "peak_memory_mb": round(_peak_memory_mb(device), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny", choices=["tiny", "random", "pretrained"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="render size fed to the prior")
    ap.add_argument("--video-size", type=int, default=256, help="text prior (ModelScope) resolution")
    ap.add_argument("--svd-size", type=int, default=256, help="image prior (SVD) resolution")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--priors", default="text,image")
    ap.add_argument("--out", default=None, help="write the rows as JSON")
    args = ap.parse_args()
    rows = []
    for kind in args.priors.split(","):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        rows.append(bench(kind, args))
        print(json.dumps(rows[-1]))
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
