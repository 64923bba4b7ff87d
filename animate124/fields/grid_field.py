"""The radiance field: grid encoding → MLP → (density with a Gaussian blob, albedo). No view dependence."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from animate124.config.schema import FieldConfig, FieldKind
from animate124.fields.encodings import GridEncoding, Hash4DEncoding
from animate124.ops import keyframe_tv
from animate124.types import FieldOutput

TRUNC_EXP_MAX = 15.0
"""trunc_exp's backward uses exp(min(x, 15)) (stable-dreamfusion)."""


class _TruncExp(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: Tensor) -> Tensor:
    """exp(x) whose gradient is exp(min(x, 15)) (keeps density gradients finite).

    Args:
        x: any float tensor.

    Returns:
        exp(x), same shape.
    """
    return _TruncExp.apply(x)


def level_weights(num_levels: int, decay: float) -> list[float]:
    """Per-level weights ``decay^ℓ`` of the temporal regulariser, ℓ = 0 the coarsest level.

    ``decay < 1`` makes coarse levels move smoothly in time while fine detail stays free (``decay = 1``: one weight
    for all levels, the original's single ``lambda_time_tv``).
    """
    if decay < 0:
        raise ValueError(f"time-regulariser level decay must be >= 0, got {decay}")
    return [decay**level for level in range(num_levels)]


