"""Time-sliced occupancy grid for empty-space skipping (spec §5.2, DESIGN.md §4).

One R³ grid per time slot, stored in Morton (Z-order) cell order as in the original and the kernels:
``grid[s, m]`` is the EMA-max density of the cell ``ops.morton3d_invert(m)`` = (x, y, z) integer coordinates, and
``bitfield[s, m // 8]`` bit ``m % 8`` says whether that cell is occupied.

Slot of a scene time τ: ``clamp(floor(τ·S), 0, S−1)``; slot k is estimated at its own centre (k + 0.5)/S with a
jitter of ±0.5/S (the original collapsed every slot to τ = 0.5 after the static→dynamic hand-off, spec §14.1; here
``slot_times`` is derived from S and deliberately not part of the state dict, so no checkpoint can bring that back).

Initial state: ``grid`` = 0 and every bit set, i.e. everything is occupied until the first :meth:`update`, so renders
before the first refresh are not empty (the first update always evaluates every cell, whatever ``update_fraction``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from animate124 import ops
from animate124.errors import ConfigError

if TYPE_CHECKING:
    from animate124.config.schema import RenderConfig

DensityFn = Callable[[Tensor, Optional[Tensor]], Tensor]
"""σ = density_fn(x [N, 3], t [N] | None) → [N] activated density."""

_UPDATE_CHUNK = 1 << 18
"""Points per density_fn call during an update (bounds the memory of one refresh)."""


class OccupancyGrid(nn.Module):
    """Per-time-slot occupancy grids with EMA-max density and packed bitfields.

    Args:
        resolution: cells per axis R (a power of two ≥ 2).
        time_slots: number of time slots S (1 for a static scene).
        bound: the grid covers [−bound, bound]³.
        decay: EMA-max decay applied to a cell's old value when it is re-evaluated.
        density_thresh: the occupancy threshold is min(mean grid density of the slot, density_thresh).
        update_fraction: fraction of cells re-evaluated per update (plus every currently occupied cell);
            1.0 = all cells every time (the original).

    Example:
        >>> occ = OccupancyGrid(resolution=64, time_slots=16)
        >>> occ.update(field.density)              # field.density(x [N,3], t [N] | None) -> [N]
        >>> slots = occ.slots_of(times)            # [N] int64 → occ.bitfield[slots]
    """

    def __init__(
        self,
        resolution: int = 128,
        time_slots: int = 1,
        bound: float = 1.0,
        decay: float = 0.95,
        density_thresh: float = 10.0,
        update_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        if resolution < 2 or resolution & (resolution - 1):
            raise ConfigError(f"occupancy grid resolution must be a power of two >= 2, got {resolution}; "
                              "set render.grid_resolution to e.g. 64 or 128")
        if time_slots < 1:
            raise ConfigError(f"occupancy time_slots must be >= 1, got {time_slots}; use 1 (static) or e.g. 16")
        if not 0.0 < update_fraction <= 1.0:
            raise ConfigError(f"render.update_fraction must be in (0, 1], got {update_fraction}; use 1.0 for all cells")
        self.resolution = int(resolution)
        self.time_slots = int(time_slots)
        self.bound = float(bound)
        self.decay = float(decay)
        self.density_thresh = float(density_thresh)
        self.update_fraction = float(update_fraction)
        n_cells = self.resolution**3
        self.register_buffer("grid", torch.zeros(self.time_slots, n_cells))
        self.register_buffer("bitfield", torch.full((self.time_slots, n_cells // 8), 255, dtype=torch.uint8))
        self.register_buffer("mean_density", torch.zeros(self.time_slots))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        slot_times = (torch.arange(self.time_slots, dtype=torch.float32) + 0.5) / self.time_slots
        self.register_buffer("slot_times", slot_times, persistent=False)

    @property
    def n_cells(self) -> int:
        return self.resolution**3

    @property
    def cell_size(self) -> float:
        """Edge length of one cell in world units (2·bound / R)."""
        return 2.0 * self.bound / self.resolution

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, time_slots={self.time_slots}, bound={self.bound}, decay={self.decay}, "
                f"density_thresh={self.density_thresh}, update_fraction={self.update_fraction}")

    def slots_of(self, times: Tensor) -> Tensor:
        """Time slot of each scene time: clamp(floor(τ·S), 0, S−1).

        Args:
            times: [N] τ in [0, 1].

        Returns:
            [N] int64 slot indices.
        """
        return torch.floor(times.float() * self.time_slots).long().clamp(0, self.time_slots - 1)

    def thresholds(self) -> Tensor:
        """[S] occupancy threshold of each slot: min(mean_density, density_thresh)."""
        return self.mean_density.clamp(max=self.density_thresh)

    def cell_centres(self, morton_idx: Tensor) -> Tensor:
        """World positions [N, 3] of the centres of the cells with Morton indices ``morton_idx`` [N]."""
        coords = ops.morton3d_invert(morton_idx).to(self.grid.dtype)
        return ((coords + 0.5) * (2.0 / self.resolution) - 1.0) * self.bound

    @torch.no_grad()
    def update(
        self,
        density_fn: DensityFn,
        generator: torch.Generator | None = None,
        dynamic: bool | None = None,
    ) -> None:
        """Re-estimate the grid: grid = max(grid·decay, σ(jittered cell point, jittered slot time)), then rebuild bits.

        Each evaluated cell gets one point uniform in the cell (centre ± half a cell) and, for dynamic fields, one time
        slot_time ± 0.5/S. The threshold of slot s is min(mean(grid[s]), density_thresh).

        Args:
            density_fn: σ(x [N, 3], t [N] | None) → [N]; called under no_grad in chunks of 2^18 points.
            generator: torch generator for the jitter and the cell subset (on any device; None: global RNG).
            dynamic: pass times to density_fn (default: time_slots > 1); False passes t = None.
        """
        dynamic = self.time_slots > 1 if dynamic is None else dynamic
        full = self.update_fraction >= 1.0 or int(self.num_updates) == 0
        thresholds = self.thresholds()
        for s in range(self.time_slots):
            idx = self._cells_to_update(s, full, thresholds[s], generator)
            new = torch.empty(idx.shape[0], device=self.grid.device, dtype=self.grid.dtype)
            for start in range(0, idx.shape[0], _UPDATE_CHUNK):
                chunk = idx[start : start + _UPDATE_CHUNK]
                new[start : start + chunk.shape[0]] = self._evaluate(density_fn, chunk, s, dynamic, generator)
            self.grid[s, idx] = torch.maximum(self.grid[s, idx] * self.decay, new)
        self.mean_density.copy_(self.grid.clamp(min=0).mean(dim=1))
        self.bitfield.copy_(ops.packbits(self.grid, self.thresholds()))
        self.num_updates += 1

    def maybe_update(
        self, step: int, interval: int, density_fn: DensityFn, generator: torch.Generator | None = None
    ) -> bool:
        """Update when ``step % interval == 0`` (checked before the step, so step 0 refreshes too; spec §5.2).

        Returns:
            Whether an update ran.
        """
        if interval <= 0 or step % interval:
            return False
        self.update(density_fn, generator=generator)
        return True

    def _rand(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        gen_device = generator.device if generator is not None else self.grid.device
        return torch.rand(shape, generator=generator, device=gen_device).to(self.grid.device)

    def _cells_to_update(self, slot: int, full: bool, threshold: Tensor, generator: torch.Generator | None) -> Tensor:
        device = self.grid.device
        if full:
            return torch.arange(self.n_cells, device=device)
        n = max(1, int(self.update_fraction * self.n_cells))
        gen_device = generator.device if generator is not None else device
        random_cells = torch.randint(self.n_cells, (n,), generator=generator, device=gen_device).to(device)
        occupied = (self.grid[slot] > threshold).nonzero().squeeze(-1)
        return torch.unique(torch.cat([random_cells, occupied]))

    def _evaluate(
        self, density_fn: DensityFn, idx: Tensor, slot: int, dynamic: bool, generator: torch.Generator | None
    ) -> Tensor:
        half_cell = self.bound / self.resolution
        x = self.cell_centres(idx) + (2.0 * self._rand((idx.shape[0], 3), generator) - 1.0) * half_cell
        t = None
        if dynamic:
            jitter = (2.0 * self._rand((idx.shape[0],), generator) - 1.0) * (0.5 / self.time_slots)
            t = (self.slot_times[slot] + jitter).clamp(0.0, 1.0)
        sigma = density_fn(x, t)
        return sigma.reshape(-1).to(self.grid.dtype)

    def occupied(self, slot: int = 0) -> Tensor:
        """Occupancy of slot ``slot`` from its bitfield as a dense [R, R, R] bool tensor indexed [x, y, z].

        Bit k of byte b is the cell with Morton index 8b + k (the kernels' packbits convention).
        """
        shifts = torch.arange(8, device=self.bitfield.device, dtype=torch.uint8)
        bits = ((self.bitfield[slot].unsqueeze(-1) >> shifts) & 1).reshape(-1).bool()  # [R³] Morton order
        coords = ops.morton3d_invert(torch.arange(self.n_cells, device=self.bitfield.device)).long()
        dense = torch.zeros(self.resolution, self.resolution, self.resolution, dtype=torch.bool, device=bits.device)
        dense[coords[:, 0], coords[:, 1], coords[:, 2]] = bits
        return dense

    def occupancy_ratio(self, slot: int | None = None) -> float:
        """Fraction of occupied cells (of one slot, or of all slots), from the bitfields."""
        bf = self.bitfield if slot is None else self.bitfield[slot : slot + 1]
        shifts = torch.arange(8, device=bf.device, dtype=torch.uint8)
        return float(((bf.unsqueeze(-1) >> shifts) & 1).float().mean())

    @classmethod
    def from_config(cls, render: RenderConfig, time_slots: int, bound: float, density_thresh: float | None = None,
                    resolution: int | None = None) -> OccupancyGrid:
        """The grid a phase (or a loaded scene) uses: ``render``'s resolution, decay, threshold and update fraction.

        Args:
            render: the run's render settings (``grid_resolution``, ``occupancy_decay``, ``density_thresh``,
                ``update_fraction``).
            time_slots: S (the phase's ``time_slots``).
            bound: the field's bound.
            density_thresh: overrides ``render.density_thresh`` (fit's ``occupancy_thresh``).
            resolution: overrides ``render.grid_resolution`` (a checkpoint's own grid size).
        """
        return cls(render.grid_resolution if resolution is None else int(resolution), time_slots, bound,
                   render.occupancy_decay, render.density_thresh if density_thresh is None else density_thresh,
                   render.update_fraction)

    @classmethod
    def from_static(
        cls,
        static: OccupancyGrid,
        density_fn: DensityFn,
        time_slots: int = 16,
        generator: torch.Generator | None = None,
    ) -> OccupancyGrid:
        """A fresh S-slot grid for the dynamic phase, each slot RE-ESTIMATED at its own times.

        The static grid's values are not copied (copying its single slot into every slot is how the original lost
        the slot times, spec §14.1): the new grid keeps the static grid's settings and device, and one full
        :meth:`update` with the dynamic field's ``density_fn`` (which at the hand-off reproduces the static field at
        every τ) fills all slots at (k + 0.5)/S ± 0.5/S.

        Args:
            static: the static phase's grid (settings and device are taken from it).
            density_fn: σ(x [N, 3], t [N]) of the dynamic field.
            time_slots: S.
            generator: torch generator for the jitter.

        Returns:
            The new grid, already updated once.
        """
        grid = cls(static.resolution, time_slots, static.bound, static.decay, static.density_thresh,
                   static.update_fraction).to(static.grid.device)
        grid.update(density_fn, generator=generator, dynamic=True)
        return grid


class PosedAlphas(Protocol):
    """Training views with alpha masks (e.g. ``data.dnerf.DNeRFSplit``), as :func:`carve_occupancy` reads them."""

    c2w: Tensor
    """[N, 4, 4] camera-to-world (OpenGL: the camera looks down −z)."""
    times: Tensor
    """[N] scene time of each view."""
    alphas: Tensor
    """[N, H, W, 1] alpha in [0, 1]."""
    focal: float
    """Focal length in pixels."""
    width: int
    height: int

    def __len__(self) -> int: ...


@torch.no_grad()
def carve_occupancy(occupancy: OccupancyGrid, data: PosedAlphas, alpha_thresh: float = 0.01) -> Tensor:
    """Visual-hull bound of each time slot from the training alphas: [S, R³/8] uint8 bitfield (Morton order).

    A cell is carved from slot s when some training view whose time lies in slot s projects the cell centre onto a
    pixel whose alpha, max-pooled over about one cell's footprint, is below ``alpha_thresh``. Each view only knows
    its own time, so the result is then dilated by one slot on each side (motion within a slot).

    Args:
        occupancy: The grid (its resolution, slots and bound are used; nothing is modified).
        data: Training views with alphas (see :class:`PosedAlphas`).
        alpha_thresh: Alpha below which a pixel is empty.
    """
    n_cells, slots = occupancy.n_cells, occupancy.time_slots
    centres = occupancy.cell_centres(torch.arange(n_cells, device=occupancy.grid.device)).cpu()  # [R³, 3]
    keep = torch.ones(slots, n_cells, dtype=torch.bool)
    view_slots = occupancy.slots_of(data.times)
    for k in range(len(data)):
        c2w = data.c2w[k]
        cam = (centres - c2w[:3, 3]) @ c2w[:3, :3]  # world → camera (OpenGL: the camera looks down −z)
        depth = -cam[:, 2]
        # pool over the projected half-diagonal of a cell at the nearest depth the object can have (|o| − bound)
        near = max(float(c2w[:3, 3].norm()) - occupancy.bound, 0.5 * float(c2w[:3, 3].norm()))
        radius = int(math.ceil(0.5 * math.sqrt(3.0) * occupancy.cell_size * data.focal / near))
        alpha = F.max_pool2d(data.alphas[k, None, :, :, 0], 2 * radius + 1, stride=1, padding=radius)[0]
        col = cam[:, 0] / depth.clamp_min(1e-6) * data.focal + 0.5 * data.width
        row = -cam[:, 1] / depth.clamp_min(1e-6) * data.focal + 0.5 * data.height
        inside = (depth > 0) & (col >= 0) & (col < data.width) & (row >= 0) & (row < data.height)
        ci, ri = col.long().clamp(0, data.width - 1), row.long().clamp(0, data.height - 1)
        empty = inside & (alpha[ri, ci] < alpha_thresh)
        keep[int(view_slots[k])] &= ~empty
    dilated = keep.clone()
    dilated[1:] |= keep[:-1]
    dilated[:-1] |= keep[1:]
    return ops.packbits(dilated.float().to(occupancy.grid.device), 0.5)
