"""Image-conditioned video SDS (Stable Video Diffusion): EDM/v-prediction conversion, conditioning, memory lever."""

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from animate124.config.guidance import ImageVideoGuidanceConfig, Weighting
from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.guidance.base import TermInputs
from animate124.guidance.image_video import (
    ImageVideoGuidance,
    edm_coefficients,
    sigma_from_alphas_cumprod,
    v_to_eps,
)
from animate124.guidance.sds import guided_sds
from animate124.types import GuidanceContext

ATOL = 1e-5  # fp32 round-off of the closed-form conversion on O(1) latents


def _ctx(step=0, b=1, f=4):
    z = torch.zeros(b, f)
    return GuidanceContext(step=step, elevation=z, azimuth=z, radius=z + 1.8)


@contextmanager
def _swapped_unet(term, unet):
    """Swap the UNet for a stand-in (pytest's monkeypatch deletes nn.Module children on undo instead of restoring)."""
    original = term.unet
    term.unet = unet
    try:
        yield
    finally:
        term.unet = original


@pytest.fixture(scope="module")
def term(tmp_path_factory):
    cfg = ImageVideoGuidanceConfig(height=32, width=32, cfg_scale=3.0)
    models_cfg = ModelsConfig(kind=ModelsKind.tiny, cache_dir=str(tmp_path_factory.mktemp("tiny")))
    # keep_image_encoder: these tests condition the same term on several references
    inputs = TermInputs(models_cfg=models_cfg, reference=torch.rand(3, 32, 32), seed=0, keep_image_encoder=True)
    return ImageVideoGuidance(cfg, inputs)


def test_edm_coefficients_hand_values():
    # σ = 1: c_in = 1/√2, c_skip = 1/2, c_out = −1/√2, c_noise = ¼·ln 1 = 0
    c_in, c_skip, c_out, c_noise = edm_coefficients(torch.tensor([1.0]))
    assert torch.allclose(torch.cat([c_in, c_skip, c_out, c_noise]), torch.tensor([2**-0.5, 0.5, -(2**-0.5), 0.0]))


def test_v_oracle_converts_to_the_eps_optimum():
    """For a point-mass data distribution at x*, the optimal v converts to the optimal ε (closed forms)."""
    x_star = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    eps = torch.randn_like(x_star)
    for a in (0.999, 0.75, 0.16, 0.006):
        a_bar = torch.tensor(a, dtype=torch.float64)
        z_t = a_bar.sqrt() * x_star + (1 - a_bar).sqrt() * eps
        v_star = a_bar.sqrt() * eps - (1 - a_bar).sqrt() * x_star          # v = α·ε − s·x0
        assert torch.allclose(v_to_eps(z_t, v_star, a_bar), eps, atol=1e-12)
        # and x̂0 = c_skip·z_n + c_out·v recovers x* (EDM form, z_n = z_t / c_in)
        sigma = ((1 - a_bar) / a_bar).sqrt()
        c_in, c_skip, c_out, _ = edm_coefficients(sigma)
        assert torch.allclose(c_skip * (z_t / c_in) + c_out * v_star, x_star, atol=1e-10)


