"""Text-to-video SDS (guidance/video.py): latent layout, one timestep per clip, CFG, weighting, loss gradient,
VAE-gradient frame subset, view-dependent text, and the tiny model through the real loading path."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from animate124.config.guidance import VideoGuidanceConfig, ViewText
from animate124.config.schema import ModelsConfig
from animate124.guidance.base import TermInputs
from animate124.guidance.models import sd_scheduler, tiny_dir
from animate124.guidance.sds import guided_sds
from animate124.guidance.video import (
    PromptEmbeddings,
    VideoSDS,
    grad_frame_mask,
    interpolate_view_embeddings,
)
from animate124.types import GuidanceContext

ATOL = 1e-5  # fp32 arithmetic on O(1) values


class PoolVAE(nn.Module):
    """Deterministic f8 'VAE' test double: latent = 8×8 average pool of x in [-1,1], channels (r, g, b, mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))  # gives the module a dtype
        self.config = SimpleNamespace(scaling_factor=0.5)

    def encode(self, x):
        z = nn.functional.avg_pool2d(x * self.w, 8)
        z = torch.cat([z, z.mean(1, keepdim=True)], dim=1)
        dist = SimpleNamespace(sample=lambda generator=None: z, mode=lambda: z)
        return SimpleNamespace(latent_dist=dist)


