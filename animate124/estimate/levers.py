"""Memory levers and the ``gpu_memory_gb`` budget planner.

Levers, in the order the planner turns them on (exact ones first; docs/benchmarks.md has the table with their
estimated effect and time cost):

1. ``models.vae_checkpointing=true``: gradient checkpointing of the VAE encoders. Exact.
2. ``models.unet_checkpointing=true``: gradient checkpointing of UNets that are trained through (textual
   inversion). Exact.
3. ``render.checkpoint_frames`` = 8, 4, 2, 1: the training render in chunks of frames under gradient
   checkpointing. Exact.
4. ``guidance.video.vae_grad_frames`` = 8, 4, 2, 1 (and ``guidance.image_video.vae_grad_frames``): VAE-encoder
   gradients for a subset of the frames. Changes results.
5. ``guidance.controlnet.size`` = 768, 512: ControlNet-Tile at a lower latent size. Changes results.
6. ``phase.textual_inversion.batch_size`` halved (textual inversion only). Changes results.

Evaluated but not turned on by the planner: offloading the models of terms a step does not use (every model of
the largest step must be resident during that step, so the peak does not drop; see docs/benchmarks.md), and
freeing text encoders after the prompts are encoded (every term already does it). Attention: the diffusers
models run SDPA (``AttnProcessor2_0``), the memory-efficient kernels, already; the trace logs the kernels.

A phase fits when ``(peak allocated × (1 + allocator headroom) + CUDA context) × (1 + margin) ≤ gpu_memory_gb``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

_META_CACHE: dict[tuple[str, torch.dtype], nn.Module] = {}


def builders_with_levers(builders: dict[str, Callable[[torch.dtype], nn.Module]], cfg: Any) -> dict[str, Any]:
    """Meta builders (cached across estimates) with the checkpointing levers of ``cfg.models`` applied."""

    def wrap(key: str, build: Callable[[torch.dtype], nn.Module]) -> Callable[[torch.dtype], nn.Module]:
        def built(dtype: torch.dtype) -> nn.Module:
            if (key, dtype) not in _META_CACHE:
                _META_CACHE[(key, dtype)] = build(dtype)
            module = _META_CACHE[(key, dtype)]
            apply_checkpointing(module, key, cfg.models)
            return module

        return built

    return {k: wrap(k, b) for k, b in builders.items()}


def apply_checkpointing(module: nn.Module, key: str, models_cfg: Any) -> None:
    """Turn diffusers' gradient checkpointing on/off per ``models.vae_checkpointing`` / ``unet_checkpointing``."""
    if not hasattr(module, "enable_gradient_checkpointing"):
        return
    on = bool(models_cfg.vae_checkpointing) if "vae" in key else (
        bool(models_cfg.unet_checkpointing) if "unet" in key else False)
    if on:
        module.enable_gradient_checkpointing()
    elif getattr(module, "is_gradient_checkpointing", False):
        module.disable_gradient_checkpointing()


@dataclass
class Lever:
    name: str
    override: str
    exact: bool
    phases: tuple[str, ...]
    apply: Callable[[Any], Any]


def _set(path: str, value: Any) -> Callable[[Any], Any]:
    """A function returning a copy of the run config with ``path`` (dotted) set to ``value``."""

    def apply(cfg: Any) -> Any:
        cfg = copy.deepcopy(cfg)
        obj = cfg
        parts = path.split(".")
        for p in parts[:-1]:
            obj = getattr(obj, p)
        setattr(obj, parts[-1], value)
        return cfg

    return apply


def _lower(path: str, value: int) -> Callable[[Any], Any]:
    """Like :func:`_set`, but only when the current value is unset (None = all) or larger than ``value``."""

    def apply(cfg: Any) -> Any:
        obj = cfg
        for p in path.split(".")[:-1]:
            obj = getattr(obj, p)
        cur = getattr(obj, path.split(".")[-1])
        return _set(path, value)(cfg) if cur is None or cur > value else cfg

    return apply


def _ti_batch(value: int) -> Callable[[Any], Any]:
    def apply(cfg: Any) -> Any:
        path = "phase.textual_inversion.batch_size" if cfg.phase.kind.value == "all" else "phase.batch_size"
        if cfg.phase.kind.value not in ("all", "textual_inversion"):
            return cfg
        return _lower(path, value)(cfg)

    return apply


