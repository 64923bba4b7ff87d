"""Clip sampler statistics (data/time.py, spec §6.4) and validation time grids."""

import pytest
import torch

from animate124.data.time import ClipSampler, rates_from_original, validation_times
from animate124.errors import ConfigError

DRAWS = 8000
# Binomial std of a rate near 0.1 over 8k draws is sqrt(0.1·0.9/8000) ≈ 0.0034; ±0.02 is ~6σ.
RATE_TOL = 0.02


def _draw(sampler: ClipSampler, n: int = DRAWS, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [sampler.sample(g) for _ in range(n)]


@pytest.mark.parametrize(
    "frames,precision,p0,p1",
    [(16, 256, 0.1, 0.1), (8, 64, 0.3, 0.05), (4, 32, 0.0, 0.5)],
)
def test_anchor_rates_strides_spans(frames, precision, p0, p1):
    sampler = ClipSampler(frames, precision, p0, p1)
    clips = _draw(sampler)
    start0 = sum(float(c.times[0]) == 0.0 for c in clips) / DRAWS
    end1 = sum(float(c.times[-1]) == 1.0 for c in clips) / DRAWS
    assert abs(start0 - p0) <= RATE_TOL
    assert abs(end1 - p1) <= RATE_TOL
    # The flags agree with the times.
    assert all(c.start_from_zero == (float(c.times[0]) == 0.0) for c in clips)
    assert all(c.end_at_one == (float(c.times[-1]) == 1.0) for c in clips)
    k_lo, k_hi = sampler.stride_range()
    assert (k_lo, k_hi) == (1, precision // frames)  # documented default k_max = P // F
    strides = {c.stride for c in clips}
    assert strides == set(range(k_lo, k_hi + 1))  # every stride occurs, none outside
    s_lo, s_hi = sampler.span_range()
    for c in clips[:1000]:
        t = c.times
        assert t.shape == (frames,)
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
        assert bool((t[1:] > t[:-1]).all())
        assert s_lo - 1e-6 <= c.span <= s_hi + 1e-6
        torch.testing.assert_close(t[1:] - t[:-1], torch.full((frames - 1,), c.stride / precision))


def test_original_defaults_give_ten_percent_each():
    # zero_rate 0.2, mirror 0.5 → 0.2·0.5 = 0.1 at each end (spec §6.4).
    assert rates_from_original(0.2, 0.5) == pytest.approx((0.1, 0.1))
    s = ClipSampler(16, 256, *rates_from_original())
    # Default max span = 15·16/256 = 0.9375.
    assert s.span_range() == pytest.approx((15 / 256, 240 / 256))


def test_stride_uniform():
    clips = _draw(ClipSampler(16, 256, 0.1, 0.1), n=8000, seed=1)
    counts = torch.bincount(torch.tensor([c.stride for c in clips]), minlength=17)[1:].float()
    # Uniform on 1..16: 500 each; std ≈ sqrt(500·15/16) ≈ 22; allow 6σ.
    assert float((counts - 500).abs().max()) < 135


def test_bad_configs_raise():
    with pytest.raises(ConfigError):
        ClipSampler(16, 256, 0.7, 0.5)
    with pytest.raises(ConfigError):
        ClipSampler(16, 20, max_stride=2)  # (F−1)·k_max = 30 > P − 2 = 18
    with pytest.raises(ConfigError):
        ClipSampler(0, 256)


def test_validation_times():
    torch.testing.assert_close(validation_times(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(validation_times(4, include_end=False), torch.tensor([0.0, 0.25, 0.5, 0.75]))
    assert validation_times(1).tolist() == [0.0]
