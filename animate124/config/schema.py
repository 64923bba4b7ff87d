"""Typed config schemas of the core components (one dataclass per component; STYLE.md §C).

Every YAML under ``configs/<group>/`` starts from one of these (``defaults: [base_<name>, _self_]``), so a typo or
a wrong type fails at compose time. ``OmegaConf.to_object`` turns the composed config into these dataclasses once,
in ``animate124.run``; nothing below it sees a DictConfig.

Kinds are Enums (OmegaConf validates them at compose time; ``Literal`` is not supported by OmegaConf 2.3).
Phase configs live in ``config/phases.py``, guidance configs in ``config/guidance.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING

from animate124.config.guidance import GuidanceConfig


class EncodingKind(str, Enum):
    tiled = "tiled"
    """Dense grid indexed x + y(R+1) + z(R+1)², wrapped modulo the level's table size (the original's)."""
    hash = "hash"
    """Instant-NGP spatial hash (dense indexing for levels that fit the table)."""


class FieldKind(str, Enum):
    keyframe_grid = "keyframe_grid"
    """T keyframe tables of a 3D grid, linearly interpolated in τ (the original's grid4d, fused)."""
    hash4d = "hash4d"
    """3D hash grid + 4D (xyzτ) hash grid, features summed (4D-fy / threestudio)."""


class RenderBackend(str, Enum):
    auto = "auto"
    cuda = "cuda"
    torch = "torch"
    nerfacc = "nerfacc"


class ModelsKind(str, Enum):
    pretrained = "pretrained"
    """Real weights by hub id or local directory (``from_pretrained``)."""
    tiny = "tiny"
    """Tiny random configs of the same classes, saved to a cache dir and loaded back (offline tests, CPU)."""
    random = "random"
    """Full-size architectures with random weights (GPU speed/memory benchmarks)."""


@dataclass
class FieldConfig:
    """The 4D radiance field: multiresolution grid encoding + MLP 32→64→4, exp density with a Gaussian blob."""

    kind: FieldKind = FieldKind.keyframe_grid
    """Which dynamic field (static phases always use a single keyframe)."""
    encoding: EncodingKind = EncodingKind.tiled
    """Spatial grid type."""
    num_levels: int = 16
    """Number of resolution levels L."""
    features_per_level: int = 2
    """Features per level F (the MLP input is L·F)."""
    base_resolution: int = 16
    """Coarsest level resolution."""
    max_resolution: int = 2048
    """Finest level resolution (per-level scale = (max/base)^(1/(L-1)))."""
    log2_table_size: int = 16
    """log2 of the per-level table size cap."""
    keyframes: int = 64
    """Number of keyframe tables T along τ for ``keyframe_grid`` in the dynamic phases."""
    log2_table_size_4d: int = 19
    """log2 table size of the 4D (xyzτ) hash grid of ``hash4d``."""
    time_resolution_4d: int = 64
    """Finest τ resolution of the 4D hash grid of ``hash4d``."""
    hidden_dim: int = 64
    """Width of the single hidden layer of the MLP."""
    blob_density: float = 10.0
    """Amplitude of the Gaussian density blob added to the raw density."""
    blob_radius: float = 0.2
    """Std of the Gaussian density blob."""
    init_scale: float = 1e-4
    """Grid tables are initialised uniform(-init_scale, init_scale)."""
    bound: float = 1.0
    """The scene is the cube [-bound, bound]³."""
    normal_eps: float = 1e-2
    """Step of the central finite differences for normals."""


@dataclass
class RenderConfig:
    """Occupancy-grid-accelerated volume rendering (the original's constants)."""

    backend: RenderBackend = RenderBackend.auto
    """auto = CUDA kernels when available, else the torch reference; nerfacc = nerfacc 0.5 (CUDA only)."""
    grid_resolution: int = 128
    """Occupancy grid resolution per axis."""
    max_steps: int = 1024
    """Step size dt = 2√3·bound / max_steps; also the cap on samples per ray."""
    min_near: float = 0.2
    """Rays start at least this far from the camera."""
    t_thresh: float = 1e-4
    """Stop compositing when transmittance drops below this."""
    density_thresh: float = 10.0
    """Occupancy threshold = min(mean grid density, density_thresh)."""
    occupancy_decay: float = 0.95
    """EMA-max decay of the occupancy grid at each update."""
    update_interval: int = 16
    """Refresh the occupancy grid every this many steps."""
    update_fraction: float = 1.0
    """Fraction of cells re-evaluated per refresh (1.0 = all, the original)."""
    chunk_rays: int = 8192
    """Rays per chunk for inference renders."""
    checkpoint_frames: Optional[int] = None
    """Training renders of more frames than this run in chunks of this many frames, each under gradient
    checkpointing (its per-sample activations are recomputed in backward). Exact (same samples: the RNG state is
    restored), costs one more render forward; None = off. A memory lever of ``gpu_memory_gb``."""


@dataclass
class ModelsConfig:
    """How guidance models are obtained (the ids themselves are in each guidance config)."""

    kind: ModelsKind = ModelsKind.pretrained
    """pretrained | tiny | random."""
    cache_dir: Optional[str] = None
    """Cache root of the tiny random models, saved once to <cache>/tiny/v<N>/<id>/<subfolder> (default:
    $ANIMATE124_CACHE, else ~/.cache/animate124)."""
    dtype: str = "auto"
    """auto = fp16 on CUDA, fp32 on CPU; or float16 / bfloat16 / float32."""
    local_files_only: bool = False
    """Never contact the hub (also implied by HF_HUB_OFFLINE=1); a missing model is then a one-line
    MissingWeightsError naming the id and the download command."""
    vae_checkpointing: bool = False
    """Gradient checkpointing of every VAE loaded (``enable_gradient_checkpointing``): the encoder's activations are
    recomputed in backward instead of kept. Exact (same result), costs one more encoder forward; a memory lever of
    ``gpu_memory_gb`` (animate124.estimate)."""
    unet_checkpointing: bool = False
    """Gradient checkpointing of every UNet loaded: only matters where gradients flow through a UNet (textual
    inversion; SDS UNets run without grad). Exact, costs one more UNet forward; a memory lever."""


@dataclass
class CaseConfig:
    """A benchmark case in the Animate124 benchmark layout (<root>/<name>/image.jpg, rgba.png, depth.png, ...)."""

    name: Optional[str] = None
    """Case folder name, e.g. panda-dance (None: no case; give image= and prompt= instead)."""
    root: str = "${oc.env:ANIMATE124_BENCHMARK,benchmark}"
    """Folder holding benchmark.json and the case folders."""
    subject: Optional[str] = None
    """Subject noun as spelled in the caption (replaced by the TI token in the ControlNet prompt); default: inferred
    from the case name (``panda-dance`` → ``panda``)."""


@dataclass
class DataConfig:
    """A multi-view video dataset in the D-NeRF layout (for ``phase=fit``)."""

    path: Optional[str] = None
    """Folder with transforms_{train,val,test}.json."""
    downscale: int = 1
    """Integer image downscale factor applied at load time."""
    white_background: bool = True
    """Composite RGBA images on white for evaluation."""
    scale: float = 1.0
    """Camera positions are multiplied by this, to bring a scene into the [-bound, bound]³ box."""


@dataclass
class EstimateConfig:
    """Settings of ``python -m animate124.estimate`` that the run itself does not have."""

    gpu: str = "h100"
    """GPU of the time model: h100 | h200 | a100 | rtx4090 | l4 (animate124/estimate/gpus.py)."""
    samples_per_ray: float = 24.0
    """Mean samples per training ray over all rays of a render (empty rays included): the renderer's data-dependent
    sample count (an assumption until measured by a real render of a checkpoint)."""


@dataclass
class RunConfig:
    """Root config (configs/run.yaml)."""

    phase: Any = MISSING
    """The phase to run; chosen by the ``phase`` group (fit | textual_inversion | static | dynamic | refine | all)."""
    field: FieldConfig = _field(default_factory=FieldConfig)
    render: RenderConfig = _field(default_factory=RenderConfig)
    models: ModelsConfig = _field(default_factory=ModelsConfig)
    case: CaseConfig = _field(default_factory=CaseConfig)
    data: DataConfig = _field(default_factory=DataConfig)
    guidance: GuidanceConfig = _field(default_factory=GuidanceConfig)
    """Guidance terms (config/guidance.py); each phase enables the ones it uses."""
    image: Optional[str] = None
    """Input picture (RGBA, or RGB + mask) for the generation phases."""
    prompt: Optional[str] = None
    """Motion caption, e.g. 'a panda is dancing' (video phases)."""
    static_prompt: Optional[str] = None
    """Prompt of the static phase (default derived from ``prompt``)."""
    run_dir: Optional[str] = None
    """Run directory (default outputs/<case name or image stem>)."""
    init_from: Optional[str] = None
    """Checkpoint to initialise from, overriding the automatic hand-off from the previous phase."""
    seed: int = 3407
    """Global seed."""
    lock_stale_s: float = 900.0
    """A ``<run_dir>/.lock`` whose heartbeat is older than this many seconds is taken over (animate124.io.lock)."""
    lock_heartbeat_s: float = 60.0
    """How often (s) a run refreshes its lock's heartbeat (also at every checkpoint); 0 = only at checkpoints."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    debug: bool = False
    """Show full tracebacks on errors."""
    extra: List[str] = _field(default_factory=list)
    """Free-form tags recorded in report.json."""
    estimate: EstimateConfig = _field(default_factory=EstimateConfig)
    """Settings of the estimator only (``python -m animate124.estimate``)."""
    gpu_memory_gb: Optional[float] = None
    """GPU memory budget in GB (e.g. 24). When set, the budget planner of ``animate124.estimate`` turns memory levers
    on in a documented order (exact levers first) until every phase's estimated peak, plus the CUDA context and the
    allocator headroom and a 10 % margin, fits; it logs the levers used. Unset (None): nothing changes."""
