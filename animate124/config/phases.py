"""Typed config schemas of the phases (configs/phase/*.yaml). Defaults = the original's (spec §8, §15).

Step counts are per phase (not cumulative like the original's ``--iters``; spec §14.4).
Each phase class is owned by the module that implements it (phases/<name>.py); keep edits to your own class.

:data:`PHASES` (at the end) is the one table of phases: the ConfigStore entries (``config/store.py``), the module of
each kind (``animate124.phases.<kind>``), the order of ``phase=all`` (:func:`chain_order`) and the phases a scene
can be loaded from (:func:`scene_phases`) all derive from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional, cast

from omegaconf import OmegaConf

from animate124.config.export import RunOutputsConfig
from animate124.errors import ConfigError


class PhaseKind(str, Enum):
    fit = "fit"
    textual_inversion = "textual_inversion"
    static = "static"
    dynamic = "dynamic"
    refine = "refine"
    all = "all"


@dataclass
class OptimConfig:
    """Adam with the original's parameter groups (grids at lr·grid_lr_scale, MLP at lr)."""

    lr: float = 1e-3
    """Base learning rate (MLP)."""
    grid_lr_scale: float = 10.0
    """Grid tables use lr·grid_lr_scale."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    """Adam betas."""
    eps: float = 1e-15
    """Adam epsilon."""
    grad_clip_value: Optional[float] = None
    """Element-wise gradient clipping value (None = off)."""


@dataclass
class TrainLoopConfig:
    """Settings shared by every phase's training loop (phases/base.py)."""

    max_steps: int = 1000
    """Optimisation steps of this phase."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps (and at the end, and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """Keep the last N checkpoints."""
    log_every: int = 10
    """TensorBoard scalars every this many steps."""
    val_every: int = 1000
    """Validation renders every this many steps (0 = only at the end)."""
    amp: bool = True
    """fp16 autocast + GradScaler on CUDA (ignored on CPU)."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class AdamPhaseConfig(TrainLoopConfig):
    """A training loop whose optimizer is :class:`OptimConfig`'s Adam (every phase that trains a field)."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    """Adam settings and element-wise gradient clipping."""


@dataclass
class FitPhaseConfig(AdamPhaseConfig):
    """Supervised 4D reconstruction from a D-NeRF-layout dataset (the representation's yardstick)."""

    kind: PhaseKind = PhaseKind.fit
    max_steps: int = 400
    """Sized for the ~96 px synthetic scene on a CPU (≥ 30 dB after ~150 steps; docs/benchmarks.md); raise it (and
    batch_rays) for real D-NeRF scenes."""
    checkpoint_every: int = 100
    val_every: int = 50
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-2, grid_lr_scale=1.0, eps=1e-15))
    batch_rays: int = 1024
    """Random rays per step (drawn from random training frames)."""
    random_background: bool = True
    """Composite each training ray on a random colour using the ground-truth alpha (prevents white haze)."""
    time_slots: int = 8
    """Occupancy time slots."""
    eval_size: Optional[int] = None
    """Evaluate test PSNR at this image size (None = dataset size)."""
    eval_max_frames: Optional[int] = None
    """Evaluate on at most this many test frames (None = all)."""
    val_max_frames: Optional[int] = 4
    """Validation frames rendered at each validation (every ``val_every`` steps: the val PSNR curve that chooses the
    best step; None = all). They come from the dataset's val split, else from ``val_holdout`` held-out train frames."""
    val_holdout: int = 4
    """Without a val split: this many training frames (evenly spaced) are held out of training as validation."""
    curve_test_frames: int = 0
    """Also render this many test frames at each validation, for the report's test curve only (they never choose the
    model, the step or a stop: model selection uses validation frames only)."""
    keep_best: bool = False
    """Keep the field of the step with the best val PSNR (``<phase>/best/``) and evaluate that one at the end."""
    eval_train_frames: int = 4
    """Training frames rendered at the end for the report's train PSNR."""
    save_val_images: int = 4
    """Test frames saved to val/ as ground truth | prediction PNGs at the end."""
    lambda_time_tv: float = 0.1
    """Measured on the 16 × 8 multicam scene at 400 steps (docs/benchmarks.md): 0.1 → 36.0 dB test, 1.0 → 33.5 dB.
    Temporal regulariser weight of the coarsest level (keyframe grid: per-level keyframe TV; hash4d: per-level
    finite differences across ``time_smooth_dt``; :meth:`animate124.fields.GridField.time_smoothness`)."""
    time_tv_level_decay: float = 0.5
    """Level ℓ (0 = coarsest) weighs ``lambda_time_tv·decay^ℓ``: coarse levels move smoothly, fine detail stays free."""
    time_smooth_points: int = 4096
    """hash4d: random points per step of its finite-difference term."""
    time_smooth_dt: float = 0.0625
    """hash4d: the time offset Δτ of its finite differences."""
    lr_final_ratio: float = 0.1
    """The learning rate decays exponentially to lr·lr_final_ratio at max_steps (1.0 = constant)."""
    occupancy_thresh: Optional[float] = 1.0
    """Occupancy threshold min(mean σ, this) for fit, overriding render.density_thresh (None = use render's). Low, so
    that cells start occupied (σ ≈ 1 at init) and empty only once the data pushes them to σ ≈ 0; render's 10 would
    cut the grid to the initial density blob and the field could never grow into the rest of the scene."""
    carve_occupancy: bool = True
    """Restrict the occupancy grid to the visual hull of the training alphas (per time slot): far fewer samples."""


