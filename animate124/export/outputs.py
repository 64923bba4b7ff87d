"""What a trained run is exported as: ``export(cfg)`` renders it along camera paths × time schedules to video /
PNG frames (+ depth, alpha, contact sheet), extracts meshes (PLY + animated GLB) or writes the web viewer.

The library side of ``python -m animate124.export`` (export/__main__.py: the CLI and its examples); ``phases/all.py``
(final video, GLB, viewer) and ``rerender`` (``build_paths``, ``make_renderer``, ``background_color``) call it too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from animate124.config.export import ExportConfig
from animate124.errors import InputError
from animate124.export.frames import ImageRenderer, render_path
from animate124.export.scene import Scene, load_scene, resolve_device
from animate124.export.writers import depth_to_gray, output_kind, sibling, tile, write_frames, write_png
from animate124.io.run_dir import write_json_atomic
from animate124.render.cameras import Cameras
from animate124.render.paths import (
    CameraPath,
    dnerf_path,
    fixed_paths,
    is_dnerf_spec,
    keyframe_path,
    orbit_path,
    read_path_file,
    spiral_path,
    time_schedule,
    turntable_path,
)

log = logging.getLogger(__name__)

BUILTIN_PATHS = ("orbit", "fixed", "turntable", "spiral")
FORMATS = ("video", "mesh", "viewer")


def image_size(cfg: ExportConfig) -> tuple[int, int]:
    """(H, W) from size / height / width."""
    h, w = cfg.height or cfg.size, cfg.width or cfg.size
    if h < 1 or w < 1:
        raise InputError(f"image size must be positive (got {h}x{w}); pass size=N or height=/width=")
    return int(h), int(w)


def build_paths(cfg: ExportConfig) -> list[tuple[str, CameraPath]]:
    """The (name, path) pairs of ``cfg.path`` (several only for ``fixed`` with several views)."""
    size, n, cam = image_size(cfg), cfg.frames, cfg.camera
    loop = str(getattr(cfg.time.loop, "value", cfg.time.loop))
    times = time_schedule(n, cfg.time.start, cfg.time.end, loop, cfg.time.speed)
    orbit_kw = dict(elevation=cam.elevation, radius=cam.radius, turns=cam.turns, start_azimuth=cam.start_azimuth,
                    fovy_deg=cam.fovy, size=size)
    if cfg.path == "orbit":
        return [("orbit", orbit_path(n, times, **orbit_kw))]
    if cfg.path == "turntable":
        return [("turntable", turntable_path(n, time=cfg.time.start, **orbit_kw))]
    if cfg.path == "spiral":
        return [("spiral", spiral_path(n, times, cam.spiral_elevation, cam.radius, cam.turns, cam.start_azimuth,
                                       cam.fovy, size))]
    if cfg.path == "fixed":
        paths = fixed_paths(n, times, cam.views, cam.radius, cam.fovy, size)
        return [("fixed" if len(paths) == 1 else f"view{k}", p) for k, p in enumerate(paths)]
    file = Path(cfg.path)
    if file.suffix.lower() != ".json":
        raise InputError(f"path={cfg.path} is not one of {', '.join(BUILTIN_PATHS)} or a .json camera-path file")
    spec = read_path_file(file)
    if is_dnerf_spec(spec):
        return [(file.stem, dnerf_path(spec, size, source=str(file)))]
    return [(file.stem, keyframe_path(spec, n, times, size, source=str(file)))]


def dataset_size(config: dict) -> tuple[int, int] | None:
    """(H, W) of the run's D-NeRF dataset images (``data.path`` of the stored config, after ``data.downscale``)."""
    data = config.get("data") or {}
    root = data.get("path")
    if not root:
        return None
    from PIL import Image

    for split in ("train", "test", "val"):
        f = Path(root) / f"transforms_{split}.json"
        if not f.is_file():
            continue
        spec = read_path_file(f)
        if "h" in spec and "w" in spec:
            h, w = int(spec["h"]), int(spec["w"])
        else:
            frames = spec.get("frames") or []
            if not frames:
                continue
            img = Path(root) / frames[0].get("file_path", "")
            img = img if img.suffix else img.with_suffix(".png")
            if not img.is_file():
                continue
            with Image.open(img) as im:
                w, h = im.size
        ds = max(1, int(data.get("downscale", 1) or 1))
        return h // ds, w // ds
    return None


