"""SDS math (guidance/sds.py), the analytic denoiser (guidance/analytic.py) and the losses (losses.py)."""

import math

import pytest
import torch

from animate124 import losses
from animate124.config.guidance import Weighting
from animate124.guidance.analytic import AnalyticGuidance, sd_alphas_cumprod
from animate124.guidance.sds import (
    TimestepSampler,
    add_noise,
    cfg_combine,
    guided_sds,
    sds_grad,
    sds_loss,
    sds_weight,
)
from animate124.types import GuidanceContext

EXACT = 1e-6  # fp32 round-off of a handful of multiplications


def _ctx(step=0, b=1, f=1):
    z = torch.zeros(b, f)
    return GuidanceContext(step=step, elevation=z, azimuth=z, radius=z + 1.8)


def test_cfg_standard_form_hand_case():
    # ε_u = 1, ε_c = 3, s = 7.5: 1 + 7.5·(3 − 1) = 16
    out = cfg_combine(torch.tensor([1.0]), torch.tensor([3.0]), 7.5)
    assert out.item() == pytest.approx(16.0)
    # original form ε_c + s'(ε_c − ε_u) with s' = 100 equals standard with 101: 3 + 100·2 = 203 = 1 + 101·2
    assert cfg_combine(torch.tensor([1.0]), torch.tensor([3.0]), 101.0).item() == pytest.approx(3 + 100 * 2)


