"""``rerender(cfg)``: coarse render along the export's camera path → keyframes → in-betweens → videos + frames."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from animate124.config.rerender import RerenderConfig
from animate124.config.schema import CaseConfig
from animate124.errors import ConfigError, InputError
from animate124.export.frames import Frames, render_path
from animate124.export.outputs import background_color, build_paths, make_renderer
from animate124.export.scene import Scene, load_scene, resolve_device
from animate124.export.writers import write_frames
from animate124.io.run_dir import write_json_atomic
from animate124.rerender.depth import inverse_depth
from animate124.rerender.keyframes import (
    is_input_camera,
    keyframe_indices,
    known_mask,
    load_keyframe_models,
    run_keyframes,
)

log = logging.getLogger(__name__)


def validate(cfg: RerenderConfig) -> None:
    """One-line errors for settings that cannot work."""
    if not cfg.run_dir:
        raise InputError("run_dir is required; pass run_dir=<folder of a training run>")
    if cfg.cameras:
        raise ConfigError("rerender takes a camera path (path=...), not cameras=; use path=FILE.json for a D-NeRF file")
    if cfg.frames < 2 or cfg.fps <= 0:
        raise ConfigError(f"rerender needs frames >= 2 and fps > 0 (got frames={cfg.frames}, fps={cfg.fps})")
    h, w = cfg.height or cfg.size, cfg.width or cfg.size
    if h % 8 or w % 8 or h < 8 or w < 8:
        raise ConfigError(f"the render size {h}x{w} must be a positive multiple of 8 (the VAEs' factor); pass size=N·8")
    for name, s in (("keyframes.strength", cfg.keyframes.strength), ("inbetween.strength", cfg.inbetween.strength)):
        if not 0.0 < s <= 1.0:
            raise ConfigError(f"{name}={s} must be in (0, 1]")
    if cfg.keyframes.every < 1:
        raise ConfigError(f"keyframes.every={cfg.keyframes.every} must be >= 1")


def find_embeds(cfg: RerenderConfig, scene: Scene) -> Optional[Path]:
    """The run's token file: keyframes.learned_embeds → <run_dir>/textual_inversion/... → the run's case file."""
    from animate124.data.case import load_case
    from animate124.phases.textual_inversion import find_learned_embeds

    case_cfg = (scene.config or {}).get("case") or {}
    case = None
    if case_cfg.get("name"):
        try:
            case = load_case(CaseConfig(name=case_cfg["name"], root=str(case_cfg.get("root", "benchmark"))))
        except InputError as exc:
            log.warning("rerender: the run's case is not readable (%s); no case token", exc)
    return find_learned_embeds(cfg.keyframes.learned_embeds, str(cfg.run_dir), case)


def resolve_prompt(cfg: RerenderConfig, scene: Scene, token: Optional[str]) -> str:
    """keyframes.prompt, else the run's prompt with its subject replaced by the token."""
    from animate124.data.case import find_subject, replace_subject

    if cfg.keyframes.prompt:
        if token and token not in cfg.keyframes.prompt:
            log.warning("rerender: prompt %r does not contain the learned token %r", cfg.keyframes.prompt, token)
        return cfg.keyframes.prompt
    caption = scene.inputs.get("prompt")
    if not caption:
        raise InputError(f"{cfg.run_dir} has no prompt in inputs.json; pass keyframes.prompt='a photo of <token> ...'")
    return replace_subject(caption, find_subject(caption), token) if token else str(caption)


def coarse_frames(cfg: RerenderConfig, scene: Scene, device: torch.device) -> tuple[Any, Frames]:
    """(camera path, frames) of the export's render path, unchanged."""
    paths = build_paths(cfg)
    if len(paths) != 1:
        raise ConfigError(f"rerender renders one camera path; path={cfg.path} gives {len(paths)} (give one view)")
    path = paths[0][1]
    renderer = make_renderer(cfg, scene, device)
    return path, render_path(renderer, path, background_color(cfg), cfg.shading, cfg.ambient, progress=cfg.progress,
                             desc="coarse")