@dataclass
class TextualInversionPhaseConfig(TrainLoopConfig):
    """Learn one SD-1.5 token embedding from the input image (spec §3)."""

    kind: PhaseKind = PhaseKind.textual_inversion
    max_steps: int = 3000
    lr: float = 1e-4
    """AdamW learning rate (constant)."""
    batch_size: int = 16
    resolution: int = 512
    placeholder_token: Optional[str] = None
    """Default: _<case or image stem>_."""
    initializer_token: Optional[str] = None
    """Default: the first noun-ish word of the prompt's subject."""
    augment: bool = True
    """The original's heavy augmentations (pixels mapped to [-1, 1] before the VAE: fixes spec §14.10)."""


class SDSBalance(str, Enum):
    """How strong SDS is relative to the reference / regulariser losses in the static phase."""

    original = "original"
    """As in the original's static stage, whose ``latents.backward(grad)`` bypassed the GradScaler (spec §14.2): the
    SDS terms are divided by the scaler's current scale (about 2^16 and growing), or by a fixed 2^16 where no
    scaler runs (CPU / amp off). Adam's per-parameter normalisation restores full strength only where the reference
    view gives no gradient. The published results came from this balance."""
    corrected = "corrected"
    """SDS at the λ's face value, through the scaler like every other term (the reparameterised loss)."""


@dataclass
class ReferenceLossConfig:
    """Reference-view losses of the generation phases (the input view at τ = 0: rgb, mask, depth; spec §7.1)."""

    lambda_rgb: float = 5.0
    """Masked reference RGB MSE weight."""
    lambda_mask: float = 0.5
    """Reference mask (opacity) MSE weight."""
    lambda_depth: float = 0.01
    """Reference depth (1 − Pearson)/2 weight."""


@dataclass
class RegularisersConfig:
    """Regularisers applied on every step of the generation phases (spec §7.6–7.7)."""

    lambda_entropy: float = 1e-3
    """Opacity-entropy weight after its ramp."""
    entropy_ramp: float = 0.5
    """The entropy weight ramps linearly over this fraction of max_steps (the original: min(1, 2·step/iters))."""
    lambda_orient: float = 1e-2
    """Orientation loss weight (steps that render normals)."""
    lambda_normal_tv: float = 0.5
    """2D normal-image TV weight."""
    lambda_normal_blur: float = 0.5
    """2D normal-image vs. Gaussian-blurred MSE weight."""


@dataclass
class ViewsConfig:
    """Random training views of the generation phases (``render.cameras.sample_random_views``)."""

    uniform_sphere_rate: float = 0.5
    """Probability of the original's upper-hemisphere view draw (else elevation in elevation_range)."""
    elevation_range: List[float] = field(default_factory=lambda: [-45.0, 45.0])
    """Elevation range (degrees) of the other random-view branch."""
    fovy: float = 40.0
    """Field of view (degrees) of every camera (Zero-1-to-3 assumes 40°)."""


@dataclass
class ShadingConfig:
    """Shading of the SDS steps: ambient a ~ U(ambient_min, 1), textureless w.p. textureless_rate, else lambertian."""

    textureless_rate: float = 0.2
    """Probability of textureless shading (else lambertian)."""
    ambient_min: float = 0.1
    """Lower end of the random ambient ratio."""


@dataclass
class GenerationPhaseConfig(AdamPhaseConfig):
    """What the generation phases (static, dynamic, refine) share; phases/generation.py reads it."""

    render_size: int = 128
    """Random-view render size (SDS steps)."""
    ref_size: int = 192
    """Reference-view render size (the original's 1.5 × 128)."""
    known_interval: int = 4
    """Every known_interval-th step is a reference-view step (static: after the first known_iters)."""
    time_slots: int = 1
    """Occupancy time slots."""
    reference: ReferenceLossConfig = field(default_factory=ReferenceLossConfig)
    """Reference-view loss weights."""
    regularisers: RegularisersConfig = field(default_factory=RegularisersConfig)
    """Regulariser weights."""
    views: ViewsConfig = field(default_factory=ViewsConfig)
    """Random training views."""
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    """Shading of SDS steps."""


