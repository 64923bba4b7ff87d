"""Typed records passed between modules (DESIGN.md §4). No behaviour beyond small views.

Shapes: N rays, M samples, B batch, F frames, H×W pixels. Images at module boundaries are float in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import Tensor


@dataclass
class FieldOutput:
    """What a field returns for N points."""

    density: Tensor
    """[N] volume density σ ≥ 0 (already activated)."""
    albedo: Tensor
    """[N, 3] albedo in [0, 1]."""


@dataclass
class RaySamples:
    """Packed samples produced by ray marching (one entry per sample, grouped by ray)."""

    xyzs: Tensor
    """[M, 3] sample positions (world, inside the AABB)."""
    dirs: Tensor
    """[M, 3] unit ray directions of the samples."""
    ts: Tensor
    """[M, 2] (t, dt): distance along the (unit-direction) ray and the step length."""
    rays: Tensor
    """[N, 2] int32 (offset, count) of each ray's samples in the packed arrays."""
    times: Tensor | None = None
    """[M] scene time τ of each sample (None for static fields)."""


@dataclass
class RenderOutput:
    """Rendered images. Leading dims ``...`` are whatever the caller asked for, e.g. [B, F, H, W]."""

    rgb: Tensor
    """[..., 3] colour composited over the background."""
    opacity: Tensor
    """[..., 1] accumulated weight (alpha)."""
    depth: Tensor
    """[..., 1] expected distance Σ w·t along the unit ray."""
    normals: Tensor | None = None
    """[..., 3] composited (n+1)/2 with detached weights, only when shading needed normals."""
    sample_weights: Tensor | None = None
    """[M] per-sample compositing weights (for the entropy regulariser)."""
    sample_normals: Tensor | None = None
    """[M, 3] per-sample normals (for the orientation regulariser)."""
    sample_dirs: Tensor | None = None
    """[M, 3] per-sample unit view directions."""

    def images(self) -> Tensor:
        """rgb as [B, F, 3, H, W] (requires rgb of shape [B, F, H, W, 3])."""
        return self.rgb.permute(0, 1, 4, 2, 3)


@dataclass
class GuidanceContext:
    """Everything a guidance term may need besides the images. Angles in degrees."""

    step: int
    """Step within the current phase (0-based)."""
    elevation: Tensor
    """[B, F] camera elevation (°) of every frame."""
    azimuth: Tensor
    """[B, F] camera azimuth (°)."""
    radius: Tensor
    """[B, F] camera distance to the origin."""
    ref_elevation: float = 0.0
    """Elevation of the reference (input) view."""
    ref_azimuth: float = 0.0
    """Azimuth of the reference view."""
    ref_radius: float = 1.8
    """Radius of the reference view."""
    times: Tensor | None = None
    """[B, F] scene time τ of each frame."""
    fixed_camera: bool = True
    """True when the camera does not move over the clip (view-dependent text is used only then)."""
    start_from_zero: bool = False
    """True when the clip's first frame is τ = 0 (Zero-1-to-3 on frame 0 in dynamic phases)."""
    control_images: Tensor | None = None
    """[B, F, 3, H, W] renders of the frozen model (ControlNet control images)."""

    @property
    def delta_elevation(self) -> Tensor:
        return self.elevation - self.ref_elevation

    @property
    def delta_azimuth(self) -> Tensor:
        """Azimuth difference to the reference, wrapped to [-180, 180)."""
        return (self.azimuth - self.ref_azimuth + 180.0) % 360.0 - 180.0

    @property
    def delta_radius(self) -> Tensor:
        return self.radius - self.ref_radius


@dataclass
class GuidanceOutput:
    """A guidance term's scalar loss (already weighted) and statistics for logging (detached 0-dim tensors or floats,
    read on the host only at log time)."""

    loss: Tensor
    stats: dict[str, Tensor | float] = field(default_factory=dict)


@dataclass
class RenderRequest:
    """What a render is asked for besides cameras and times: the one argument of every renderer's ``render``,
    ``render_rays`` and ``render_image`` for it (``render.volume``, ``render.instances``, ``render.nerfacc_backend``).
    Passed along as a value, so that a second render (the refine phase's frozen copy) repeats the first exactly,
    without recording calls."""

    background: Optional[Tensor] = None
    """[3], [B, 3], [B, F, 3] or [B, F, H, W, 3] colour behind the object (None: white)."""
    shading: str = "albedo"
    """One of ``render.volume.SHADING_MODES``."""
    ambient: float = 1.0
    """Ambient ratio a of lambertian / textureless shading."""
    light_dir: Optional[Tensor] = None
    """[3], [B, F, 3] or [B·F, 3] direction towards the light (None: towards each frame's camera)."""
    perturb: bool = True
    """Random start offset per ray (training); False uses dt/2."""

    def frames(self, idx: Tensor, num_frames: int) -> RenderRequest:
        """The request for frames ``idx`` of an F-frame clip (per-frame [B, F, ...] tensors are indexed)."""

        def pick(value: Optional[Tensor]) -> Optional[Tensor]:
            if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[1] == num_frames:
                return value[:, idx.to(value.device)]
            return value

        return RenderRequest(pick(self.background), self.shading, self.ambient, pick(self.light_dir), self.perturb)
