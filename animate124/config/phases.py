"""Typed config schemas of the phases (configs/phase/*.yaml). Defaults = the original's (spec §8, §15).

Step counts are per phase (not cumulative like the original's ``--iters``; spec §14.4).
Each phase class is owned by the module that implements it (phases/<name>.py); keep edits to your own class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional


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
class FitPhaseConfig(TrainLoopConfig):
    """Supervised 4D reconstruction from a D-NeRF-layout dataset (the representation's yardstick)."""

    kind: PhaseKind = PhaseKind.fit
    max_steps: int = 3000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-2, grid_lr_scale=1.0, eps=1e-15))
    batch_rays: int = 4096
    """Random rays per step (drawn from random training frames)."""
    random_background: bool = True
    """Composite each training ray on a random colour using the ground-truth alpha (prevents white haze)."""
    time_slots: int = 16
    """Occupancy time slots."""
    eval_size: Optional[int] = None
    """Evaluate test PSNR at this image size (None = dataset size)."""
    eval_max_frames: Optional[int] = None
    """Evaluate on at most this many test frames (None = all)."""


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


@dataclass
class StaticPhaseConfig(TrainLoopConfig):
    """Static stage (spec §8.1)."""

    kind: PhaseKind = PhaseKind.static
    max_steps: int = 5000
    optim: OptimConfig = field(default_factory=OptimConfig)
    render_size: int = 128
    ref_size: int = 192
    known_iters: int = 100
    known_interval: int = 4
    time_slots: int = 1


@dataclass
class DynamicPhaseConfig(TrainLoopConfig):
    """Dynamic coarse stage (spec §8.2)."""

    kind: PhaseKind = PhaseKind.dynamic
    max_steps: int = 10000
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(grad_clip_value=1.0))
    num_frames: int = 16
    render_size: int = 128
    ref_size: int = 192
    known_interval: int = 4
    time_slots: int = 16


@dataclass
class RefinePhaseConfig(DynamicPhaseConfig):
    """Semantic refinement with ControlNet-Tile (spec §8.3)."""

    kind: PhaseKind = PhaseKind.refine
    max_steps: int = 5000


@dataclass
class AllPhasesConfig:
    """``phase=all``: textual_inversion → static → dynamic → refine in one run_dir, skipping finished phases."""

    kind: PhaseKind = PhaseKind.all
    textual_inversion: TextualInversionPhaseConfig = field(default_factory=TextualInversionPhaseConfig)
    static: StaticPhaseConfig = field(default_factory=StaticPhaseConfig)
    dynamic: DynamicPhaseConfig = field(default_factory=DynamicPhaseConfig)
    refine: RefinePhaseConfig = field(default_factory=RefinePhaseConfig)