@dataclass
class StaticPhaseConfig(GenerationPhaseConfig):
    """Static stage (spec §8.1): reference-view losses + SD and Zero-1-to-3 SDS on random views (phases/static.py).

    The guidance terms are configured under ``guidance.sd`` / ``guidance.zero123`` (``enabled``, λ, CFG, t range).
    """

    kind: PhaseKind = PhaseKind.static
    max_steps: int = 5000
    known_iters: int = 100
    """All of the first known_iters steps are reference-view steps."""
    time_slots: int = 1
    """Occupancy time slots (1: static)."""
    normal_shading_ratio: float = 0.2
    """SDS steps before this fraction of max_steps render normal-map shading (a = 1); afterwards ``shading``."""
    coarse_to_fine_ratio: float = 0.6
    """The finest ``coarse_to_fine_levels`` grid levels are masked for steps < ratio·max_steps (3000 of 5000)."""
    coarse_to_fine_levels: int = 8
    """How many finest levels are masked (at least one level always stays active)."""
    val_views: int = 8
    """Validation: this many azimuths at elevation 0, saved side by side as one PNG."""
    val_size: int = 256
    """Validation render size."""
    sds_balance: SDSBalance = SDSBalance.original
    """original (default until someone re-tunes the λ's with real weights) or corrected; see :class:`SDSBalance`.
    The dynamic stages always use the reparameterised (corrected) loss, as the original did there (spec §7.7)."""


@dataclass
class ClipConfig:
    """Training-clip time sampling (data/time.py; spec §6.4). The rates hold exactly."""

    precision: int = 256
    """Lattice steps P of [0, 1]: τ_i = (s + i·k)/P."""
    start_zero_rate: float = 0.1
    """P(first frame is τ = 0) = the original's zero_rate·(1 − mirror) = 0.2·0.5."""
    end_one_rate: float = 0.1
    """P(last frame is τ = 1) = the original's zero_rate·mirror = 0.2·0.5."""
    max_stride: Optional[int] = None
    """Largest stride k (uniform on 1..k_max); None = precision // num_frames (16 for 256/16)."""


@dataclass
class DynamicPhaseConfig(GenerationPhaseConfig):
    """Dynamic coarse stage (spec §8.2, §8.4). Step counts are this phase's own (10k new steps).

    ``render_size`` is the training render size (square); frames are resized to guidance.video.height × width.
    Reference steps (every ``known_interval``-th) are at τ = 0; the dynamic stages have no known_iters warm-up.
    """

    kind: PhaseKind = PhaseKind.dynamic
    max_steps: int = 10000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(grad_clip_value=1.0))
    num_frames: int = 16
    """Frames F per training clip (also the video model's frame count)."""
    time_slots: int = 16
    """Occupancy time slots (centres (k+0.5)/S; re-estimated at their own times after init, spec §14.1)."""
    clip: ClipConfig = field(default_factory=ClipConfig)
    """Time sampling of training clips."""
    dynamic_cam_rate: float = 0.9
    """Probability of a moving camera over the clip (spec §6.3); otherwise fixed."""
    cam_delta_elevation: float = 45.0
    """Moving camera: elevation change over the clip ~ U(±this) degrees."""
    cam_delta_azimuth: float = 90.0
    """Moving camera: azimuth change over the clip ~ U(±this) degrees."""
    zero123_on_start: bool = True
    """Apply Zero-1-to-3 SDS (guidance.zero123) to frame 0 of clips that start at τ = 0 (spec §7.4)."""
    regularisers: RegularisersConfig = field(default_factory=lambda: RegularisersConfig(entropy_ramp=0.0))
    """Regulariser weights; the entropy weight is at full strength at once (entropy_ramp 0: the field comes trained
    from the static phase; the original's cumulative ramp was already at 2/3 when its dynamic stage began)."""
    lambda_time_tv: float = 0.1
    """Temporal smoothness on every step (spec §7.8's keyframe TV, now per level and also for hash4d:
    :meth:`animate124.fields.GridField.time_smoothness`). UNTESTED with real priors: the per-level scheme was tuned on
    phase=fit only (docs/benchmarks.md); tiny random priors cannot tune it."""
    time_tv_level_decay: float = 0.5
    """Level ℓ (0 = coarsest) weighs ``lambda_time_tv·decay^ℓ`` (fit's measured default; untested with real priors;
    1.0 = the original's one weight for all levels)."""
    val_frames: int = 64
    """Frames of each validation video (τ = linspace(0, 1))."""
    val_size: int = 256
    """Validation video size (rounded up to a multiple of 16)."""
    val_fps: int = 15
    """Frames per second of the validation videos."""
    val_elevation: float = 15.0
    """Elevation (°) of the orbit-while-animating video; the fixed-view video uses the reference view."""