def known_region(cfg: RerenderConfig, scene: Scene, path: Any, frames: Frames) -> tuple[Optional[tuple], str]:
    """(reference image, latent mask) for keyframe 0, or None with the reason."""
    if not cfg.keyframes.known_region:
        return None, "off"
    cams = path.cameras
    if not is_input_camera(cams, 0):
        return None, "first camera is not the input camera"
    image = scene.inputs.get("image")
    if not image or not Path(image).is_file():
        return None, "the run has no input image"
    if cams.height != cams.width:
        return None, "non-square frames"
    from animate124.data.reference import load_reference

    ref = load_reference(image).at(cams.height)
    mask = known_mask(frames.alpha[0].permute(2, 0, 1), ref.alpha, (cams.height // 8, cams.width // 8))
    return (ref.rgb, mask), f"on ({float(mask.mean()):.2f} of the latent cells)"


def _chw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


def _hwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


def write_outputs(out: Path, cfg: RerenderConfig, coarse: Tensor, keyframes: Tensor, final: Tensor) -> list[Path]:
    """rerender/{coarse,keyframes,final,side_by_side}.mp4 and the PNG frames of each under frames/."""
    vids = {"coarse": coarse, "keyframes": keyframes, "final": final,
            "side_by_side": torch.cat([coarse, final], dim=2)}
    written = []
    for name, x in vids.items():
        written.append(write_frames(out / f"{name}.mp4", x, cfg.fps if name != "keyframes" else 2.0, cfg.quality))
        if name != "side_by_side":
            written.append(write_frames(out / "frames" / name, x))
    return written


def rerender(cfg: RerenderConfig, scene: Optional[Scene] = None) -> list[Path]:
    """Run the whole stage; returns the written files and folders (docs/rerender.md)."""
    from animate124.rerender.inbetweens import KeyedSVD, run_inbetweens

    validate(cfg)
    device = resolve_device(cfg.device)
    scene = scene if scene is not None else load_scene(cfg.run_dir, cfg.phase, device)
    out = Path(cfg.out) if cfg.out else Path(str(cfg.run_dir)) / "rerender"
    path, frames = coarse_frames(cfg, scene, device)
    n = len(path)
    keys = keyframe_indices(n, cfg.keyframes.every)
    coarse = _chw(frames.rgb)
    depth = inverse_depth(frames.depth, frames.alpha)[keys]
    gen = torch.Generator().manual_seed(cfg.seed)
    embeds = find_embeds(cfg, scene)
    models = load_keyframe_models(cfg.keyframes, cfg.models, device, embeds)
    prompt = resolve_prompt(cfg, scene, models.token)
    known, known_note = known_region(cfg, scene, path, frames)
    log.info("rerender: %d frames, keyframes %s, prompt %r, known region %s", n, keys, prompt, known_note)
    keyframes = run_keyframes(models, cfg.keyframes, prompt, coarse[keys], _chw(depth).expand(-1, 3, -1, -1),
                              gen, known)
    del models
    svd = KeyedSVD(cfg.inbetween, cfg.models, (coarse.shape[2], coarse.shape[3]), device, keyframes[0])
    final = run_inbetweens(svd, cfg.inbetween, coarse, keyframes, keys, gen)
    written = write_outputs(out, cfg, frames.rgb, _hwc(keyframes), _hwc(final))
    report = {"frames": n, "keyframes": keys, "prompt": prompt, "token": embeds and str(embeds),
              "known_region": known_note, "models": str(getattr(cfg.models.kind, "value", cfg.models.kind)),
              "phase": scene.phase, "fallbacks": [] if embeds else ["no learned token: the prompt is used as is"]}
    if not embeds:
        log.warning("rerender: no learned_embeds for %s; the prompt %r has no token", cfg.run_dir, prompt)
    write_json_atomic(out / "report.json", report)
    return written + [out / "report.json"]
