"""``format=viewer``: an offline web player (index.html + viewer.js, no CDN, no framework) of an image atlas.

The folder works from ``file://`` and from any static host:

- ``atlas/t{j}.jpg``: one JPEG per time τ_j, a grid of ``cols`` × ``rows`` tiles of ``size``² pixels; tile k (row-major)
  is azimuth ``start_azimuth + k·360°/views`` at ``camera.elevation`` / ``camera.radius`` / ``camera.fovy``;
- ``viewer_data.js``: the metadata as a script (``window.ANIMATE124_VIEWER = {...}``), not JSON, because Chromium
  blocks ``fetch()`` of local files from a ``file://`` page;
- ``index.html`` + ``viewer.js`` (copied from ``animate124/export/viewer_assets``), ``input.png`` (the run's input
  image, when it has one).

In the page: drag orbits, the slider and the play button run time, ←/→ step time, ↑/↓ step the azimuth, and
``?az=90&t=0.5`` opens the nearest atlas view (azimuth in degrees, τ in [0, 1]) without autoplay, so screenshots are
deterministic. The canvas is drawn 1:1 from the atlas (no scaling at device scale factor 1).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from animate124.errors import InputError
from animate124.export.frames import render_path
from animate124.render.cameras import Cameras
from animate124.render.paths import CameraPath

ASSETS = Path(__file__).with_name("viewer_assets")
"""index.html and viewer.js, shipped as package data."""
DATA_VAR = "ANIMATE124_VIEWER"
INPUT_SIDE = 256
"""The copied input image is shrunk to at most this side."""


def atlas_layout(views: int) -> tuple[int, int]:
    """(cols, rows) of one time's atlas: at most 8 tiles per row."""
    cols = min(views, 8)
    return cols, math.ceil(views / cols)


def view_grid(cfg: Any) -> tuple[list[float], list[float]]:
    """(azimuths in degrees, times τ) of the atlas from an ExportConfig."""
    v, t = cfg.viewer.views, cfg.viewer.times
    if v < 1 or t < 1 or cfg.viewer.size < 8:
        raise InputError(f"viewer.views and viewer.times must be >= 1 and viewer.size >= 8 (got {v}, {t}, "
                         f"{cfg.viewer.size})")
    az = [cfg.camera.start_azimuth + k * 360.0 / v for k in range(v)]
    times = np.linspace(cfg.time.start, cfg.time.end, t).tolist() if t > 1 else [float(cfg.time.start)]
    return az, [float(x) for x in times]


def render_atlas(cfg: Any, renderer: Any, azimuths: list[float], times: list[float]) -> torch.Tensor:
    """[T, V, S, S, 3] renders (albedo shading on cfg.background)."""
    s, v, t = cfg.viewer.size, len(azimuths), len(times)
    az = torch.tensor(azimuths, dtype=torch.float32).repeat(t)
    cams = Cameras.from_spherical(torch.full((v * t,), float(cfg.camera.elevation)), az, cfg.camera.radius, (s, s),
                                  cfg.camera.fovy)
    taus = torch.tensor(times, dtype=torch.float32).repeat_interleave(v)
    bg = torch.tensor([float(c) for c in cfg.background])
    frames = render_path(renderer, CameraPath(cams, taus), bg, cfg.shading, cfg.ambient, progress=cfg.progress,
                         desc="viewer atlas")
    return frames.rgb.reshape(t, v, s, s, 3)


def tile_atlas(views: torch.Tensor, background: list[float]) -> np.ndarray:
    """[V, S, S, 3] → uint8 [rows·S, cols·S, 3] (row-major tiles, unused tiles filled with the background)."""
    v, s = views.shape[0], views.shape[1]
    cols, rows = atlas_layout(v)
    sheet = np.empty((rows * s, cols * s, 3), np.uint8)
    sheet[:] = np.round(np.clip(np.asarray(background, np.float32), 0, 1) * 255).astype(np.uint8)
    img = views.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    for k in range(v):
        r, c = divmod(k, cols)
        sheet[r * s:(r + 1) * s, c * s:(c + 1) * s] = img[k]
    return sheet


def _input_image(inputs: dict[str, Any], out: Path) -> str | None:
    from PIL import Image

    src = inputs.get("image")
    if not src or not Path(src).is_file():
        return None
    with Image.open(src) as im:
        im = im.convert("RGBA")
        im.thumbnail((INPUT_SIDE, INPUT_SIDE))
        im.save(out / "input.png")
    return "input.png"


def write_viewer(cfg: Any, scene: Any, renderer: Any, out: str | Path) -> list[Path]:
    """Render the atlas and write the viewer folder ``out``; returns [index.html, viewer_data.js, atlas images...].

    Raises:
        InputError: the atlas is larger than ``viewer.max_mb`` (the message names the knobs to lower).
    """
    from PIL import Image

    out = Path(out)
    azimuths, times = view_grid(cfg)
    if not getattr(scene.field, "is_dynamic", True):
        times = times[:1]
    atlas = render_atlas(cfg, renderer, azimuths, times)
    (out / "atlas").mkdir(parents=True, exist_ok=True)
    files = []
    for j in range(len(times)):
        path = out / "atlas" / f"t{j:03d}.jpg"
        Image.fromarray(tile_atlas(atlas[j], list(cfg.background))).save(path, quality=int(cfg.viewer.jpeg_quality),
                                                                          subsampling=0)
        files.append(path)
    mb = sum(p.stat().st_size for p in files) / 1e6
    if mb > cfg.viewer.max_mb:
        raise InputError(f"the viewer atlas is {mb:.1f} MB > viewer.max_mb={cfg.viewer.max_mb}; lower viewer.views, "
                         "viewer.times, viewer.size or viewer.jpeg_quality")
    cols, rows = atlas_layout(len(azimuths))
    inputs = scene.inputs or {}
    meta = {"size": cfg.viewer.size, "views": len(azimuths), "times": len(times), "cols": cols, "rows": rows,
            "azimuths": azimuths, "taus": times, "elevation": float(cfg.camera.elevation),
            "atlas": [f"atlas/{p.name}" for p in files], "fps": float(cfg.viewer.fps), "atlas_mb": round(mb, 3),
            "prompt": inputs.get("prompt") or inputs.get("case") or "", "input_image": _input_image(inputs, out),
            "background": [float(c) for c in cfg.background]}
    (out / "viewer_data.js").write_text(f"window.{DATA_VAR} = {json.dumps(meta, indent=1)};\n", encoding="utf-8")
    for name in ("index.html", "viewer.js"):
        shutil.copyfile(ASSETS / name, out / name)
    return [out / "index.html", out / "viewer.js", out / "viewer_data.js", *files]