@dataclass
class RefinePhaseConfig(DynamicPhaseConfig):
    """Semantic refinement (spec §8.3): the dynamic phase's losses + ControlNet-Tile SDS (guidance.controlnet) on
    chosen frames, conditioned on renders of a frozen copy of the dynamic-phase model."""

    kind: PhaseKind = PhaseKind.refine
    max_steps: int = 5000
    shading: ShadingConfig = field(default_factory=lambda: ShadingConfig(textureless_rate=0.0))
    """Always lambertian on SDS steps (``textureless_rate 0`` in run-cn.sh)."""


@dataclass
class AllPhasesConfig:
    """``phase=all``: textual_inversion → static → dynamic → refine in one run_dir, skipping finished phases."""

    kind: PhaseKind = PhaseKind.all
    textual_inversion: TextualInversionPhaseConfig = field(default_factory=TextualInversionPhaseConfig)
    static: StaticPhaseConfig = field(default_factory=StaticPhaseConfig)
    dynamic: DynamicPhaseConfig = field(default_factory=DynamicPhaseConfig)
    refine: RefinePhaseConfig = field(default_factory=RefinePhaseConfig)
    video: bool = True
    """Render the final orbit-while-animating video (<run_dir>/videos/orbit.mp4) after the last phase."""
    video_frames: int = 60
    """Frames of the final video (τ runs 0→1 while the camera orbits once)."""
    video_size: int = 256
    """Side of the final video's frames."""
    video_fps: float = 24.0
    """Frame rate of the final video."""
    outputs: RunOutputsConfig = field(default_factory=RunOutputsConfig)
    """The animated GLB and the web viewer written at the end (``phase.outputs.glb=false`` / ``viewer=false``)."""


@dataclass(frozen=True)
class PhaseSpec:
    """One row of :data:`PHASES`."""

    kind: PhaseKind
    """The phase (``phase=<kind>``; its module is ``animate124.phases.<kind>``, its YAML ``configs/phase/<kind>.yaml``)."""
    config: type
    """Its config dataclass (stored as ``phase/base_<kind>``)."""
    chain: bool = False
    """A step of ``phase=all``, run in table order (and a field of :class:`AllPhasesConfig`)."""
    scene: bool = False
    """Leaves a renderable field + occupancy grid (export, metrics, the next phase's start)."""
    dynamic: bool = True
    """Its field takes a time input (scene phases only)."""


PHASES: tuple[PhaseSpec, ...] = (
    PhaseSpec(PhaseKind.fit, FitPhaseConfig, scene=True),
    PhaseSpec(PhaseKind.textual_inversion, TextualInversionPhaseConfig, chain=True),
    PhaseSpec(PhaseKind.static, StaticPhaseConfig, chain=True, scene=True, dynamic=False),
    PhaseSpec(PhaseKind.dynamic, DynamicPhaseConfig, chain=True, scene=True),
    PhaseSpec(PhaseKind.refine, RefinePhaseConfig, chain=True, scene=True),
    PhaseSpec(PhaseKind.all, AllPhasesConfig),
)
"""Every phase, in pipeline order (adding a phase: a row here, its config class above, its YAML and its module)."""


def phase_module(kind: PhaseKind | str) -> str:
    """The module implementing phase ``kind``: ``animate124.phases.<kind>``."""
    return f"animate124.phases.{PhaseKind(kind).value}"


def chain_order() -> tuple[str, ...]:
    """The phases ``phase=all`` runs, in order."""
    return tuple(s.kind.value for s in PHASES if s.chain)


def scene_phases() -> tuple[str, ...]:
    """Phases with a renderable field, latest first (export and metrics load the latest finished one)."""
    return tuple(s.kind.value for s in reversed(PHASES) if s.scene)


def static_phases() -> tuple[str, ...]:
    """Scene phases whose field has no time input."""
    return tuple(s.kind.value for s in PHASES if s.scene and not s.dynamic)


def typed_phase_config(value: Any) -> TrainLoopConfig:
    """``cfg.phase`` as its phase's dataclass (a DictConfig or dict is validated and converted by its ``kind``).

    Raises:
        ConfigError: no such kind, or a phase that is not trained by the loop (``all``).
    """
    if isinstance(value, TrainLoopConfig):
        return value
    kind = value.get("kind") if hasattr(value, "get") else getattr(value, "kind", None)
    spec = next((s for s in PHASES if s.kind.value == getattr(kind, "value", kind)), None)
    if spec is None or not issubclass(spec.config, TrainLoopConfig):
        raise ConfigError(f"phase kind {kind!r} has no training loop; use one of "
                          f"{', '.join(s.kind.value for s in PHASES if issubclass(s.config, TrainLoopConfig))}")
    return cast(TrainLoopConfig, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(spec.config), value)))
