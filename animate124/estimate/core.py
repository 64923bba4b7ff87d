"""Per-phase estimates: the step variants of the composed run config, traced once each, turned into peak memory
and roofline time for a named GPU."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch

from animate124.estimate import gpus as G
from animate124.estimate.phase_steps import MODEL_BUILDERS, Variant, _term_models, field_sizes, trace_render_step, trace_ti_step
from animate124.estimate.render_model import occupancy_update_cost, optimizer_bytes, render_cost
from animate124.estimate.steps import SDSTerm, StepEnv
from animate124.estimate.tracer import fake_mode

log = logging.getLogger(__name__)

GB = 1e9
LAUNCH_S = 5e-6
"""Per-op overhead of the step-time model: one CUDA kernel launch plus PyTorch dispatch, ~5 µs (the usual eager-mode
figure; the roofline is a lower bound, this term covers the many small ops it rates at ~0)."""
RENDER_OPS = 400
"""Kernel launches of one render + regularisers + optimizer step outside the traced guidance (march, encode, MLP,
composite, losses, Adam; counted from the phase code's op sequence, rounded up)."""
CUDA_CONTEXT_GB = 0.6
"""CUDA context + cuBLAS/cuDNN workspaces (assumption until measured on a GPU)."""
ALLOCATOR_HEADROOM = 0.15
"""Reserved over allocated bytes of the caching allocator (fragmentation; assumption until measured)."""
MARGIN = 0.10
"""Safety margin of the budget planner."""


def model_dtype(cfg: Any) -> torch.dtype:
    d = cfg.models.dtype
    return torch.float16 if d == "auto" else getattr(torch, d)


def _sds(name: str, g: Any, **kw: Any) -> SDSTerm:
    return SDSTerm(name=name, cfg_scale=float(g.cfg_scale), **kw)


def _video_terms(cfg: Any, pcfg: Any) -> list[SDSTerm]:
    g, out = cfg.guidance, []
    kind = getattr(g.video.kind, "value", g.video.kind)
    if kind in ("text", "both") and g.video.enabled:
        out.append(_sds("video", g.video, vae="ms_vae", unet="ms_unet", size=(g.video.height, g.video.width),
                        emb=(1, 77, 1024), kind="unet3d", grad_frames=g.video.vae_grad_frames, chunk=g.video.vae_chunk))
    if kind in ("image", "both") and g.image_video.enabled:
        iv = g.image_video
        out.append(_sds("svd", iv, vae="svd_vae", unet="svd_unet", size=(iv.height, iv.width), emb=(1, 1, 1024),
                        kind="svd", grad_frames=iv.vae_grad_frames))
    return out


def _zero123(cfg: Any, frames: Any = None) -> SDSTerm:
    z = cfg.guidance.zero123
    return _sds("zero123", z, vae="z123_vae", unet="z123_unet", size=(z.resolution, z.resolution), emb=(1, 1, 768),
                kind="zero123", frames=frames)


def _controlnet(cfg: Any, num_frames: int) -> SDSTerm:
    from animate124.guidance.controlnet import even_frames

    c = cfg.guidance.controlnet
    frames = list(c.frames) if c.frames is not None else even_frames(num_frames, c.num_frames)
    return _sds("controlnet", c, vae="cn_vae", unet="cn_unet", size=(c.size, c.size), emb=(1, 77, 768),
                kind="controlnet", frames=frames, control="cn")


def variants(cfg: Any, pcfg: Any) -> list[Variant]:
    """The step kinds of phase ``pcfg`` with their shares of the steps (spec §7.1, §8.4)."""
    kind = pcfg.kind.value
    g = cfg.guidance
    if kind == "textual_inversion":
        return [Variant("ti", 1.0, ti={"batch": pcfg.batch_size, "resolution": pcfg.resolution})]
    ref_share = 1.0 / pcfg.known_interval
    if kind == "static":
        sds_share = (1 - ref_share) * max(pcfg.max_steps - pcfg.known_iters, 0) / pcfg.max_steps
        terms = [t for t, on in ((_sds("sd", g.sd, vae="sd_vae", unet="sd_unet", size=(g.sd.resolution,) * 2,
                                       emb=(1, 77, 768)), g.sd.enabled), (_zero123(cfg), g.zero123.enabled)) if on]
        return [Variant("sds", sds_share, terms, 1, pcfg.render_size),
                Variant("reference", 1 - sds_share, [], 1, pcfg.ref_size, normals=False)]
    video = _video_terms(cfg, pcfg)
    extra, control = [], 0
    if kind == "refine" and g.controlnet.enabled:
        cn = _controlnet(cfg, pcfg.num_frames)
        extra, control = [cn], len(cn.frames or [])
    z_rate = pcfg.clip.start_zero_rate if (pcfg.zero123_on_start and g.zero123.enabled) else 0.0
    sds = 1 - ref_share
    out = [Variant("sds", sds * (1 - z_rate), video + extra, pcfg.num_frames, pcfg.render_size, control_frames=control)]
    if z_rate > 0:
        out.append(Variant("sds+zero123", sds * z_rate, video + extra + [_zero123(cfg, [0])], pcfg.num_frames,
                           pcfg.render_size, control_frames=control))
    out.append(Variant("reference", ref_share, [], 1, pcfg.ref_size, normals=False))
    return out


def phase_models(cfg: Any, pcfg: Any, vs: list[Variant]) -> list[str]:
    """Every model the phase keeps on the GPU (all terms of all variants)."""
    if pcfg.kind.value == "textual_inversion":
        return ["ti_text", "ti_vae", "ti_unet"]
    terms = [t for v in vs for t in v.terms]
    return _term_models(terms)


def _step_time(tr: Any, rc: Any, g: G.GPU, field_n: int) -> float:
    t = sum(G.ops_time(ops, g) for ops in tr.ops.values())
    n_ops = sum(len(ops) for ops in tr.ops.values())
    t += rc.time(g) if rc is not None else 0.0
    t += optimizer_bytes(field_n) / g.bandwidth
    return t + (n_ops + RENDER_OPS) * LAUNCH_S


def _budget_gb(peak_bytes: float) -> float:
    """What a run needs on the GPU: allocated peak × (1 + headroom) + CUDA context (no margin)."""
    return peak_bytes * (1 + ALLOCATOR_HEADROOM) / GB + CUDA_CONTEXT_GB


def _builders(cfg: Any) -> dict[str, Any]:
    from animate124.estimate.levers import builders_with_levers

    return builders_with_levers(MODEL_BUILDERS, cfg)


def estimate_phase(cfg: Any, pcfg: Any, gpu_name: str = "h100", env: StepEnv | None = None) -> dict[str, Any]:
    """Trace every step variant of phase ``pcfg`` and return its memory and time estimate (a JSON-able dict)."""
    g = G.gpu(gpu_name)
    env = env or StepEnv(_builders(cfg), model_dtype(cfg), fake_mode())
    vs = variants(cfg, pcfg)
    models = phase_models(cfg, pcfg, vs)
    kind = pcfg.kind.value
    dynamic = kind in ("dynamic", "refine")
    field_n, frozen_n = (0, 0) if kind == "textual_inversion" else field_sizes(cfg.field, dynamic, kind == "refine")
    spr = float(cfg.estimate.samples_per_ray)
    rows = []
    for v in vs:
        if v.ti is not None:
            tr, rc = trace_ti_step(env, v.ti["batch"], v.ti["resolution"]), None
        else:
            tr, rc = trace_render_step(env, v, models, cfg.field, spr, dynamic, field_n, frozen_n,
                                       cfg.render.checkpoint_frames)
        s = tr.summary()
        rows.append({"variant": v.name, "share": v.share, "peak_gb": s["peak_bytes"] / GB,
                     "peak_by_category_gb": {k: b / GB for k, b in s["peak_by_category"].items()},
                     "peak_during": s["peak_during"], "tflop": {k: f / 1e12 for k, f in s["flops"].items() if f},
                     "gb_moved": {k: b / GB for k, b in s["bytes_moved"].items() if b},
                     "render_samples": rc.samples if rc else 0, "render_saved_gb": rc.saved_bytes / GB if rc else 0.0,
                     "sdpa_kernels": s["sdpa_kernels"],
                     "step_s": {name: _step_time(tr, rc, gg, field_n) for name, gg in G.GPUS.items()}})
    return _phase_summary(cfg, pcfg, rows, models, field_n, g, env)


def _extras_s(cfg: Any, pcfg: Any, gg: G.GPU) -> dict[str, float]:
    """Occupancy updates and validation renders of the whole phase, seconds at 100 %."""
    kind = pcfg.kind.value
    if kind == "textual_inversion":
        return {"occupancy": 0.0, "validation": 0.0}
    dynamic = kind in ("dynamic", "refine")
    slots = int(pcfg.time_slots)
    occ = occupancy_update_cost(cfg.field, cfg.render.grid_resolution, slots, dynamic).time(gg)
    n_occ = pcfg.max_steps / max(cfg.render.update_interval, 1)
    n_val = pcfg.max_steps / pcfg.val_every if pcfg.val_every else 1
    frames = 2 * int(pcfg.val_frames) if dynamic else int(pcfg.val_views)
    size = int(pcfg.val_size)
    val = render_cost(cfg.field, frames * size * size, float(cfg.estimate.samples_per_ray), True, dynamic, grad=False)
    return {"occupancy": n_occ * occ, "validation": (n_val + 1) * val.time(gg)}


def _phase_summary(cfg: Any, pcfg: Any, rows: list[dict], models: list[str], field_n: int, g: G.GPU,
                   env: StepEnv) -> dict[str, Any]:
    from animate124.estimate.arch import param_bytes

    peak = max(r["peak_gb"] for r in rows)
    times = {}
    for name, gg in G.GPUS.items():
        step = sum(r["share"] * r["step_s"][name] for r in rows)
        extra = _extras_s(cfg, pcfg, gg)
        train = pcfg.max_steps * step
        times[name] = {f"{int(e * 100)}%": {"step_s": step / e, "train_s": train / e,
                                             "occupancy_s": extra["occupancy"] / e, "validation_s": extra["validation"] / e,
                                             "total_s": (train + sum(extra.values())) / e} for e in G.EFFICIENCIES}
    return {
        "phase": pcfg.kind.value, "steps": int(pcfg.max_steps), "gpu": g.name,
        "peak_allocated_gb": peak, "needs_gb": _budget_gb(peak * GB),
        "weights_gb": {k: param_bytes(env.modules[k]) / GB for k in models},
        "field_params": field_n, "variants": rows, "time": times,
    }


def phase_names(cfg: Any) -> list[str]:
    """The phases a run of ``cfg`` trains (``phase=all``: the four of the chain)."""
    if cfg.phase.kind.value != "all":
        return [cfg.phase.kind.value]
    from animate124.phases.all import ORDER

    return list(ORDER)


def phase_config(cfg: Any, name: str) -> Any:
    """The run config of one phase of ``cfg`` (itself unless ``phase=all``)."""
    return cfg if cfg.phase.kind.value != "all" else dataclasses.replace(cfg, phase=getattr(cfg.phase, name))


def estimate_phases(cfg: Any, names: list[str], gpu_name: str = "h100") -> dict[str, dict[str, Any]]:
    """Estimates of the phases ``names`` of ``cfg`` (one fake mode and one set of meta models for all)."""
    env = StepEnv(_builders(cfg), model_dtype(cfg), fake_mode())
    out = {}
    for name in names:
        sub = phase_config(cfg, name)
        out[name] = estimate_phase(sub, sub.phase, gpu_name, env)
    return out


def combine(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-phase estimates plus the run's totals."""
    total = {gname: {e: sum(p["time"][gname][e]["total_s"] for p in phases.values()) for e in ("100%", "40%")}
             for gname in G.GPUS}
    if not all(math.isfinite(p["peak_allocated_gb"]) for p in phases.values()):
        raise RuntimeError("non-finite memory estimate")
    return {"phases": phases, "total_time_s": total, "max_needs_gb": max(p["needs_gb"] for p in phases.values())}


def estimate_run(cfg: Any, gpu_name: str = "h100") -> dict[str, Any]:
    """Estimates of the run's phase (``phase=all``: each of the four, plus totals)."""
    return combine(estimate_phases(cfg, phase_names(cfg), gpu_name))
