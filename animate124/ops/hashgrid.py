"""Multiresolution grid encoding (tiled or hashed, 3D or 4D) with optional keyframe-time interpolation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from animate124.ops._checks import check_float, check_int, check_same_device, check_values, dispatch

__all__ = ["grid_layout", "grid_encode", "keyframe_tv"]

GRID_KINDS = ("hash", "tiled")


def grid_layout(kind: str, num_levels: int, base_res: int, max_res: int, log2_table: int,
                dims: int) -> tuple[Tensor, Tensor]:
    """Per-level resolutions and table offsets of a multiresolution grid (torch-ngp's layout).

    Per-level scale ``b = 2^(log2(max_res / base_res) / (L − 1))``, resolution ``R_ℓ = ceil(base_res·b^ℓ)``
    (cells per axis, so ``R_ℓ + 1`` vertices), level size ``ceil8(min((R_ℓ + 1)^D, 2^log2_table))``. The layout is the
    same for both kinds; ``kind`` only changes how rows are indexed (see :func:`grid_encode`).

    Args:
        kind: "hash" or "tiled".
        num_levels: L.
        base_res: resolution of level 0.
        max_res: resolution of level L − 1.
        log2_table: log2 of the cap on a level's table size.
        dims: D, 3 (xyz) or 4 (xyzτ).

    Returns:
        offsets: [L + 1] int64 first row of each level (offsets[-1] = total rows).
        resolutions: [L] int64 R_ℓ.

    Example:
        >>> offsets, res = grid_layout("tiled", 16, 16, 2048, 16, 3)
        >>> int(offsets[-1]), res[:3].tolist()
        (903480, [16, 23, 31])
    """
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    if dims not in (3, 4):
        raise ValueError(f"dims must be 3 or 4, got {dims}")
    if num_levels < 1 or base_res < 1 or max_res < base_res or not 3 <= log2_table <= 30:
        raise ValueError(f"bad grid layout: levels {num_levels}, base {base_res}, max {max_res}, log2 {log2_table}")
    scale = 2.0 ** (math.log2(max_res / base_res) / (num_levels - 1)) if num_levels > 1 else 1.0
    resolutions, sizes = [], []
    for level in range(num_levels):
        res = int(math.ceil(base_res * scale ** level))
        size = min((res + 1) ** dims, 1 << log2_table)
        resolutions.append(res)
        sizes.append(int(math.ceil(size / 8) * 8))
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return torch.tensor(offsets, dtype=torch.int64), torch.tensor(resolutions, dtype=torch.int64)


def grid_encode(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor, kind: str,
                t: Tensor | None = None) -> Tensor:
    """Multiresolution d-linear grid features, optionally interpolated between K keyframe tables.

    Level ℓ: ``pos = x·R_ℓ``, cell ``c = clamp(floor(pos), 0, R_ℓ − 1)`` per axis, weights ``pos − c``; the 2^D corner
    vertices (``R_ℓ + 1`` per axis) index rows of ``embeddings[:, offsets[ℓ]:offsets[ℓ+1]]`` (level size S_ℓ):

    - ``tiled``: dense ``Σ_d v_d·(R_ℓ+1)^d`` modulo S_ℓ (periodic aliasing on levels larger than the table);
    - ``hash``: the dense index if ``(R_ℓ+1)^D ≤ S_ℓ``, else ``XOR_d (v_d·π_d mod 2^32)`` modulo S_ℓ with primes
      π = (1, 2654435761, 805459861, 3674653429) (uint32 arithmetic, as in Instant-NGP / torch-ngp).

    Keyframes (K > 1): ``g = clamp(t, 0, 1)·(K − 1)``, ``i0 = floor(g)``, ``i1 = min(i0 + 1, K − 1)``, ``w = g − i0``,
    features ``(1 − w)·E_i0 + w·E_i1`` (the spatial corners and weights are computed once for both keyframes).
    With K == 1, ``t`` is ignored.

    Differentiable w.r.t. ``embeddings`` only (not ``x`` or ``t``); the reference path also supports double backward.

    Args:
        x: [N, D] float coordinates in [0, 1] (D = 3 or 4).
        embeddings: [K, total, F] float tables (K keyframes).
        offsets: [L + 1] int64 from :func:`grid_layout` (``offsets[-1] == total``).
        resolutions: [L] int64 from :func:`grid_layout`.
        kind: "hash" or "tiled".
        t: [N] times τ in [0, 1]; required when K > 1.

    Returns:
        [N, L·F] features, level-major (channels ``ℓF .. ℓF + F − 1`` belong to level ℓ).

    Example:
        >>> offsets, res = grid_layout("tiled", 16, 16, 2048, 16, 3)
        >>> emb = torch.nn.Parameter(torch.empty(64, int(offsets[-1]), 2).uniform_(-1e-4, 1e-4))
        >>> feats = grid_encode(torch.rand(1024, 3), emb, offsets, res, "tiled", t=torch.rand(1024))  # [1024, 32]
    """
    n, dims = check_float("x", x, (None, None)).shape
    if dims not in (3, 4):
        raise ValueError(f"x must have 3 or 4 columns, got {dims}")
    k, total, _ = check_float("embeddings", embeddings, (None, None, None)).shape
    n_levels = check_int("resolutions", resolutions, (None,)).shape[0]
    check_int("offsets", offsets, (n_levels + 1,))
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    check_values(offsets[-1] == total, f"offsets[-1] must equal the table length {total}")  # no host sync on CUDA
    tensors = {"x": x, "embeddings": embeddings, "offsets": offsets, "resolutions": resolutions}
    if k > 1:
        if t is None:
            raise ValueError(f"t is required with {k} keyframe tables")
        check_float("t", t, (n,))
        tensors["t"] = t
    check_same_device(**tensors)
    fn = dispatch("grid_encode", x, embeddings)
    t_arg = t.contiguous() if (k > 1 and t is not None) else None
    return fn(x.contiguous(), embeddings.contiguous(), offsets.long().contiguous(), resolutions.long().contiguous(),
              kind, t_arg)


def keyframe_tv(embeddings: Tensor) -> Tensor:
    """Temporal total variation of keyframe tables, computed on the tables (no grid evaluations; spec §14.5).

    ``mean_{k ∈ [0, K−2], rows r} ‖E_k[r] − E_{k+1}[r]‖²`` (squared norm over the F features of a row);
    0 (still attached to the graph) when K == 1. Differentiable w.r.t. ``embeddings``.

    Args:
        embeddings: [K, total, F] keyframe tables.

    Returns:
        Scalar tensor.

    Example:
        >>> loss = 0.1 * keyframe_tv(field.encoding.embeddings)
    """
    check_float("embeddings", embeddings, (None, None, None))
    return dispatch("keyframe_tv", embeddings)(embeddings)