def make_renderer(cfg: ExportConfig, scene: Scene, device: torch.device) -> ImageRenderer:
    """The scene's VolumeRenderer, or an InstancesRenderer when ``cfg.instances`` is set."""
    if not cfg.instances:
        return scene.renderer(cfg.chunk_rays)
    from animate124.render.instances import Instance, InstancesRenderer

    cache: dict[tuple[str, str | None], Scene] = {(str(cfg.run_dir), cfg.phase): scene}
    instances = []
    for spec in cfg.instances:
        key = (str(spec.run_dir or cfg.run_dir), spec.phase if spec.run_dir else (spec.phase or cfg.phase))
        if key not in cache:
            cache[key] = load_scene(key[0], key[1], device)
        inst_scene = cache[key]
        instances.append(Instance.from_config(inst_scene.field, inst_scene.occupancy, spec))
    render_cfg = scene.renderer(cfg.chunk_rays).cfg
    return InstancesRenderer(instances, render_cfg).to(device)


def background_color(cfg: ExportConfig) -> torch.Tensor:
    """``cfg.background`` as a [3] tensor (one-line error unless it is [r, g, b])."""
    if len(cfg.background) != 3:
        raise InputError(f"background must be [r, g, b] in [0, 1] (got {list(cfg.background)})")
    return torch.tensor([float(c) for c in cfg.background])


def export_cameras_file(cfg: ExportConfig, scene: Scene, renderer: ImageRenderer) -> list[Path]:
    """``cameras=FILE.json``: every frame of a D-NeRF camera file → ``out``/000.png, ... on white, in file order."""
    assert cfg.cameras is not None
    file = Path(cfg.cameras)
    spec = read_path_file(file)
    if not is_dnerf_spec(spec):
        raise InputError(f"cameras={file} is not a D-NeRF camera file (no 'frames'); use path={file} for keyframes")
    size = None if ("h" in spec and "w" in spec) else (dataset_size(scene.config) or image_size(cfg))
    path = dnerf_path(spec, size, source=str(file))
    out = Path(cfg.out) if cfg.out else Path(str(cfg.run_dir)) / "renders" / file.stem
    if output_kind(out) != "dir":
        raise InputError(f"cameras= writes PNG frames; give a folder as out= (got {out})")
    frames = render_path(renderer, path, torch.ones(3), cfg.shading, cfg.ambient, progress=cfg.progress,
                         desc=file.name)
    written = [write_frames(out, frames.rgb)]
    written += _extras(cfg, out, frames)
    return written


def _extras(cfg: ExportConfig, out: Path, frames) -> list[Path]:
    written = []
    if cfg.depth:
        written.append(write_frames(sibling(out, "depth"), depth_to_gray(frames.depth, frames.alpha), cfg.fps,
                                    cfg.quality))
    if cfg.alpha:
        written.append(write_frames(sibling(out, "alpha"), frames.alpha, cfg.fps, cfg.quality))
    return written


def contact_sheet(cfg: ExportConfig, renderer: ImageRenderer, background: torch.Tensor) -> torch.Tensor:
    """[rows·H, cols·W, 3] sheet: rows = sheet_views azimuths k·360°/views, cols = sheet_times τ over [start, end]."""
    rows, cols = max(1, cfg.sheet_views), max(1, cfg.sheet_times)
    h, w = image_size(cfg)
    az = torch.arange(rows, dtype=torch.float32).repeat_interleave(cols) * 360.0 / rows + cfg.camera.start_azimuth
    cams = Cameras.from_spherical(torch.full((rows * cols,), cfg.camera.elevation), az, cfg.camera.radius, (h, w),
                                  cfg.camera.fovy)
    times = torch.linspace(cfg.time.start, cfg.time.end, cols).repeat(rows)
    frames = render_path(renderer, CameraPath(cams, times), background, cfg.shading, cfg.ambient,
                         progress=cfg.progress, desc="contact sheet")
    return tile(frames.rgb, rows, cols)


def _times(cfg: ExportConfig, n: int) -> list[float]:
    loop = str(getattr(cfg.time.loop, "value", cfg.time.loop))
    return [float(t) for t in time_schedule(n, cfg.time.start, cfg.time.end, loop, cfg.time.speed)]