class GridField(nn.Module):
    """Static (one table), keyframe-grid or hash4d radiance field (spec §4.1–4.3).

    ``σ = trunc_exp(raw + blob_density·exp(−|x|²/(2·blob_radius²)))`` (blob without gradient), albedo = sigmoid.
    """

    def __init__(self, cfg: FieldConfig, dynamic: bool = False) -> None:
        """Build the field.

        Args:
            cfg: field config.
            dynamic: False = static (keyframe grid with K = 1, τ ignored); True = ``cfg.kind``
                (``keyframe_grid`` with K = ``cfg.keyframes``, or ``hash4d``).
        """
        super().__init__()
        self.cfg = cfg
        self.kind = FieldKind(cfg.kind) if dynamic else FieldKind.keyframe_grid
        self.encoding: GridEncoding | Hash4DEncoding
        if self.kind == FieldKind.hash4d:
            self.encoding = Hash4DEncoding(cfg)
        else:
            self.encoding = GridEncoding(cfg, cfg.keyframes if dynamic else 1, 3)
        self.mlp = nn.Sequential(nn.Linear(self.encoding.output_dim, cfg.hidden_dim), nn.ReLU(),
                                 nn.Linear(cfg.hidden_dim, 4))
        self._dummy: Tensor
        self.register_buffer("_dummy", torch.empty(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._dummy.device

    @property
    def is_dynamic(self) -> bool:
        """True when the output depends on τ (hash4d, or a keyframe grid with K > 1)."""
        return isinstance(self.encoding, Hash4DEncoding) or self.encoding.keyframes > 1

    @property
    def active_levels(self) -> int | None:
        """Coarse-to-fine mask of the encoding (None = all levels); see :class:`GridEncoding`."""
        return self.encoding.active_levels

    @active_levels.setter
    def active_levels(self, value: int | None) -> None:
        self.encoding.active_levels = value

    def blob(self, x: Tensor) -> Tensor:
        """[N, 3] → [N] Gaussian density blob at the origin (no gradient)."""
        with torch.no_grad():
            r2 = (x * x).sum(-1)
            return self.cfg.blob_density * torch.exp(-r2 / (2.0 * self.cfg.blob_radius ** 2))

    def _raw(self, x: Tensor, t: Tensor | None) -> Tensor:
        if self.is_dynamic and t is None:
            raise ValueError("a dynamic field needs t [N] (scene time τ in [0, 1])")
        return self.mlp(self.encoding(x, t if self.is_dynamic else None))

    def forward(self, x: Tensor, t: Tensor | None = None) -> FieldOutput:
        """Density and albedo of N points.

        Args:
            x: [N, 3] world positions.
            t: [N] scene times τ (required for dynamic fields, ignored by static ones).

        Returns:
            FieldOutput(density [N] ≥ 0, albedo [N, 3] in (0, 1)).
        """
        raw = self._raw(x, t)
        return FieldOutput(density=trunc_exp(raw[:, 0] + self.blob(x)), albedo=torch.sigmoid(raw[:, 1:]))

    def density(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """[N, 3] (and [N] times) → [N] activated density σ."""
        return trunc_exp(self._raw(x, t)[:, 0] + self.blob(x))

    def normals(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """Normals ``−∇σ/|∇σ|`` by central differences of σ (6 evaluations in one batch; spec §4.5).

        Offsets ±``cfg.normal_eps`` per axis, positions clamped to the box; a zero gradient gives a zero normal and
        non-finite values become 0. Differentiable w.r.t. the field parameters (orientation loss).

        Args:
            x: [N, 3] world positions.
            t: [N] times (dynamic fields).

        Returns:
            [N, 3] unit (or zero) normals.
        """
        n, eps, b = x.shape[0], self.cfg.normal_eps, self.cfg.bound
        step = torch.eye(3, dtype=x.dtype, device=x.device) * eps
        shifted = torch.cat([x[None] + step[:, None], x[None] - step[:, None]]).reshape(6 * n, 3).clamp(-b, b)
        t6 = None if t is None else t.repeat(6)
        sig = self.density(shifted, t6).view(6, n)
        grad = ((sig[:3] - sig[3:]) / (2.0 * eps)).T
        normal = -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-20)
        return torch.nan_to_num(normal, nan=0.0, posinf=0.0, neginf=0.0)

    def tv_loss(self) -> Tensor:
        """Temporal TV on the keyframe tables (:func:`animate124.ops.keyframe_tv`).

        0 for static fields, and 0 for hash4d: its time variation lives in a 4D grid whose coarse levels already have
        few cells along τ; an explicit τ-TV would need extra grid evaluations, which is what this term avoids.
        """
        if isinstance(self.encoding, GridEncoding) and self.encoding.keyframes > 1:  # keyframe grid (hash4d: 0)
            return keyframe_tv(self.encoding.embeddings)
        return self._dummy.new_zeros(())

    def time_smoothness(self, weights: Sequence[float], points: int = 4096, dt: float = 1.0 / 16.0) -> Tensor:
        """Per-level temporal smoothness ``Σ_ℓ weights[ℓ]·D_ℓ`` of a dynamic field (0 for static fields).

        - keyframe grid: ``D_ℓ`` = :func:`animate124.ops.keyframe_tv` of level ℓ's rows, i.e. the mean squared
          feature change between adjacent keyframes (Δτ = 1/(K−1)); computed on the tables, no grid evaluation.
        - hash4d: ``D_ℓ = mean_i ‖f_ℓ(x_i, τ_i + dt) − f_ℓ(x_i, τ_i)‖²`` of the 4D grid's level-ℓ features at
          ``points`` random points x_i in the box and times τ_i ~ U(0, 1 − dt) (finite differences across a small
          Δτ: two 4D-grid evaluations per step; the static 3D grid has no time dependence).

        Args:
            weights: One weight per level (coarsest first), e.g. ``λ·level_weights(L, decay)``.
            points: hash4d sample points per call.
            dt: hash4d time offset Δτ.

        Returns:
            Scalar tensor (attached to the graph).
        """
        enc = self.encoding
        if len(weights) != self.cfg.num_levels:
            raise ValueError(f"time_smoothness needs {self.cfg.num_levels} level weights, got {len(weights)}")
        if isinstance(enc, Hash4DEncoding):  # kind == hash4d
            grid = enc.grid4d
            x = (torch.rand(points, 3, device=self.device) * 2.0 - 1.0) * self.cfg.bound
            t = torch.rand(points, device=self.device) * (1.0 - dt)
            diff = (grid(x, t + dt) - grid(x, t)).view(points, self.cfg.num_levels, -1)
            per_level = diff.float().pow(2).sum(-1).mean(0)
            return (per_level * per_level.new_tensor(list(weights))).sum()
        total = self._dummy.new_zeros(())
        if enc.keyframes < 2:
            return total
        offsets = enc.level_offsets  # host list: no device sync
        for level, weight in enumerate(weights):
            if weight > 0:
                rows = enc.embeddings[:, offsets[level] : offsets[level + 1]]
                total = total + weight * keyframe_tv(rows)
        return total

    def param_groups(self, lr: float, grid_lr_scale: float) -> list[dict]:
        """Optimizer parameter groups: grid tables at ``lr·grid_lr_scale``, MLP at ``lr``.

        Args:
            lr: base (MLP) learning rate.
            grid_lr_scale: multiplier for the grid tables (spec: 1e-2 / 1e-3 = 10).

        Returns:
            [{"name": "grid", "params": [...], "lr": ...}, {"name": "mlp", "params": [...], "lr": ...}].
        """
        return [{"name": "grid", "params": list(self.encoding.parameters()), "lr": lr * grid_lr_scale},
                {"name": "mlp", "params": list(self.mlp.parameters()), "lr": lr}]
