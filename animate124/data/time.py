"""Scene-time sampling for the dynamic phases: training clips (spec §6.4) and validation grids.

A training clip is F times on a lattice of ``precision`` P steps: τ_i = (s + i·k)/P, i = 0..F−1, with an
integer stride k and start s. The original (``DNeRFDataset.collate``) drew ``start_from_zero`` with
probability ``zero_rate`` = 0.2, otherwise a random start, then mirrored the clip (τ → 1 − τ, order kept)
with probability 0.5. Its consequences are what matters to training:

    P(start = 0) = zero_rate · (1 − mirror) = 0.2 · 0.5 = 0.1      (only non-mirrored anchored clips)
    P(end = 1)   = zero_rate · mirror       = 0.2 · 0.5 = 0.1      (only mirrored anchored clips)

(plus a small extra mass in the original, because its random start could also be 0). A random-start clip
mirrored is again a random-start clip, so mirroring only matters for anchored clips. This module
therefore samples the two anchors directly, with configurable target rates that hold EXACTLY:

* with probability ``start_zero_rate`` (p₀) the clip starts at τ = 0 (s = 0);
* with probability ``end_one_rate`` (p₁) it ends at τ = 1 (s = P − (F−1)k);
* otherwise (1 − p₀ − p₁) s is uniform on {1, …, P − (F−1)k − 1}, so the clip touches neither end.

Hence P(start = 0) = p₀ and P(end = 1) = p₁ exactly (for F ≥ 2; a one-frame clip cannot do both).
The original's ``zero_rate`` z and mirror probability m map to p₀ = z·(1 − m), p₁ = z·m
(:func:`rates_from_original`). Stride k is uniform on {1, …, k_max}, k_max = ``max_stride`` or P // F
(16 for P = 256, F = 16 — the original's range, whose k = 16 had probability 1/241 instead of 1/16).
Span = (F − 1)·k / P ∈ [(F−1)/P, (F−1)·k_max/P] ⊂ [0, 1). Times are strictly increasing in [0, 1].

Validation uses :func:`validation_times` (n frames on [0, 1], both ends included; the original rendered
i/64, i = 0..63, never τ = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from animate124.errors import ConfigError


@dataclass
class Clip:
    """One sampled training clip."""

    times: Tensor
    """[F] float32 scene times τ, strictly increasing in [0, 1]."""
    start: int
    """Lattice index s of the first frame (τ₀ = s / precision)."""
    stride: int
    """Lattice stride k between frames."""
    start_from_zero: bool
    """The first frame is τ = 0 (Zero-1-to-3 SDS is applied to it)."""
    end_at_one: bool
    """The last frame is τ = 1."""

    @property
    def span(self) -> float:
        """τ_last − τ_first."""
        return float(self.times[-1] - self.times[0])


def rates_from_original(zero_rate: float = 0.2, mirror_rate: float = 0.5) -> tuple[float, float]:
    """(P(start=0), P(end=1)) of the original's zero_rate + mirroring scheme: (z·(1−m), z·m)."""
    return zero_rate * (1.0 - mirror_rate), zero_rate * mirror_rate


class ClipSampler:
    """Draws training clips with exact first/last-frame oversampling (module docstring).

    Args:
        num_frames: F, frames per clip (≥ 1).
        precision: P, lattice steps of [0, 1] (the original's 256).
        start_zero_rate: p₀ = P(τ₀ = 0).
        end_one_rate: p₁ = P(τ_{F−1} = 1).
        max_stride: largest stride k_max (None = P // F).

    Example:
        >>> sampler = ClipSampler(16, 256, 0.1, 0.1)
        >>> clip = sampler.sample(torch.Generator().manual_seed(0))
        >>> clip.times.shape
        torch.Size([16])
    """

    def __init__(
        self,
        num_frames: int = 16,
        precision: int = 256,
        start_zero_rate: float = 0.1,
        end_one_rate: float = 0.1,
        max_stride: int | None = None,
    ) -> None:
        if num_frames < 1:
            raise ConfigError(f"num_frames={num_frames} must be ≥ 1; set phase.num_frames to a positive integer")
        if not (0.0 <= start_zero_rate and 0.0 <= end_one_rate and start_zero_rate + end_one_rate <= 1.0):
            raise ConfigError(
                f"start_zero_rate={start_zero_rate} and end_one_rate={end_one_rate} must be ≥ 0 with sum ≤ 1; "
                "fix phase.clip.start_zero_rate / phase.clip.end_one_rate"
            )
        k_max = max_stride if max_stride is not None else max(1, precision // num_frames)
        # The random-start case needs at least one interior start: (F−1)·k_max ≤ P − 2.
        if k_max < 1 or (num_frames - 1) * k_max > precision - 2:
            raise ConfigError(
                f"clip of {num_frames} frames with max stride {k_max} does not fit a precision of {precision} "
                f"(need (F-1)·k_max ≤ P-2); raise phase.clip.precision or lower phase.clip.max_stride"
            )
        self.num_frames = num_frames
        self.precision = precision
        self.start_zero_rate = start_zero_rate
        self.end_one_rate = end_one_rate
        self.max_stride = k_max

    def sample(self, generator: torch.Generator | None = None) -> Clip:
        """Draw one clip (CPU random numbers from ``generator``)."""
        u, v = torch.rand(2, generator=generator).tolist()
        stride = int(torch.randint(1, self.max_stride + 1, (1,), generator=generator))
        n, p = self.num_frames, self.precision
        last_start = p - (n - 1) * stride  # the start that makes the clip end at τ = 1
        if u < self.start_zero_rate:
            start = 0
        elif u < self.start_zero_rate + self.end_one_rate:
            start = last_start
        else:  # uniform on {1, …, last_start − 1}: touches neither end
            start = 1 + min(int(v * (last_start - 1)), last_start - 2)
        idx = start + stride * torch.arange(n, dtype=torch.float64)
        times = (idx / p).to(torch.float32)
        return Clip(times=times, start=start, stride=stride, start_from_zero=start == 0, end_at_one=start == last_start)

    def stride_range(self) -> tuple[int, int]:
        """(min, max) stride."""
        return 1, self.max_stride

    def span_range(self) -> tuple[float, float]:
        """(min, max) clip span τ_last − τ_first."""
        f = self.num_frames - 1
        return f / self.precision, f * self.max_stride / self.precision


def validation_times(num_frames: int, include_end: bool = True) -> Tensor:
    """[num_frames] τ grid for validation/export videos: linspace(0, 1) (or i/n, i < n, when not include_end)."""
    if num_frames < 1:
        raise ConfigError(f"num_frames={num_frames} must be ≥ 1; set the validation frame count to a positive integer")
    if num_frames == 1:
        return torch.zeros(1)
    if include_end:
        return torch.linspace(0.0, 1.0, num_frames)
    return torch.arange(num_frames, dtype=torch.float32) / num_frames
