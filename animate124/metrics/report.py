"""Evaluate a run: render the fixed protocol views × frames, compute every metric, write ``metrics.json``.

Keys of metrics.json: ``clip_t``, ``r_precision``, ``clip_i`` (reference view over all frames), ``clip_i_all_views``,
``temporal_consistency``, ``lpips_flicker`` (null when unavailable; ``unavailable`` says why), ``protocol`` (views,
frames, resolution, CLIP model, LPIPS net, ...), and what was evaluated (run_dir, phase, checkpoint, caption).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from animate124.config.export import MetricsConfig
from animate124.errors import InputError
from animate124.export.frames import render_path
from animate124.export.scene import Scene, load_scene, resolve_device
from animate124.export.writers import write_frames
from animate124.io.run_dir import write_json_atomic
from animate124.metrics import clip as C
from animate124.metrics.lpips import load_lpips
from animate124.render.cameras import Cameras
from animate124.render.paths import CameraPath

log = logging.getLogger(__name__)

METRIC_KEYS = ("clip_t", "r_precision", "clip_i", "clip_i_all_views", "temporal_consistency", "lpips_flicker")


def protocol_views(cfg: MetricsConfig) -> list[CameraPath]:
    """One fixed-camera path per view (azimuth k·360°/V), each with τ_i = i/(F−1) (τ = 0 only when F = 1)."""
    times = torch.linspace(0.0, 1.0, cfg.frames) if cfg.frames > 1 else torch.zeros(1)
    out = []
    for k in range(cfg.views):
        az = 360.0 * k / cfg.views
        cams = Cameras.from_spherical(torch.full((cfg.frames,), cfg.elevation), torch.full((cfg.frames,), az),
                                      cfg.radius, cfg.resolution, cfg.fovy)
        out.append(CameraPath(cams, times))
    return out


def load_reference(path: str | Path) -> torch.Tensor:
    """An RGB(A) image as [1, 3, H, W] in [0, 1], RGBA composited on white."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reference image {path} not found; pass reference_image=<file>")
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    rgb, a = rgba[..., :3], rgba[..., 3:]
    img = rgb * a + (1.0 - a)
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def _case_root(scene: Scene) -> str | None:
    case = scene.config.get("case") or {}
    return case.get("root") if isinstance(case, dict) else None


def case_image(scene: Scene) -> str | None:
    """The reference image of the run's benchmark case (``rgba.png`` when present, else ``image.jpg``), if any."""
    from animate124.config.schema import CaseConfig
    from animate124.data.case import load_case

    name, root = scene.inputs.get("case"), _case_root(scene)
    if not name or not root or not (Path(root) / str(name)).is_dir():
        return None
    case = load_case(CaseConfig(name=str(name), root=str(root)))
    return str(case.image) if case is not None else None


def captions_of(cfg: MetricsConfig, scene: Scene) -> tuple[str | None, list[str], str | None]:
    """(caption, all candidate captions for R-precision, name of the captions source)."""
    from animate124.data.case import read_benchmark

    inputs = scene.inputs
    bench: dict[str, str] = {}
    source = cfg.captions_file or (str(Path(_case_root(scene)) / "benchmark.json") if _case_root(scene) else None)
    if source and Path(source).is_file():
        bench = read_benchmark(Path(source).parent)
    elif cfg.captions_file:
        raise InputError(f"captions_file {cfg.captions_file} not found; pass a benchmark.json path")
    caption = cfg.caption or inputs.get("prompt") or bench.get(str(inputs.get("case") or ""))
    candidates = list(dict.fromkeys(bench.values()))
    if caption and candidates and caption not in candidates:
        candidates.append(caption)
    return caption, candidates, source if bench else None


def render_protocol(cfg: MetricsConfig, scene: Scene, device: torch.device) -> torch.Tensor:
    """[V, F, 3, H, W] renders on white of the protocol views."""
    renderer = scene.renderer(cfg.chunk_rays)
    videos = []
    for k, path in enumerate(protocol_views(cfg)):
        frames = render_path(renderer, path, torch.ones(3), progress=cfg.progress, desc=f"view {k}")
        videos.append(frames.rgb.permute(0, 3, 1, 2))
    return torch.stack(videos)


