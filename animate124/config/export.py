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


class MeshMode(str, Enum):
    flipbook = "flipbook"
    """One mesh per frame (mesh_seq/frame_NNN.ply, and a GLB with one node per frame, scale-animated with STEP)."""
    tracked = "tracked"
    """One mesh extracted at τ = time.start, its vertices moved onto each frame's iso-surface (GLB morph targets)."""


@dataclass
class MeshConfig:
    """``format=mesh`` (export/mesh.py, export/gltf.py): marching cubes of the density per frame."""

    mode: MeshMode = MeshMode.flipbook
    """flipbook | tracked (one topology, one morph target per frame; fails on topology changes, large motions)."""
    resolution: int = 128
    """Grid points per axis of the density sampling (the voxel is 2·bound / (resolution − 1))."""
    bound: Optional[float] = None
    """Sample [−bound, bound]³ (None: the occupancy grid's bound)."""
    threshold: float = 10.0
    """Iso-level of marching cubes, in activated density σ (the occupancy grid's default density_thresh)."""
    use_occupancy: bool = True
    """Zero the density in cells the occupancy grid marks empty at the frame's time slot (what the renderer sees)."""
    min_component_fraction: float = 0.02
    """Remove connected components whose volume is below this fraction of the largest one's (floaters); 0 keeps all."""
    ply: bool = True
    """Write mesh_seq/frame_NNN.ply (flipbook) or mesh_seq/frame_000.ply (tracked, the τ = start mesh)."""
    glb: bool = True
    """Write animated.glb (+y up: the world's +z is rotated to glTF's +y)."""
    texture: bool = False
    """Bake the albedo into a UV texture (xatlas unwrap; mesh.texture_size²) instead of GLB vertex colours."""
    texture_size: int = 512
    """Side of the baked texture (pixels), one per GLB mesh."""
    track_iters: int = 8
    """tracked: Gauss-Newton iterations per frame (point-to-plane projection + smoothness, one sparse solve each)."""
    track_smooth: float = 1.0
    """tracked: weight of the smoothness term (graph Laplacian of the per-frame displacement) against the surface term."""
    chunk: int = 262144
    """Points per field call."""


@dataclass
class ViewerConfig:
    """``format=viewer`` (export/viewer.py): an offline HTML player of an atlas of V azimuths × T times."""

    views: int = 24
    """Azimuths k·360°/views (at camera.elevation, from camera.start_azimuth)."""
    times: int = 12
    """Times τ evenly over [time.start, time.end]."""
    size: int = 256
    """Side of one atlas tile (pixels)."""
    jpeg_quality: int = 90
    """JPEG quality of the atlas images (1–95)."""
    fps: float = 8.0
    """Play speed (time steps per second)."""
    max_mb: float = 20.0
    """Fail when the written atlas is larger than this (MB); lower views / times / size / jpeg_quality then."""


@dataclass
class RunOutputsConfig:
    """What ``phase=all`` writes after the last phase, next to the orbit video (cheap defaults; docs/mesh_export.md)."""

    glb: bool = True
    """Write <run_dir>/mesh/animated.glb (flipbook) and mesh/mesh_seq/frame_NNN.ply."""
    glb_frames: int = 16
    """Frames of the GLB (τ evenly over [0, 1])."""
    glb_resolution: int = 96
    """Density grid points per axis of the GLB's marching cubes."""
    viewer: bool = True
    """Write the offline web viewer <run_dir>/viewer/."""
    viewer_views: int = 12
    """Azimuths of the viewer atlas."""
    viewer_times: int = 8
    """Times of the viewer atlas."""
    viewer_size: int = 192
    """Tile side of the viewer atlas (pixels)."""


@dataclass
class ExportConfig:
    """Root config of ``python -m animate124.export`` (configs/export.yaml)."""

    run_dir: Optional[str] = None
    """Run directory holding the phase checkpoints (required)."""
    phase: Optional[str] = None
    """Checkpoint phase (None: the latest finished of refine > dynamic > static > fit)."""
    format: str = "video"
    """video (camera path → mp4/gif/PNGs) | mesh (marching cubes per frame → PLY + animated GLB) | viewer (HTML)."""
    mesh: MeshConfig = _field(default_factory=MeshConfig)
    viewer: ViewerConfig = _field(default_factory=ViewerConfig)
    path: str = "orbit"
    """orbit | fixed | turntable | spiral | FILE.json (keyframes, or a D-NeRF transforms file)."""
    cameras: Optional[str] = None
    """A D-NeRF-style camera file: render every frame in file order to ``out``/000.png, ... (white background)."""
    out: Optional[str] = None
    """FILE.mp4 | FILE.gif | DIR (PNG frames); default <run_dir>/videos/<path>.mp4 (cameras=: <run_dir>/renders/<stem>)
    (the folder's frames are 000.png, 001.png, ...). format=mesh / viewer: a folder, default <run_dir>/mesh / viewer."""
    frames: int = 60
    """Frames per video (per view for path=fixed); meshes per export for format=mesh. Ignored by D-NeRF camera files."""
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
