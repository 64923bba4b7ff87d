"""Render the frames of camera paths with any renderer that has VolumeRenderer's ``render_image``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from animate124.render.cameras import Cameras
from animate124.render.paths import CameraPath
from animate124.types import RenderOutput, RenderRequest


class ImageRenderer(Protocol):
    """What export needs: ``render.volume.VolumeRenderer`` and ``render.instances.InstancesRenderer`` both fit."""

    def render_image(self, cameras: Cameras, times: Tensor | None = None,
                     request: RenderRequest | None = None) -> RenderOutput: ...


@dataclass
class Frames:
    """Rendered frames on the CPU, channels last."""

    rgb: Tensor
    """[N, H, W, 3] in [0, 1], composited on the background."""
    alpha: Tensor
    """[N, H, W, 1] accumulated opacity."""
    depth: Tensor
    """[N, H, W, 1] expected distance Σ w·t (not divided by alpha)."""


def render_path(
    renderer: ImageRenderer,
    path: CameraPath,
    background: Tensor | None = None,
    shading: str = "albedo",
    ambient: float = 1.0,
    frames_per_call: int | None = None,
    progress: bool = True,
    desc: str = "render",
) -> Frames:
    """Render every frame of ``path`` (no grad), a few frames per call, with a progress bar over frames.

    Args:
        renderer: see :class:`ImageRenderer` (it chunks rays itself by ``cfg.chunk_rays``).
        path: N cameras and times.
        background: [3] colour (default white).
        shading: shading mode.
        ambient: ambient ratio.
        frames_per_call: frames per ``render_image`` call (default: as many as fit in one ray chunk, ≥ 1).
        progress: show a tqdm bar.
        desc: bar label.

    Returns:
        The frames.
    """
    cams, times = path.cameras, path.times
    n, hw = len(cams), cams.height * cams.width
    if frames_per_call is None:
        chunk = int(getattr(getattr(renderer, "cfg", None), "chunk_rays", 8192))
        frames_per_call = max(1, chunk // hw)
    rgb, alpha, depth = [], [], []
    with torch.no_grad(), tqdm(total=n, desc=desc, unit="frame", disable=not progress, leave=False) as bar:
        for s in range(0, n, frames_per_call):
            idx = torch.arange(s, min(n, s + frames_per_call))
            out = renderer.render_image(cams[idx], times[idx], RenderRequest(background, shading, ambient))
            rgb.append(out.rgb.reshape(-1, cams.height, cams.width, 3).cpu())
            alpha.append(out.opacity.reshape(-1, cams.height, cams.width, 1).cpu())
            depth.append(out.depth.reshape(-1, cams.height, cams.width, 1).cpu())
            bar.update(len(idx))
    return Frames(torch.cat(rgb), torch.cat(alpha), torch.cat(depth))