def export_mesh(cfg: ExportConfig, scene: Scene) -> list[Path]:
    """``format=mesh``: ``out`` (default <run_dir>/mesh)/mesh_seq/frame_NNN.ply, animated.glb, mesh_report.json."""
    from animate124.export import gltf
    from animate124.export.mesh import extract_mesh, mesh_volume, track_mesh, voxel_size, write_ply
    from animate124.export.texture import bake_texture

    m = cfg.mesh
    mode = str(getattr(m.mode, "value", m.mode))
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "mesh"
    bound = float(m.bound or scene.occupancy.bound)
    times = _times(cfg, cfg.frames) if getattr(scene.field, "is_dynamic", True) else [float(cfg.time.start)]
    kw = dict(resolution=m.resolution, bound=bound, threshold=m.threshold,
              occupancy=scene.occupancy if m.use_occupancy else None, min_fraction=m.min_component_fraction,
              chunk=m.chunk)
    frames = [extract_mesh(scene.field, t, **kw) for t in (times if mode == "flipbook" else times[:1])]
    for mesh in frames:
        if len(mesh.faces) == 0:
            raise InputError(f"no surface at τ={mesh.time:.3f}: the density never reaches mesh.threshold={m.threshold} "
                             "inside the box; lower mesh.threshold (or set mesh.use_occupancy=false)")
    written: list[Path] = []
    report: dict = {"mode": mode, "resolution": m.resolution, "bound": bound, "threshold": m.threshold,
                    "voxel": voxel_size(m.resolution, bound), "up_axis": "+y (glTF; world +z rotated)", "frames": []}
    if m.ply:
        written += [write_ply(mesh, out / "mesh_seq" / f"frame_{k:03d}.ply") for k, mesh in enumerate(frames)]
    if mode == "flipbook":
        report["frames"] = [{"time": f.time, "vertices": len(f.vertices), "faces": len(f.faces),
                             "volume": mesh_volume(f)} for f in frames]
        if m.glb:
            glb_frames = [bake_texture(scene.field, f, m.texture_size) for f in frames] if m.texture else frames
            written.append(gltf.write_flipbook_glb(glb_frames, out / "animated.glb", cfg.fps))
    else:
        track = track_mesh(scene.field, frames[0], times, m.threshold, report["voxel"], m.track_iters, m.track_smooth)
        report["frames"] = [{"time": t, "mean_distance": d, "mean_distance_voxels": d / report["voxel"]}
                            for t, d in zip(track.times, track.mean_distance)]
        report["vertices"], report["faces"] = len(frames[0].vertices), len(frames[0].faces)
        for t, d in zip(track.times, track.mean_distance):
            log.info("tracked mesh τ=%.3f: mean distance to the iso-surface %.4g (%.2f voxels)", t, d,
                     d / report["voxel"])
        if m.glb:
            textured = bake_texture(scene.field, frames[0], m.texture_size) if m.texture else None
            written.append(gltf.write_morph_glb(track, out / "animated.glb", cfg.fps, textured))
    write_json_atomic(out / "mesh_report.json", report)
    return written + [out / "mesh_report.json"]


def export(cfg: ExportConfig, scene: Scene | None = None) -> list[Path]:
    """Run an export; returns the written files/folders.

    Args:
        cfg: the export config.
        scene: an already loaded scene (default: ``load_scene(cfg.run_dir, cfg.phase)``).
    """
    if not cfg.run_dir:
        raise InputError("run_dir is required; pass run_dir=<folder of a training run>")
    if cfg.frames < 1 or cfg.fps <= 0:
        raise InputError(f"frames must be >= 1 and fps > 0 (got frames={cfg.frames}, fps={cfg.fps})")
    if cfg.format not in FORMATS:
        raise InputError(f"format={cfg.format} is not one of {', '.join(FORMATS)}")
    device = resolve_device(cfg.device)
    scene = scene if scene is not None else load_scene(cfg.run_dir, cfg.phase, device)
    if cfg.format == "mesh":
        return export_mesh(cfg, scene)
    renderer = make_renderer(cfg, scene, device)
    if cfg.format == "viewer":
        from animate124.export.viewer import write_viewer

        out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "viewer"
        return write_viewer(cfg, scene, renderer, out)
    if cfg.cameras:
        return export_cameras_file(cfg, scene, renderer)
    background = background_color(cfg)
    paths = build_paths(cfg)
    name = paths[0][0] if len(paths) == 1 else cfg.path
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "videos" / f"{name}.mp4"
    output_kind(out)  # validate the suffix before rendering
    written: list[Path] = []
    for tag, path in paths:
        target = out if len(paths) == 1 else sibling(out, tag)
        frames = render_path(renderer, path, background, cfg.shading, cfg.ambient, progress=cfg.progress, desc=tag)
        written.append(write_frames(target, frames.rgb, cfg.fps, cfg.quality))
        written += _extras(cfg, target, frames)
    if cfg.contact_sheet:
        written.append(write_png(sibling(out, "sheet", ".png"), contact_sheet(cfg, renderer, background)))
    return written

