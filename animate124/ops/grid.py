"""Occupancy-grid helpers: Morton (Z-order) codes and bit packing. Not differentiable."""

from __future__ import annotations

from torch import Tensor

from animate124.ops._checks import check_float, check_int, check_same_device, check_values, dispatch

__all__ = ["morton3d", "morton3d_invert", "packbits"]


def morton3d(coords: Tensor) -> Tensor:
    """Morton code of integer 3D cell coordinates (10 bits per axis; x in the lowest bit of each triple).

    Args:
        coords: [N, 3] integer cell coordinates in [0, 1023].

    Returns:
        [N] int64 codes ``Σ_b x_b·2^(3b) + y_b·2^(3b+1) + z_b·2^(3b+2)``.

    Example:
        >>> morton3d(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 0]]))
        tensor([ 1,  2,  4,  9])
    """
    check_int("coords", coords, (None, 3))
    if coords.numel():
        check_values((coords.min() >= 0) & (coords.max() <= 1023), "coords must lie in [0, 1023] (10 bits per axis)")
    return dispatch("morton3d", coords)(coords.contiguous())


def morton3d_invert(idx: Tensor) -> Tensor:
    """Inverse of :func:`morton3d`.

    Args:
        idx: [N] integer Morton codes in [0, 2^30).

    Returns:
        [N, 3] int64 cell coordinates.

    Example:
        >>> morton3d_invert(torch.tensor([9]))
        tensor([[3, 0, 0]])
    """
    check_int("idx", idx, (None,))
    if idx.numel():
        check_values((idx.min() >= 0) & (idx.max() < 1 << 30), "Morton codes must lie in [0, 2^30)")
    return dispatch("morton3d_invert", idx)(idx.contiguous())


def packbits(grid: Tensor, thresh: float | Tensor) -> Tensor:
    """Threshold a Morton-ordered density grid into a bitfield: bit j of byte i = ``grid[8i + j] > thresh``.

    Args:
        grid: [S, R³] float32 densities of S time slots, cells in Morton order.
        thresh: a float, or a [S] tensor with one threshold per slot.

    Returns:
        [S, R³/8] uint8 bitfield.

    Example:
        >>> packbits(torch.tensor([[0.0, 2, 0, 0, 0, 0, 0, 3]]), 1.0)
        tensor([[130]], dtype=torch.uint8)
    """
    s = check_float("grid", grid, (None, None)).shape[0]
    if grid.shape[1] % 8:
        raise ValueError(f"grid must have a multiple of 8 cells per slot, got {grid.shape[1]}")
    if isinstance(thresh, Tensor):
        check_float("thresh", thresh, (s,))
        check_same_device(grid=grid, thresh=thresh)
        thresh = thresh.to(grid.dtype).contiguous()
    else:
        thresh = float(thresh)
    fn = dispatch("packbits", grid, *([thresh] if isinstance(thresh, Tensor) else []))
    return fn(grid.contiguous(), thresh)