class RecordingUNet(nn.Module):
    """UNet3D test double: ε = a·z_t + (cond_scale if cond else 0); records the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))
        self.calls = []

    def forward(self, sample, timestep, encoder_hidden_states):
        self.calls.append((sample.shape, timestep.clone(), encoder_hidden_states.clone()))
        n = sample.shape[0] // 2
        offset = torch.zeros_like(sample)
        offset[n:] = 1.0  # conditional half
        return SimpleNamespace(sample=self.a * sample + offset)


def _ctx(b, f, azimuth=0.0, fixed=True):
    return GuidanceContext(step=0, elevation=torch.zeros(b, f), azimuth=torch.full((b, f), azimuth),
                           radius=torch.full((b, f), 1.8), fixed_camera=fixed)


def _emb(d=4):
    views = torch.stack([torch.full((2, d), 1.0), torch.full((2, d), 2.0), torch.full((2, d), 3.0)])
    return PromptEmbeddings(cond=torch.full((1, 2, d), 5.0), uncond=torch.zeros(1, 2, d), views=views)


def _term(**kw):
    cfg = VideoGuidanceConfig(height=16, width=24, **kw)
    return VideoSDS.from_parts(cfg, RecordingUNet(), PoolVAE(), sd_scheduler().alphas_cumprod, _emb(),
                    generator=torch.Generator().manual_seed(0))


def test_layout_timestep_cfg_and_gradient():
    term = _term(cfg_scale=101.0, weight=2.0)
    b, f = 2, 3
    images = torch.rand(b, f, 3, 32, 48, requires_grad=True)
    latents = term.encode(images)
    assert latents.shape == (b, 4, f, 2, 3)  # [B, C, F, h, w]: 16×24 / 8
    # Frame j of clip i is the encoding of that frame alone (layout, not just shape).
    single = term.encode(images[1:2, 2:3])
    torch.testing.assert_close(latents[1, :, 2], single[0, :, 0])

    out = term(images, _ctx(b, f))
    shape, t, emb = term.unet.calls[-1]
    assert shape == (2 * b, 4, f, 2, 3)  # uncond + cond batched in one call
    assert t.shape == (2 * b,) and torch.equal(t[:b], t[b:])  # ONE timestep per clip, same for both halves
    torch.testing.assert_close(emb[:b], torch.zeros(b, 2, 4))  # uncond first, then cond
    assert 20 <= int(t.min()) and int(t.max()) <= 980  # t ∈ [0.02·1000, 0.98·1000]

    # Expected gradient on the latents: CFG ε̂ = ε_u + 101(ε_c − ε_u) = a·z_t + 101 (ε_c − ε_u = 1);
    # grad = λ(1 − ᾱ_t)(ε̂ − ε), loss = 0.5·Σ(z − sg(z − grad))²/B ⇒ ∂loss/∂z = grad / B.
    z = latents.detach().requires_grad_(True)
    res = guided_sds(z, term.alphas_cumprod, t[:b], term.eps_predictor(*term.text_embeddings(_ctx(b, f), b)),
                     cfg_scale=101.0, weighting=term.cfg.weighting, scale=2.0, batch_size=b)
    res.loss.backward()
    abar = term.alphas_cumprod[t[:b]].view(b, 1, 1, 1, 1)
    z_t = abar.sqrt() * z.detach() + (1 - abar).sqrt() * res.noise
    eps_hat = 0.3 * z_t + 101.0
    expected = 2.0 * (1 - abar) * (eps_hat - res.noise) / b
    torch.testing.assert_close(z.grad, expected, atol=ATOL, rtol=1e-5)
    assert torch.isfinite(out.loss) and out.stats["video/loss"] > 0


def test_zeroscope_resolution_is_explicit():
    # ZeroScope: guidance.video.height=320 width=576 → f8 latents 40×72 whatever the render size.
    term = _term()
    term.cfg = VideoGuidanceConfig(model="cerspense/zeroscope_v2_576w", height=320, width=576)
    assert term.encode(torch.rand(1, 2, 3, 32, 32)).shape == (1, 4, 2, 40, 72)


def test_loss_backpropagates_to_all_frames_or_only_k():
    images = torch.rand(1, 5, 3, 16, 24, requires_grad=True)
    _term()(images, _ctx(1, 5)).loss.backward()
    assert bool((images.grad.abs().sum(dim=(0, 2, 3, 4)) > 0).all())
    images.grad = None
    _term(vae_grad_frames=2)(images, _ctx(1, 5)).loss.backward()
    has_grad = images.grad.abs().sum(dim=(0, 2, 3, 4)) > 0
    assert has_grad.tolist() == [True, False, False, False, True]  # evenly spaced incl. first and last


def test_grad_frame_mask():
    assert grad_frame_mask(16, None, False, None).all()
    assert grad_frame_mask(16, 4, False, None).nonzero().flatten().tolist() == [0, 5, 10, 15]  # round(linspace(0,15,4))
    m = grad_frame_mask(16, 3, True, torch.Generator().manual_seed(0))
    assert int(m.sum()) == 3


def test_view_embedding_interpolation():
    views = torch.stack([torch.full((1, 2), 1.0), torch.full((1, 2), 2.0), torch.full((1, 2), 3.0)])
    out = interpolate_view_embeddings(views, torch.tensor([0.0, 45.0, -90.0, 135.0, 180.0, -180.0]))
    # |Δφ|=45: 0.5·front + 0.5·side = 1.5; 90: side = 2; 135: 0.5·side + 0.5·back = 2.5; 180: back = 3.
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0, 3.0]))


@pytest.mark.parametrize("mode,fixed,expect_views", [
    (ViewText.off, True, False), (ViewText.fixed_camera, True, True), (ViewText.fixed_camera, False, False),
    (ViewText.always, False, True),
])
def test_view_text_modes(mode, fixed, expect_views):
    term = _term(view_text=mode)
    _, cond = term.text_embeddings(_ctx(1, 2, azimuth=90.0, fixed=fixed), 1)
    assert float(cond.mean()) == (2.0 if expect_views else 5.0)  # side view vs the plain prompt


def test_tiny_models_through_loading_path():
    # ModelScope-layout folder built from tiny configs, saved (once, to $ANIMATE124_CACHE) and loaded back with
    # from_pretrained.
    models = ModelsConfig(kind="tiny")
    cfg = VideoGuidanceConfig(height=64, width=64)
    inputs = TermInputs(models_cfg=models, prompt="a cat is waving", generator=torch.Generator().manual_seed(0))
    term = VideoSDS(cfg, inputs)
    assert (tiny_dir(cfg.model, models) / "unet" / "config.json").is_file()
    images = torch.rand(1, 4, 3, 32, 32, requires_grad=True)
    out = term(images, _ctx(1, 4))
    out.loss.backward()
    assert torch.isfinite(out.loss) and float(images.grad.abs().sum()) > 0
