"""Memory and time of the renderer + field, modelled by bytes and sample counts (not traced).

FlopCounterMode counts about zero FLOPs for the ray-marching kernels and the grid gathers, and the sample count is
data dependent, so this part is a model with its constants written here:

- samples: ``rays × samples_per_ray`` (``estimate.samples_per_ray``: the mean over ALL rays of a training render,
  occupancy-skipped rays included; an assumption until a real CPU render of a checkpoint measures it);
- field evaluations per sample: 1, plus 6 for the central-difference normals when the step shades (spec §4.5);
- bytes saved for backward per evaluation (CUDA path, AMP): position 12 + time 4 + grid features L·F fp32 +
  the MLP's fp16 input L·F·2 + hidden fp16 2·H + raw output fp32 16 + trunc_exp input 4;
- per sample once: march outputs (position, direction, t/Δt: 32 B), albedo 12, normal + shading 40, composite
  state (α, weight, colour, depth: 32 B);
- backward transient: the gradients of one evaluation's saved set (freed per kernel, so one set at a time), times
  the number of evaluations that run as one batch (the normals' 6 evaluations are one call).

Time: the grid gathers read 2^D corners × F features per level (32-byte sectors: 32 B per corner), twice for keyframe
interpolation, for every evaluation; backward scatters the same (atomics: counted twice). ``L2_HIT`` of those bytes
are served from L2 and do not count against HBM bandwidth (an assumption). The MLP FLOPs are 2·(L·F·H + 4H) per
evaluation forward and twice that backward.
"""

from __future__ import annotations

from dataclasses import dataclass

from animate124.config.schema import FieldConfig
from animate124.estimate.gpus import GPU

SECTOR = 32
"""Bytes read per grid corner (one 32-byte DRAM sector)."""
L2_HIT = 0.5
"""Fraction of the grid-gather bytes served from L2 (assumption; coarse levels fit in L2, fine ones do not)."""
MARCH_BYTES = 32
PER_SAMPLE_ONCE = 12 + 40 + 32
OUTPUT_BYTES = 4 + 12 + 12
"""Per-sample outputs a checkpointed render keeps for the regularisers: weight, normal, direction (fp32)."""


@dataclass
class RenderCost:
    samples: float
    saved_bytes: float
    """Bytes autograd keeps until backward (0 without grad)."""
    transient_bytes: float
    """Peak extra bytes while the render's forward or backward runs."""
    hbm_bytes: float
    flops: float

    def time(self, g: GPU) -> float:
        return max(self.flops / g.fp16_flops, self.hbm_bytes / g.bandwidth)


def field_params(cfg: FieldConfig, keyframes: int) -> int:
    """Parameter count of the grid field with ``keyframes`` tables (the layout of ``animate124.ops.grid_layout``)."""
    from animate124.ops.hashgrid import grid_layout

    offsets, _ = grid_layout(cfg.encoding.value if hasattr(cfg.encoding, "value") else str(cfg.encoding),
                             cfg.num_levels, cfg.base_resolution, cfg.max_resolution, cfg.log2_table_size, 3)
    table = keyframes * int(offsets[-1]) * cfg.features_per_level
    feat = cfg.num_levels * cfg.features_per_level
    mlp = feat * cfg.hidden_dim + cfg.hidden_dim + cfg.hidden_dim * 4 + 4
    return table + mlp


def eval_bytes(cfg: FieldConfig) -> int:
    """Bytes saved for backward by one field evaluation of one point (module docstring)."""
    feat = cfg.num_levels * cfg.features_per_level
    return 12 + 4 + feat * 4 + feat * 2 + 2 * cfg.hidden_dim + 16 + 4


def render_cost(cfg: FieldConfig, rays: int, samples_per_ray: float, normals: bool, dynamic: bool,
                grad: bool = True) -> RenderCost:
    """Memory and work of one training render of ``rays`` rays (module docstring)."""
    n = rays * samples_per_ray
    evals = 7 if normals else 1
    per_eval = eval_bytes(cfg)
    saved = n * (MARCH_BYTES + PER_SAMPLE_ONCE + evals * per_eval) if grad else 0.0
    batch = 6 if normals else 1
    transient = n * per_eval * batch * (1.0 if grad else 0.5)
    corners = 8 * SECTOR * (2 if dynamic else 1)
    gather = n * evals * cfg.num_levels * corners * (1.0 - L2_HIT)
    passes = 3.0 if grad else 1.0  # forward + backward scatter (atomics count twice)
    hbm = gather * passes + n * (MARCH_BYTES + PER_SAMPLE_ONCE + evals * per_eval) * (2.0 if grad else 1.0)
    feat = cfg.num_levels * cfg.features_per_level
    flops = n * evals * 2.0 * (feat * cfg.hidden_dim + 4 * cfg.hidden_dim) * (3.0 if grad else 1.0)
    return RenderCost(samples=n, saved_bytes=saved, transient_bytes=transient, hbm_bytes=hbm, flops=flops)


def occupancy_update_cost(cfg: FieldConfig, grid_resolution: int, slots: int, dynamic: bool) -> RenderCost:
    """One occupancy refresh: σ at every cell centre of every time slot (no grad)."""
    return render_cost(cfg, grid_resolution ** 3 * slots, 1.0, normals=False, dynamic=dynamic, grad=False)


def optimizer_bytes(params: int) -> float:
    """HBM bytes of one Adam step over fp32 ``params``: read param, grad, m, v; write param, m, v."""
    return params * 4.0 * 7
