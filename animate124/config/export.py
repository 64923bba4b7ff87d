"""Typed configs of ``python -m animate124.export`` (configs/export.yaml) and ``python -m animate124.metrics``
(configs/metrics.yaml): separate primary configs, each YAML starts ``defaults: [base_<name>, ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from enum import Enum
from typing import List, Optional

from animate124.config.schema import ModelsConfig


class TimeLoop(str, Enum):
    forward = "forward"
    """Each pass over [start, end] plays start → end (speed > 1 restarts from start)."""
    pingpong = "pingpong"
    """Passes alternate start → end → start."""


class InstanceTimeWrap(str, Enum):
    loop = "loop"
    """τ' = (offset + speed·τ) mod 1 (motion repeats; τ' = 1 stays 1 at the end of a pass)."""
    pingpong = "pingpong"
    """τ' bounces between 0 and 1."""
    clamp = "clamp"
    """τ' clamped to [0, 1] (holds the first / last pose)."""


@dataclass
class TimeConfig:
    """Scene-time schedule of the exported frames (render/paths.py::time_schedule)."""

    start: float = 0.0
    """τ of the first frame (also the frozen τ of ``path=turntable``)."""
    end: float = 1.0
    """τ at the end of a pass (end < start plays backwards)."""
    loop: TimeLoop = TimeLoop.forward
    """forward | pingpong."""
    speed: float = 1.0
    """Passes over [start, end] during the video."""


@dataclass
class CameraPathConfig:
    """Options of the built-in camera paths (angles in degrees)."""

    elevation: float = 0.0
    """Elevation of orbit / turntable."""
    radius: float = 1.8
    """Camera distance (the reference view's)."""
    fovy: float = 40.0
    """Vertical field of view."""
    turns: float = 1.0
    """Azimuth turns over the video (orbit, turntable, spiral)."""
    start_azimuth: float = 0.0
    """Azimuth of the first frame (0 = the reference view)."""
    views: List[List[float]] = _field(default_factory=lambda: [[0.0, 0.0]])
    """``path=fixed``: one [elevation, azimuth] or [elevation, azimuth, radius] per view."""
    spiral_elevation: List[float] = _field(default_factory=lambda: [-15.0, 45.0])
    """``path=spiral``: elevation range [low, high]."""


@dataclass
class InstanceConfig:
    """One object instance of a composed scene (render/instances.py); world = scale·R·local + translation."""

    run_dir: Optional[str] = None
    """Run directory of the object (None: the export's ``run_dir``)."""
    phase: Optional[str] = None
    """Phase checkpoint to use (None: the latest finished)."""
    rotation: List[float] = _field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Euler angles (degrees) about x, then y, then z (extrinsic), R = Rz·Ry·Rx."""
    translation: List[float] = _field(default_factory=lambda: [0.0, 0.0, 0.0])
    """World position of the instance's origin."""
    scale: float = 1.0
    """Uniform scale (> 0)."""
    time_offset: float = 0.0
    """Added to the instance's τ (0.5 = half a cycle later)."""
    time_speed: float = 1.0
    """Multiplies the scene τ before the offset."""
    time_wrap: InstanceTimeWrap = InstanceTimeWrap.loop
    """How τ' outside [0, 1] is brought back: loop | pingpong | clamp."""