def test_timestep_sampler_bounds_and_annealing():
    s = TimestepSampler(1000, 0.2, 0.6)
    assert s.bounds(0) == (200, 600)
    t = s.sample(0, 4000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 200 and t.max() <= 600 and t.dtype == torch.int64
    assert t.min() == 200 and t.max() == 600  # both ends reachable (4000 draws over 401 values)
    a = TimestepSampler(1000, 0.02, 0.98, anneal_steps=100, t_max_final=0.5)
    assert a.bounds(0) == (20, 980) and a.bounds(50) == (20, 740) and a.bounds(1000) == (20, 500)
    with pytest.raises(ValueError):
        TimestepSampler(1000, 0.7, 0.6)
    from animate124.config.guidance import StableDiffusionGuidanceConfig

    assert TimestepSampler.from_config(StableDiffusionGuidanceConfig()).bounds(10**6) == (200, 600)


def test_weights_hand_values():
    acp = sd_alphas_cumprod()
    t = torch.tensor([200, 600])
    # spec §7.3: ᾱ_200 ≈ 0.754, ᾱ_600 ≈ 0.161
    assert acp[200].item() == pytest.approx(0.754, abs=2e-3) and acp[600].item() == pytest.approx(0.161, abs=2e-3)
    w = sds_weight(acp, t, Weighting.one_minus_alpha)
    torch.testing.assert_close(w, 1 - acp[t])
    w2 = sds_weight(acp, t, Weighting.sqrt_snr_inv)
    torch.testing.assert_close(w2, torch.sqrt((1 - acp[t]) / acp[t]))
    assert torch.equal(sds_weight(acp, t, Weighting.uniform), torch.ones(2))


def test_diffusers_schedule_matches():
    from animate124.guidance.models import sd_scheduler

    torch.testing.assert_close(sd_scheduler().alphas_cumprod.float(), sd_alphas_cumprod())


def test_reparameterised_loss_gradient_is_exact():
    z = torch.randn(1, 4, 8, 8, requires_grad=True)
    grad = torch.randn(1, 4, 8, 8)
    loss = sds_loss(z, grad)
    loss.backward()
    assert torch.allclose(z.grad, grad, atol=EXACT, rtol=0)
    assert loss.item() == pytest.approx(0.5 * grad.square().sum().item(), rel=1e-5)
    # batch normaliser: B = 2 → grad / 2; explicit batch_size=1 keeps it exact
    z2 = torch.randn(2, 3, requires_grad=True)
    g2 = torch.randn(2, 3)
    sds_loss(z2, g2).backward()
    assert torch.allclose(z2.grad, g2 / 2, atol=EXACT)
    z2.grad = None
    sds_loss(z2, g2, batch_size=1).backward()
    assert torch.allclose(z2.grad, g2, atol=EXACT)


def test_guided_sds_gradient_equals_weighted_residual():
    acp = sd_alphas_cumprod()
    z = torch.randn(2, 4, 4, 4, requires_grad=True)
    noise = torch.randn(2, 4, 4, 4)
    t = torch.tensor([250, 500])
    eps_u = torch.randn(2, 4, 4, 4)
    delta = torch.randn(2, 4, 4, 4)
    seen = {}

    def predict(z_t, tt):
        seen["z_t"] = z_t
        return eps_u, eps_u + delta

    res = guided_sds(z, acp, t, predict, cfg_scale=5.0, weighting=Weighting.one_minus_alpha, scale=3.0,
                     noise=noise, batch_size=1)
    res.loss.backward()
    w = 3.0 * (1 - acp[t]).view(2, 1, 1, 1)
    expected = w * (eps_u + 5.0 * delta - noise)
    assert torch.allclose(z.grad, expected, atol=1e-5)
    torch.testing.assert_close(seen["z_t"], add_noise(z.detach(), noise, acp, t))
    a = acp[t].view(2, 1, 1, 1)
    torch.testing.assert_close(seen["z_t"], a.sqrt() * z.detach() + (1 - a).sqrt() * noise)
    assert set(res.stats("sd")) == {"sd/loss", "sd/grad_abs", "sd/t"}


def test_sds_grad_scalar_and_vector_weight():
    e, n = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.equal(sds_grad(e, n, torch.tensor([2.0, 3.0])), torch.tensor([[2.0] * 3, [3.0] * 3]))
    assert torch.equal(sds_grad(e, n, torch.tensor(0.5)), torch.full((2, 3), 0.5))


def test_analytic_gradient_pulls_to_target():
    # ε̂ − ε = √(ᾱ/(1−ᾱ))·(z − z*): with w = 1 − ᾱ the gradient is √(ᾱ(1−ᾱ))·(z − z*) (noise cancels)
    target = torch.rand(1, 3, 8, 8)
    term = AnalyticGuidance(target, t_min=0.5, t_max=0.5)
    img = torch.rand(1, 1, 3, 8, 8, requires_grad=True)
    term(img, _ctx()).loss.backward()
    a = sd_alphas_cumprod()[500]
    # z = 2x − 1 → dz/dx = 2
    expected = 2 * math.sqrt(a * (1 - a)) * ((2 * img.detach() - 1) - (2 * target - 1))
    assert torch.allclose(img.grad, expected, atol=1e-4)


def test_analytic_video_and_linear_vae_shapes():
    target = torch.rand(2, 4, 3, 16, 16)
    enc = torch.randn(4, 3)
    term = AnalyticGuidance(target, encoder=enc, downsample=4)
    video = torch.rand(2, 4, 3, 32, 32, requires_grad=True)  # resized to 16² inside
    out = term(video, _ctx(b=2, f=4))
    out.loss.backward()
    assert video.grad.abs().sum() > 0 and "analytic/mse" in out.stats
    assert term.encode(target).shape == (2, 4, 4, 4, 4)


def test_analytic_sgd_on_pixels_converges():
    target = torch.rand(1, 3, 8, 8)
    x = torch.full((1, 1, 3, 8, 8), 0.5, requires_grad=True)
    term = AnalyticGuidance(target)
    opt = torch.optim.Adam([x], lr=0.05)
    err0 = (x.detach()[0] - target).square().mean().item()
    for step in range(150):
        opt.zero_grad()
        term(x, _ctx(step)).loss.backward()
        opt.step()
    err = (x.detach()[0] - target).square().mean().item()
    assert err < err0 / 50


# ----------------------------------------------------------------------------------- losses (hand cases)


def test_reference_losses_hand_cases():
    pred = torch.tensor([1.0, 0.0, 0.5, 0.5])
    gt = torch.tensor([0.0, 0.0, 0.5, 1.0])
    m = torch.tensor([1.0, 1.0, 1.0, 0.0])
    # masked: (1−0)² + 0 + 0 + 0 → 1/4
    assert losses.masked_rgb_loss(pred, gt, m).item() == pytest.approx(0.25)
    # mask: (1−1)² + (0−1)² + (0.5−1)² + (0.5−0)² = 0 + 1 + 0.25 + 0.25 → 1.5/4
    assert losses.mask_loss(pred, m).item() == pytest.approx(0.375)
    # depth: perfectly (anti-)correlated on the mask → 0 / 1
    d = torch.tensor([1.0, 2.0, 3.0, 9.0])
    assert losses.depth_pearson_loss(2 * d + 1, d, m).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.depth_pearson_loss(-d, d, m).item() == pytest.approx(1.0, abs=1e-6)


def test_nonzero_normalize_depth_hand_case():
    d = torch.tensor([0.0, 2.0, 4.0, 8.0])
    m = torch.tensor([False, True, True, True])
    # (d − 2)/8 clamped: [−0.25→0, 0, 0.25, 0.75]
    torch.testing.assert_close(losses.nonzero_normalize_depth(d, m), torch.tensor([0.0, 0.0, 0.25, 0.75]))


def test_entropy_orientation_normals_ramp():
    # w = 0.5: −0.5·log2 0.5 ·2 = 1; w = 1 clamps to ≈ 0
    assert losses.opacity_entropy(torch.tensor([0.5])).item() == pytest.approx(1.0)
    assert losses.opacity_entropy(torch.tensor([1.0])).item() < 2e-4
    n = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    # n·d = 1 (facing away, penalised) and −1 (clamped): mean(0.5·1², 1·0) = 0.25
    assert losses.orientation_loss(torch.tensor([0.5, 1.0]), n, d).item() == pytest.approx(0.25)
    flat = torch.ones(1, 3, 8, 8)
    assert losses.normal_tv_loss(flat).item() == 0.0
    assert losses.normal_blur_loss(flat).item() == pytest.approx(0.0, abs=1e-6)
    ramp = torch.zeros(1, 1, 4, 4)
    ramp[..., 2:] = 1.0
    # Δx² = 1 on one of 3 column pairs → 1/3; Δy = 0
    assert losses.normal_tv_loss(ramp).item() == pytest.approx(1 / 3)
    assert losses.ramp_weight(250, 2500, 1e-3) == pytest.approx(1e-4)
    assert losses.ramp_weight(5000, 2500, 1e-3) == pytest.approx(1e-3)