def compute_metrics(
    videos: torch.Tensor,
    clip: C.Clip,
    caption: str | None,
    candidates: list[str],
    reference: torch.Tensor | None,
    lpips: torch.nn.Module | None,
    batch_size: int = 16,
) -> dict[str, float | None]:
    """Every metric from renders (None where an input is missing).

    Args:
        videos: [V, F, 3, H, W] in [0, 1]; view 0 is the reference view.
        clip: the CLIP model.
        caption: the item's caption (None: no CLIP-T / R-precision).
        candidates: all captions for R-precision (must contain ``caption``; < 2 → None).
        reference: [1, 3, H, W] reference image on white (None: no CLIP-I).
        lpips: LPIPS module or None.
        batch_size: LPIPS pairs per batch.
    """
    v, f = videos.shape[:2]
    emb = clip.embed_images(videos.reshape(v * f, *videos.shape[2:])).reshape(v, f, -1)
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    if caption:
        out["clip_t"] = C.clip_t(emb, clip.embed_texts([caption])[0])
        if len(candidates) >= 2:
            out["r_precision"] = C.r_precision(emb, clip.embed_texts(candidates), candidates.index(caption))
    if reference is not None:
        ref = clip.embed_images(reference)[0]
        out["clip_i"] = C.clip_i(emb[0], ref)
        out["clip_i_all_views"] = C.clip_i(emb, ref)
    out["temporal_consistency"] = C.temporal_consistency(emb)
    if lpips is not None and f >= 2:
        dev = next(lpips.parameters()).device
        a, b = videos[:, :-1].reshape(-1, *videos.shape[2:]), videos[:, 1:].reshape(-1, *videos.shape[2:])
        with torch.no_grad():
            d = torch.cat([lpips(a[s: s + batch_size].to(dev), b[s: s + batch_size].to(dev)).cpu()
                           for s in range(0, a.shape[0], batch_size)])
        out["lpips_flicker"] = float(d.mean())
    return out


def _unavailable(out: dict[str, Any], caption: str | None, candidates: list[str], reference: Any,
                 lpips_reason: str | None, frames: int) -> dict[str, str]:
    why: dict[str, str] = {}
    if out["clip_t"] is None:
        why["clip_t"] = "no caption: the run has no prompt/case; pass caption=..."
    if out["r_precision"] is None:
        why["r_precision"] = ("no caption" if not caption else
                              f"{len(candidates)} candidate caption(s): pass captions_file=<benchmark.json>")
    if reference is None:
        why["clip_i"] = why["clip_i_all_views"] = "no reference image: pass reference_image=..."
    if frames < 2:
        why["temporal_consistency"] = why["lpips_flicker"] = "frames < 2"
    elif out["lpips_flicker"] is None:
        why["lpips_flicker"] = lpips_reason or "LPIPS unavailable"
    return why


def evaluate_run(cfg: MetricsConfig, scene: Scene | None = None) -> dict[str, Any]:
    """Render, score and write ``metrics.json``; returns its content.

    Args:
        cfg: metrics config.
        scene: an already loaded scene (default: ``load_scene(cfg.run_dir, cfg.phase)``).
    """
    if not cfg.run_dir:
        raise InputError("run_dir is required; pass run_dir=<folder of a training run>")
    if cfg.views < 1 or cfg.frames < 1 or cfg.resolution < 8:
        raise InputError(f"need views >= 1, frames >= 1, resolution >= 8 (got {cfg.views}, {cfg.frames}, "
                         f"{cfg.resolution})")
    start = time.time()
    device = resolve_device(cfg.device)
    scene = scene if scene is not None else load_scene(cfg.run_dir, cfg.phase, device)
    caption, candidates, captions_source = captions_of(cfg, scene)
    ref_path = cfg.reference_image or scene.inputs.get("image") or case_image(scene)
    reference = load_reference(ref_path) if ref_path else None
    clip = C.load_clip(cfg.clip_model, cfg.models, device, cfg.batch_size)
    lpips, lpips_reason = load_lpips(cfg.lpips.net, cfg.lpips.trunk_weights, cfg.lpips.head_weights, device)
    videos = render_protocol(cfg, scene, device)
    if cfg.save_renders:
        for k in range(videos.shape[0]):
            write_frames(Path(cfg.run_dir) / "metrics_renders" / f"view{k}.mp4", videos[k].permute(0, 2, 3, 1), 8.0)
    out = compute_metrics(videos, clip, caption, candidates, reference, lpips, cfg.batch_size)
    models_kind = getattr(cfg.models.kind, "value", cfg.models.kind)
    result: dict[str, Any] = {
        **out,
        "unavailable": _unavailable(out, caption, candidates, reference, lpips_reason, cfg.frames),
        "protocol": {
            "views": cfg.views, "azimuths_deg": [360.0 * k / cfg.views for k in range(cfg.views)],
            "elevation_deg": cfg.elevation, "radius": cfg.radius, "fovy_deg": cfg.fovy, "frames": cfg.frames,
            "times": "linspace(0, 1, frames)", "resolution": cfg.resolution, "background": "white",
            "clip_model": cfg.clip_model, "models": models_kind, "clip_input": clip.image_size,
            "lpips_net": cfg.lpips.net if lpips is not None else None, "n_captions": len(candidates),
            "captions_file": captions_source, "reference_view": "elevation 0, azimuth 0 (view 0)",
        },
        "caption": caption,
        "reference_image": str(ref_path) if ref_path else None,
        "run_dir": str(cfg.run_dir),
        "phase": scene.phase,
        "checkpoint": str(scene.checkpoint),
        "seconds": round(time.time() - start, 2),
    }
    out_path = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "metrics.json"
    write_json_atomic(out_path, result)
    log.info("wrote %s", out_path)
    return result