@dataclass
class ExportConfig:
    """Root config of ``python -m animate124.export`` (configs/export.yaml)."""

    run_dir: Optional[str] = None
    """Run directory holding the phase checkpoints (required)."""
    phase: Optional[str] = None
    """Checkpoint phase (None: the latest finished of refine > dynamic > static > fit)."""
    path: str = "orbit"
    """orbit | fixed | turntable | spiral | FILE.json (keyframes, or a D-NeRF transforms file)."""
    cameras: Optional[str] = None
    """A D-NeRF-style camera file: render every frame in file order to ``out``/000.png, ... (white background)."""
    out: Optional[str] = None
    """FILE.mp4 | FILE.gif | DIR (PNG frames); default <run_dir>/videos/<path>.mp4 (cameras=: <run_dir>/renders/<stem>)
    (the folder's frames are 000.png, 001.png, ...)."""
    frames: int = 60
    """Frames per video (per view for path=fixed). Ignored by D-NeRF camera files (one frame per camera)."""
    fps: float = 24.0
    """Frames per second of mp4 / gif."""
    size: int = 256
    """Image size H = W (overridden by height / width)."""
    height: Optional[int] = None
    """Image height (default size)."""
    width: Optional[int] = None
    """Image width (default size)."""
    time: TimeConfig = _field(default_factory=TimeConfig)
    camera: CameraPathConfig = _field(default_factory=CameraPathConfig)
    background: List[float] = _field(default_factory=lambda: [1.0, 1.0, 1.0])
    """RGB background in [0, 1]."""
    shading: str = "albedo"
    """albedo | lambertian | textureless | normal."""
    ambient: float = 1.0
    """Ambient ratio of lambertian / textureless shading."""
    depth: bool = False
    """Also write a depth video (<out>_depth.*; near = bright, normalised over the whole video)."""
    alpha: bool = False
    """Also write an alpha (opacity) video (<out>_alpha.*)."""
    contact_sheet: bool = True
    """Also write <out>_sheet.png: sheet_views azimuths (rows) × sheet_times times (columns)."""
    sheet_views: int = 4
    """Rows of the contact sheet (azimuths evenly over 360°, at camera.elevation)."""
    sheet_times: int = 5
    """Columns of the contact sheet (τ evenly over [time.start, time.end])."""
    quality: int = 8
    """mp4 quality 0–10 (imageio-ffmpeg)."""
    instances: List[InstanceConfig] = _field(default_factory=list)
    """Compose several objects at render time (empty: the run's object alone, untransformed)."""
    chunk_rays: Optional[int] = None
    """Rays per render chunk (None: the run's render.chunk_rays)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    progress: bool = True
    """Show a progress bar."""
    debug: bool = False
    """Show full tracebacks on errors."""


@dataclass
class LpipsConfig:
    """LPIPS between consecutive frames (metrics/lpips.py). Without both weight files the metric is null."""

    net: str = "vgg"
    """vgg | alex."""
    trunk_weights: Optional[str] = "${oc.env:ANIMATE124_LPIPS_TRUNK,null}"
    """torchvision ImageNet state dict of the trunk (vgg16-397923af.pth / alexnet-owt-7be5be79.pth, or .safetensors)."""
    head_weights: Optional[str] = "${oc.env:ANIMATE124_LPIPS_HEADS,null}"
    """lpips v0.1 linear heads (lpips/weights/v0.1/vgg.pth or alex.pth, keys lin{k}.model.1.weight)."""


@dataclass
class MetricsConfig:
    """Root config of ``python -m animate124.metrics`` (configs/metrics.yaml); protocol in docs/metrics.md."""

    run_dir: Optional[str] = None
    """Run directory to evaluate (required)."""
    phase: Optional[str] = None
    """Checkpoint phase (None: the latest finished)."""
    models: ModelsConfig = _field(default_factory=ModelsConfig)
    """pretrained | tiny (tiny random CLIP, offline tests) — the ``models`` group."""
    clip_model: str = "openai/clip-vit-large-patch14"
    """CLIP hub id or local directory (stated in metrics.json)."""
    views: int = 10
    """Fixed views: azimuth k·360°/views, k = 0..views−1 (view 0 is the reference view)."""
    elevation: float = 0.0
    """Elevation of the views (degrees)."""
    radius: float = 1.8
    """Camera distance."""
    fovy: float = 40.0
    """Vertical field of view (degrees)."""
    frames: int = 32
    """Frames per view, τ_i = i/(frames−1)."""
    resolution: int = 256
    """Render size (square)."""
    caption: Optional[str] = None
    """Caption for CLIP-T (default: the run's prompt, else the case caption)."""
    captions_file: Optional[str] = None
    """benchmark.json with all captions for R-precision (default: <case.root>/benchmark.json of the run)."""
    reference_image: Optional[str] = None
    """Reference image for CLIP-I (default: the run's input image, else its case's rgba.png); RGBA on white."""
    lpips: LpipsConfig = _field(default_factory=LpipsConfig)
    batch_size: int = 16
    """Images per CLIP / LPIPS batch."""
    out: Optional[str] = None
    """Output JSON (default <run_dir>/metrics.json)."""
    save_renders: bool = False
    """Also save the evaluated frames as <run_dir>/metrics_renders/view{k}.mp4."""
    chunk_rays: Optional[int] = None
    """Rays per render chunk (None: the run's render.chunk_rays)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    progress: bool = True
    """Show a progress bar while rendering."""
    debug: bool = False
    """Show full tracebacks on errors."""