def levers() -> list[Lever]:
    """All levers in the planner's order (module docstring)."""
    out = [Lever("VAE gradient checkpointing", "models.vae_checkpointing=true", True,
                 ("static", "dynamic", "refine"), _set("models.vae_checkpointing", True)),
           Lever("UNet gradient checkpointing", "models.unet_checkpointing=true", True,
                 ("textual_inversion",), _set("models.unet_checkpointing", True))]
    for k in (8, 4, 2, 1):
        out.append(Lever(f"render checkpointed per {k} frames", f"render.checkpoint_frames={k}", True,
                         ("dynamic", "refine"), _lower("render.checkpoint_frames", k)))
    for k in (8, 4, 2, 1):
        def both(cfg: Any, k: int = k) -> Any:
            return _lower("guidance.image_video.vae_grad_frames", k)(_lower("guidance.video.vae_grad_frames", k)(cfg))

        out.append(Lever(f"VAE-encoder gradients for {k} frames", f"guidance.video.vae_grad_frames={k} "
                         f"guidance.image_video.vae_grad_frames={k}", False, ("dynamic", "refine"), both))
    for s in (768, 512):
        out.append(Lever(f"ControlNet-Tile at {s}²", f"guidance.controlnet.size={s}", False, ("refine",),
                         _lower("guidance.controlnet.size", s)))
    for b in (8, 4):
        out.append(Lever(f"textual-inversion batch {b}", f"phase.textual_inversion.batch_size={b}", False,
                         ("textual_inversion",), _ti_batch(b)))
    return out


def fits(needs_gb: float, budget_gb: float, margin: float) -> bool:
    return needs_gb * (1.0 + margin) <= budget_gb


def plan(cfg: Any, budget_gb: float, gpu: str = "h100") -> tuple[Any, dict[str, Any]]:
    """Turn levers on in order until every phase of ``cfg`` fits ``budget_gb``.

    Only the phases a lever acts on are estimated again. Returns (the config with the levers set, a report: levers
    used with their estimated H100 time cost at 40 % and whether they change results, the estimates before and
    after, and whether everything fits).
    """
    from animate124.estimate.core import MARGIN, combine, estimate_phases, phase_names

    names = phase_names(cfg)
    current = estimate_phases(cfg, names, gpu)
    before = combine(dict(current))
    used = []
    for lever in levers():
        bad = [p for p, e in current.items() if not fits(e["needs_gb"], budget_gb, MARGIN)]
        if not bad:
            break
        if not any(p in lever.phases for p in bad) or _is_noop(cfg, lever):
            continue
        new_cfg = lever.apply(cfg)
        touched = [p for p in names if p in lever.phases]
        new = {**current, **estimate_phases(new_cfg, touched, gpu)}
        cost = sum(_total_40(new[p]) - _total_40(current[p]) for p in touched)
        used.append({"lever": lever.name, "override": lever.override, "exact": lever.exact,
                     "time_cost_s_h100_40": cost, "needs_gb_after": {p: e["needs_gb"] for p, e in new.items()}})
        log.warning("gpu_memory_gb=%g: %s (%s; %s, %+.0f s estimated on an H100 at 40 %%)", budget_gb, lever.name,
                    lever.override, "exact" if lever.exact else "CHANGES RESULTS", cost)
        cfg, current = new_cfg, new
    ok = all(fits(e["needs_gb"], budget_gb, MARGIN) for e in current.values())
    if not ok:
        log.warning("gpu_memory_gb=%g: no lever combination fits every phase (estimate %s GB)", budget_gb,
                    {p: round(e["needs_gb"], 1) for p, e in current.items()})
    return cfg, {"gpu_memory_gb": budget_gb, "fits": ok, "levers": used, "before": before, "after": combine(current)}


def _is_noop(cfg: Any, lever: Lever) -> bool:
    """True when the lever would not change the config (already on, or a smaller setting is already in place)."""
    return dataclasses.asdict(lever.apply(cfg)) == dataclasses.asdict(cfg)


def _total_40(phase_est: dict[str, Any]) -> float:
    return float(phase_est["time"]["h100"]["40%"]["total_s"])
