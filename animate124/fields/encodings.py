"""Multiresolution grid encodings of world points (and time): keyframe grids and the hash4d grid pair."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from animate124.config.schema import EncodingKind, FieldConfig
from animate124.ops import grid_encode, grid_layout


def mask_levels(features: Tensor, active_levels: int | None, features_per_level: int) -> Tensor:
    """Zero the channels of levels ``>= active_levels`` (coarse-to-fine; None = keep all levels).

    Args:
        features: [N, L·F] level-major features.
        active_levels: number of (coarsest) levels kept, or None.
        features_per_level: F.

    Returns:
        [N, L·F] features; masked channels are exact zeros and receive no gradient.
    """
    if active_levels is None or active_levels * features_per_level >= features.shape[-1]:
        return features
    keep = torch.zeros(features.shape[-1], dtype=features.dtype, device=features.device)
    keep[: max(active_levels, 0) * features_per_level] = 1.0
    return features * keep


class GridEncoding(nn.Module):
    """A multiresolution grid over the scene box with K keyframe tables (K = 1: static), in 3D or 4D (xyzτ).

    The parameters are one tensor ``embeddings [K, total, F]`` in the layout of :func:`animate124.ops.grid_layout`
    (the CUDA kernel and the reference share it, so checkpoints transfer). Points are mapped from [-bound, bound]
    to [0, 1] and clamped. With ``dims = 4`` the fourth coordinate is ``clamp(τ, 0, 1)·time_scale``, so level ℓ has
    ``R_ℓ·time_scale`` cells along τ (see :class:`Hash4DEncoding`).

    Attributes:
        active_levels: None (all levels) or the number of coarse levels kept; the features of levels
            ``>= active_levels`` are zeroed. The static phase sets it for coarse-to-fine training (spec §4.2:
            ``L − 8`` levels for the first 3000 steps) and resets it to None afterwards.
    """

    def __init__(self, cfg: FieldConfig, keyframes: int = 1, dims: int = 3, *, kind: str | None = None,
                 log2_table_size: int | None = None, time_scale: float = 1.0) -> None:
        """Build the tables.

        Args:
            cfg: field config (levels, resolutions, table size, init scale, bound).
            keyframes: K keyframe tables interpolated linearly in τ (1 = static, τ ignored).
            dims: 3 (xyz) or 4 (xyzτ).
            kind: "hash" or "tiled"; default ``cfg.encoding``.
            log2_table_size: per-level table cap; default ``cfg.log2_table_size``.
            time_scale: factor applied to τ before it enters a 4D grid.
        """
        super().__init__()
        if keyframes < 1:
            raise ValueError(f"keyframes must be >= 1, got {keyframes}")
        self.kind = kind if kind is not None else EncodingKind(cfg.encoding).value
        self.dims = dims
        self.keyframes = keyframes
        self.bound = float(cfg.bound)
        self.time_scale = float(time_scale)
        self.features_per_level = cfg.features_per_level
        self.num_levels = cfg.num_levels
        log2 = cfg.log2_table_size if log2_table_size is None else log2_table_size
        offsets, resolutions = grid_layout(self.kind, cfg.num_levels, cfg.base_resolution, cfg.max_resolution, log2,
                                           dims)
        self.register_buffer("offsets", offsets, persistent=False)
        self.level_offsets: list[int] = [int(v) for v in offsets.tolist()]
        """The level offsets on the host (level ℓ's rows are ``level_offsets[ℓ] : level_offsets[ℓ + 1]``)."""
        self.register_buffer("resolutions", resolutions, persistent=False)
        table = torch.empty(keyframes, int(offsets[-1]), cfg.features_per_level)
        self.embeddings = nn.Parameter(table.uniform_(-cfg.init_scale, cfg.init_scale))
        self.active_levels: int | None = None

    @property
    def output_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """Encode world points.

        Args:
            x: [N, 3] world positions in [-bound, bound] (clamped).
            t: [N] times τ in [0, 1]; required for keyframes > 1 or dims = 4.

        Returns:
            [N, L·F] features (levels >= active_levels zeroed).
        """
        u = ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)
        needs_t = self.keyframes > 1 or self.dims == 4
        if needs_t and t is None:
            raise ValueError("this encoding is time-dependent: pass t [N] (scene time τ in [0, 1])")
        if self.dims == 4:
            u = torch.cat([u, (t.to(u.dtype).clamp(0.0, 1.0) * self.time_scale)[:, None]], dim=-1)
        feats = grid_encode(u, self.embeddings, self.offsets, self.resolutions, self.kind,
                            t=t.to(u.dtype) if self.keyframes > 1 else None)
        return mask_levels(feats, self.active_levels, self.features_per_level)


class Hash4DEncoding(nn.Module):
    """A static 3D grid plus a 4D (xyzτ) hash grid, features summed (4D-fy / threestudio style).

    The 3D grid has the static field's layout (``cfg.encoding``, ``cfg.log2_table_size``) so a static checkpoint
    copies into it; the 4D grid is hashed with ``cfg.log2_table_size_4d``. τ resolution: the op uses one resolution
    per level for all axes, so τ is pre-scaled by ``time_resolution_4d / max_resolution``; level ℓ then has
    ``R_ℓ·time_resolution_4d / max_resolution`` cells along τ, growing geometrically like the spatial resolution, from
    ``base·time_res / max_res`` (below one cell: a single linear ramp over [0, 1]) to ``time_resolution_4d`` at the
    finest level.

    Attributes:
        active_levels: as :class:`GridEncoding`, applied to the summed features.
    """

    def __init__(self, cfg: FieldConfig) -> None:
        super().__init__()
        self.grid3d = GridEncoding(cfg, 1, 3)
        self.grid4d = GridEncoding(cfg, 1, 4, kind="hash", log2_table_size=cfg.log2_table_size_4d,
                                   time_scale=cfg.time_resolution_4d / cfg.max_resolution)
        self.features_per_level = cfg.features_per_level
        self.active_levels: int | None = None

    @property
    def output_dim(self) -> int:
        return self.grid3d.output_dim

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """[N, 3] world points and [N] times (required) → [N, L·F] summed features."""
        if t is None:
            raise ValueError("hash4d encoding is time-dependent: pass t [N] (scene time τ in [0, 1])")
        feats = self.grid3d(x) + self.grid4d(x, t)
        return mask_levels(feats, self.active_levels, self.features_per_level)