class _OracleUNet(torch.nn.Module):
    """Stands in for the SVD UNet: returns the exact v-optimum for a target latent (ignores conditioning)."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, sample, timestep, encoder_hidden_states=None, added_time_ids=None):
        z_t = sample[:, :, :4].float()
        sigma = torch.exp(4.0 * timestep.float()).view(-1, 1, 1, 1, 1)     # c_noise = ¼ ln σ
        a = 1.0 / (1.0 + sigma**2)
        eps_star = (z_t - a.sqrt() * self.target) / (1 - a).sqrt()
        return SimpleNamespace(sample=a.sqrt() * eps_star - (1 - a).sqrt() * self.target)


def test_converted_sds_gradient_equals_eps_parameterised(term):
    """SDS gradient through the class's v→ε path equals the ε-form analytic denoiser's, for the same t and noise."""
    target = torch.randn(1, 4, 4, 4, 4)
    term.reference = term.condition(torch.rand(3, 32, 32))
    latents = torch.randn(1, 4, 4, 4, 4, requires_grad=True)
    noise = torch.randn_like(latents)

    def eps_analytic(z_t, t):
        a = term.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        return (z_t - a.sqrt() * target) / (1 - a).sqrt()

    for t in (30, 400, 950):
        tt = torch.tensor([t])
        with _swapped_unet(term, _OracleUNet(target)):
            r_v = guided_sds(latents, term.alphas_cumprod, tt, term.predict_eps, 1.0, Weighting.one_minus_alpha,
                             noise=noise)
        r_e = guided_sds(latents, term.alphas_cumprod, tt, eps_analytic, 1.0, Weighting.one_minus_alpha, noise=noise)
        assert torch.allclose(r_v.grad, r_e.grad, atol=ATOL), (t, (r_v.grad - r_e.grad).abs().max())
        # the gradient points from the latents to the target: w·(ε̂ − ε) = w·(z − x*)·√ᾱ/√(1−ᾱ)
        a = term.alphas_cumprod[t]
        expected = (1 - a) * (latents.detach() - target) * a.sqrt() / (1 - a).sqrt()
        assert torch.allclose(r_v.grad, expected, atol=1e-4)


def test_sigma_range_of_the_default_timesteps(term):
    sig = sigma_from_alphas_cumprod(term.alphas_cumprod, torch.tensor([20, 500, 980]))
    # SVD's training schedule (scaled-linear β 0.00085–0.012): σ_20 ≈ 0.138, σ_500 ≈ 1.62, σ_980 ≈ 13.0
    assert torch.allclose(sig, torch.tensor([0.138, 1.62, 13.0]), rtol=0.03)


def test_conditioning_image_reaches_the_model(term):
    frames = torch.rand(1, 4, 3, 32, 32, requires_grad=True)
    ref_a, ref_b = torch.rand(3, 32, 32), torch.rand(3, 32, 32)

    def grad_for(ref):
        term.reference = term.condition(ref)
        frames.grad = None
        out = term(frames, _ctx(step=3))
        out.loss.backward()
        assert torch.isfinite(out.loss)
        return frames.grad.clone()

    g_a1, g_a2, g_b = grad_for(ref_a), grad_for(ref_a), grad_for(ref_b)
    assert torch.equal(g_a1, g_a2), "same reference must give identical guidance"
    assert not torch.allclose(g_a1, g_b), "a different reference must change the guidance"
    assert g_a1.abs().sum() > 0


def test_unconditional_branch_zeroes_both_streams(term):
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, sample, timestep, encoder_hidden_states=None, added_time_ids=None):
            seen.update(sample=sample, ehs=encoder_hidden_states, ids=added_time_ids, t=timestep)
            return SimpleNamespace(sample=torch.zeros_like(sample[:, :, :4]))

    term.reference = term.condition(torch.rand(3, 32, 32))
    z_t = torch.randn(1, 4, 4, 4, 4)
    with _swapped_unet(term, Spy()):
        term.predict_eps(z_t, torch.tensor([500]))
    u, c = seen["sample"].chunk(2)
    assert torch.equal(u[:, :, 4:], torch.zeros_like(u[:, :, 4:])) and c[:, :, 4:].abs().sum() > 0
    assert torch.equal(u[:, :, :4], z_t) and torch.equal(c[:, :, :4], z_t)
    assert torch.equal(seen["ehs"][0], torch.zeros_like(seen["ehs"][0])) and seen["ehs"][1].abs().sum() > 0
    # added_time_ids = [fps − 1, motion bucket, noise aug] for both branches
    assert seen["ids"].tolist() == [[6.0, 127.0, pytest.approx(0.02)]] * 2
    sigma = sigma_from_alphas_cumprod(term.alphas_cumprod, torch.tensor([500]))
    assert torch.allclose(seen["t"], 0.25 * torch.log(sigma).repeat(2))


def test_vae_grad_frames_limits_encoder_gradients(term, monkeypatch):
    monkeypatch.setattr(term.cfg, "vae_grad_frames", 2)
    frames = torch.rand(1, 5, 3, 32, 32, requires_grad=True)
    z = term.encode_frames(frames)
    z.sum().backward()
    has_grad = frames.grad.flatten(2).abs().sum(-1)[0] > 0
    assert has_grad.tolist() == [True, False, False, False, True]
    with torch.no_grad():
        full = term.encode_frames(frames.detach())
    assert z.shape == full.shape == (1, 5, 4, 4, 4)


def test_per_frame_guidance_ramp(term, monkeypatch):
    assert term._guidance_scales(4).flatten().tolist() == [3.0] * 4
    monkeypatch.setattr(term.cfg, "cfg_ramp_min", 1.0)
    assert term._guidance_scales(3).flatten().tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("force_upcast", [True, False])
def test_fp16_vae_is_upcast_for_the_reference_encode(term, force_upcast):
    """Like diffusers' StableVideoDiffusionPipeline: an fp16 VAE with ``config.force_upcast`` encodes the reference in
    fp32 and is cast back to fp16 afterwards (CPU: a spy records the dtypes instead of running an fp16 encoder)."""
    vae = term.vae
    seen = {}

    def spy(x):
        seen.update(param=next(vae.parameters()).dtype, input=x.dtype)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: torch.zeros(1, 4, 4, 4, dtype=x.dtype)))

    vae.to(dtype=torch.float16)
    vae.register_to_config(force_upcast=force_upcast)
    vae.encode = spy
    try:
        cond = term._encode_reference(torch.rand(1, 3, 32, 32) * 2 - 1)
        after = next(vae.parameters()).dtype
    finally:
        del vae.encode
        vae.register_to_config(force_upcast=True)
        vae.to(dtype=torch.float32)
    expected = torch.float32 if force_upcast else torch.float16
    assert seen == {"param": expected, "input": expected if force_upcast else term.model_dtype}
    assert cond.dtype == torch.float32
    assert after == torch.float16, "the VAE is cast back to fp16 after the reference encode"
