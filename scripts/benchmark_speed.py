"""Speed of the rendering and encoding ops per backend on a fixed synthetic scene (rays/s, points/s).

Usage:
    python scripts/benchmark_speed.py [--quick] [--device auto|cpu|cuda] [--out results.json]

Backends: ``torch`` (the pure-PyTorch reference, always), ``cuda`` (our kernels, when built and a GPU is present),
``nerfacc`` (nerfacc 0.5 OccGridEstimator + volume rendering, CUDA only). Workloads:

- ``march+composite train``: near/far → march_rays_train → analytic sphere field → composite_rays_train → loss →
  backward (fwd + bwd), rays/s;
- ``march+composite infer``: the alive-ray loop (``ops.inference.render_rays_inference``), rays/s;
- ``grid_encode 3D K=1`` / ``3D K=64`` (keyframe lerp) / ``4D``: forward + backward w.r.t. the tables, points/s.

Scene: rays from a ring of cameras at radius 2.5 looking at the origin, a sphere of radius 0.5 (σ = 50 inside, so
rays saturate), a fully updated occupancy grid of the sphere (the original's 128³, dt = 2√3/1024). ``--quick``
shrinks everything so the torch reference finishes in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import torch

from animate124.ops import _backend
from animate124.ops import _reference as ref
from animate124.ops.hashgrid import grid_layout

BOUND, RADIUS, SIGMA_IN = 1.0, 0.5, 50.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, min_time: float, max_iters: int) -> float:
    """Median seconds per call (one warm-up call, then repeat until min_time or max_iters)."""
    fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_iters and (time.perf_counter() - start < min_time or len(times) < 2):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def scene(n_rays: int, res: int, device: torch.device) -> dict:
    """Rays, near/far, bitfield of the sphere, noise: the fixed synthetic scene."""
    g = torch.Generator().manual_seed(0)
    azim = torch.rand(n_rays, generator=g) * 2 * math.pi
    elev = (torch.rand(n_rays, generator=g) - 0.5) * 0.6
    o = 2.5 * torch.stack([elev.cos() * azim.cos(), elev.cos() * azim.sin(), elev.sin()], -1)
    target = (torch.rand(n_rays, 3, generator=g) - 0.5) * 1.4  # most rays hit the sphere, some only the box
    d = target - o
    d = d / d.norm(dim=-1, keepdim=True)
    cells = ref.morton3d_invert(torch.arange(res ** 3))
    centres = ((cells.float() + 0.5) / res * 2 - 1) * BOUND
    density = torch.where(centres.norm(dim=-1) < RADIUS + 2 * BOUND / res, SIGMA_IN, 0.0)[None]
    bits = ref.packbits(density, 1.0)
    o, d = o.to(device), d.to(device)
    nears, fars = ref.near_far_from_aabb(o, d, torch.tensor([-BOUND] * 3 + [BOUND] * 3, device=device), 0.2)
    return dict(rays_o=o, rays_d=d, nears=nears, fars=fars, bitfield=bits.to(device), density=density.to(device),
                slots=torch.zeros(n_rays, dtype=torch.long, device=device),
                noise=torch.rand(n_rays, generator=g).to(device))


def sphere_field(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """σ = 50·scale inside the sphere (differentiable through ``scale``), albedo from the position."""
    sigma = (x.norm(dim=-1) < RADIUS).float() * SIGMA_IN * scale
    return sigma, (0.5 * x + 0.5).clamp(0, 1)


def bench_render(backend: str, sc: dict, res: int, device: torch.device, args) -> dict[str, float]:
    """rays/s of the train (fwd + bwd) and inference workloads for one backend."""
    from animate124.ops.inference import render_rays_inference

    mod = ref if backend == "torch" else __import__("animate124.ops._cuda", fromlist=["_cuda"])
    dt, max_steps, n = 2 * math.sqrt(3) * BOUND / 1024, 1024, sc["rays_o"].shape[0]
    scale = torch.ones((), device=device, requires_grad=True)
    aabb = torch.tensor([-BOUND] * 3 + [BOUND] * 3, device=device)

    def train() -> None:
        nears, fars = mod.near_far_from_aabb(sc["rays_o"], sc["rays_d"], aabb, 0.2)
        s = mod.march_rays_train(sc["rays_o"], sc["rays_d"], nears, fars, sc["bitfield"], sc["slots"], sc["noise"],
                                 BOUND, res, dt, max_steps)
        sigma, rgb = sphere_field(s.xyzs, scale)
        _, ws, depth, image = mod.composite_rays_train(sigma, rgb, s.ts, s.rays, 1e-4)
        (image.sum() + ws.sum() + 0.1 * depth.sum()).backward()

    def infer() -> None:
        with torch.no_grad():
            render_rays_inference(sc["rays_o"], sc["rays_d"], sc["nears"], sc["fars"], sc["bitfield"], sc["slots"],
                                  lambda x, d, r: sphere_field(x, scale.detach()), bound=BOUND, grid_res=res, dt=dt,
                                  max_steps=max_steps)

    if backend == "torch":  # make the public inference loop take the reference path on CUDA too
        import os

        os.environ["ANIMATE124_FORCE_REFERENCE"] = "1"
    try:
        t_train = timeit(train, device, args.min_time, args.max_iters)
        t_infer = timeit(infer, device, args.min_time, args.max_iters)
    finally:
        if backend == "torch":
            import os

            os.environ.pop("ANIMATE124_FORCE_REFERENCE", None)
    return {"march+composite train (rays/s)": n / t_train, "march+composite infer (rays/s)": n / t_infer}


def bench_nerfacc(sc: dict, res: int, device: torch.device, args) -> dict[str, float]:
    """The same workloads with nerfacc 0.5 (OccGridEstimator with our occupancy bits, then nerfacc rendering)."""
    import nerfacc

    dt, n = 2 * math.sqrt(3) * BOUND / 1024, sc["rays_o"].shape[0]
    est = nerfacc.OccGridEstimator(roi_aabb=[-BOUND] * 3 + [BOUND] * 3, resolution=res, levels=1).to(device)
    dense = torch.zeros(res, res, res, dtype=torch.bool, device=device)
    cells = ref.morton3d_invert(torch.arange(res ** 3, device=device))
    dense[cells[:, 0], cells[:, 1], cells[:, 2]] = sc["density"][0] > 1.0
    est.binaries = dense[None]
    scale = torch.ones((), device=device, requires_grad=True)
    o, d = sc["rays_o"], sc["rays_d"]

    def run(grad: bool) -> None:
        def sigma_fn(t0, t1, ri):
            x = o[ri] + d[ri] * ((t0 + t1) / 2)[:, None]
            return sphere_field(x, scale.detach())[0]

        def rgb_sigma_fn(t0, t1, ri):
            x = o[ri] + d[ri] * ((t0 + t1) / 2)[:, None]
            sigma, rgb = sphere_field(x, scale)
            return rgb, sigma

        with torch.set_grad_enabled(grad):
            ri, t0, t1 = est.sampling(o, d, sigma_fn=sigma_fn, near_plane=0.2, render_step_size=dt,
                                      stratified=grad, early_stop_eps=1e-4)
            rgb, acc, depth, _ = nerfacc.rendering(t0, t1, ri, n_rays=n, rgb_sigma_fn=rgb_sigma_fn)
            if grad:
                (rgb.sum() + acc.sum() + 0.1 * depth.sum()).backward()

    t_train = timeit(lambda: run(True), device, args.min_time, args.max_iters)
    t_infer = timeit(lambda: run(False), device, args.min_time, args.max_iters)
    return {"march+composite train (rays/s)": n / t_train, "march+composite infer (rays/s)": n / t_infer}


def bench_encode(backend: str, device: torch.device, args) -> dict[str, float]:
    """points/s of grid_encode forward + backward for the three field configurations."""
    mod = ref if backend == "torch" else __import__("animate124.ops._cuda", fromlist=["_cuda"])
    log2 = 12 if args.quick else 16
    n = args.points
    out: dict[str, float] = {}
    for label, dims, keyframes, kind in (("3D K=1", 3, 1, "tiled"), ("3D K=64", 3, 64, "tiled"),
                                         ("4D", 4, 1, "hash")):
        k = min(keyframes, 8) if args.quick else keyframes
        offsets, res = grid_layout(kind, 16, 16, 2048, log2 if dims == 3 else log2 + 3, dims)
        offsets, res = offsets.to(device), res.to(device)
        emb = (torch.rand(k, int(offsets[-1]), 2, device=device) * 2e-4 - 1e-4).requires_grad_()
        g = torch.Generator().manual_seed(1)
        x = torch.rand(n, dims, generator=g).to(device)
        t = torch.rand(n, generator=g).to(device) if k > 1 else None

        def step(emb=emb, x=x, t=t, offsets=offsets, res=res, kind=kind) -> None:
            feats = mod.grid_encode(x, emb, offsets, res, kind, t)
            feats.square().sum().backward()
            emb.grad = None

        label = label if k == keyframes else f"{label} (K={k} in --quick)"
        out[f"grid_encode {label} fwd+bwd (points/s)"] = n / timeit(step, device, args.min_time, args.max_iters)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CPU-friendly)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--rays", type=int, default=None, help="rays per render (default 65536; 1024 with --quick)")
    p.add_argument("--points", type=int, default=None, help="points per grid_encode call (default 2^18; 4096 quick)")
    p.add_argument("--min-time", dest="min_time", type=float, default=None, help="seconds per measurement")
    p.add_argument("--max-iters", dest="max_iters", type=int, default=50)
    p.add_argument("--backends", default="torch,cuda,nerfacc", help="comma-separated subset to run")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    args.rays = args.rays or (1024 if args.quick else 65536)
    args.points = args.points or (4096 if args.quick else 1 << 18)
    args.min_time = args.min_time if args.min_time is not None else (0.5 if args.quick else 2.0)
    res = 64 if args.quick else 128
    wanted = set(args.backends.split(","))
    backends = ["torch"]
    if device.type == "cuda" and "cuda" in wanted and _backend.available():
        backends.append("cuda")
    if device.type == "cuda" and "nerfacc" in wanted:
        try:
            import nerfacc  # noqa: F401

            backends.append("nerfacc")
        except ImportError:
            pass
    sc = scene(args.rays, res, device)
    results: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for b in backends:
        print(f"[benchmark] {b} ...", flush=True)
        try:
            if b == "nerfacc":
                results[b] = bench_nerfacc(sc, res, device, args)
            else:
                results[b] = {**bench_render(b, sc, res, device, args), **bench_encode(b, device, args)}
        except Exception as exc:  # e.g. nerfacc's own JIT build failing: report it and keep the other columns
            errors[b] = repr(exc)
            results[b] = {}
            print(f"[benchmark] {b} failed: {exc!r}", flush=True)
    rows = sorted({k for r in results.values() for k in r}, key=lambda k: (not k.startswith("march"), k))
    print(f"\ndevice: {torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}"
          f" | torch {torch.__version__} | rays {args.rays}, grid {res}^3, points {args.points}"
          f"{' | --quick' if args.quick else ''}")
    header = f"{'workload':<60}" + "".join(f"{b:>14}" for b in backends)
    print(header + "\n" + "-" * len(header))
    for k in rows:
        print(f"{k:<60}" + "".join(f"{results[b][k]:>14.4g}" if k in results[b] else f"{'-':>14}" for b in backends))
    if args.out:
        meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "backend_info": _backend.backend_info(), "rays": args.rays,
                "grid_res": res, "points": args.points, "quick": args.quick, "errors": errors}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
