"""SD and Zero-1-to-3 guidance terms: view text, pose token, angle weight (hand cases) and tiny-model smoke runs."""

import math

import pytest
import torch

from animate124.config.guidance import StableDiffusionGuidanceConfig, Zero123GuidanceConfig
from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.errors import ConfigError
from animate124.guidance.base import TermInputs
from animate124.guidance.stable_diffusion import StableDiffusionGuidance, view_weights
from animate124.guidance.zero123 import (
    CCProjection,
    CLIPCameraProjection,
    Zero123Guidance,
    _projection_builders,
    pose_token,
    view_angle,
)
from animate124.types import GuidanceContext

ANGLE_TOL = 1e-4  # degrees; acos near 0/180 in fp32


def _ctx(elev, azim, step=0):
    e = torch.tensor(elev, dtype=torch.float32).view(-1, 1)
    a = torch.tensor(azim, dtype=torch.float32).view(-1, 1)
    return GuidanceContext(step=step, elevation=e, azimuth=a, radius=torch.full_like(e, 1.8))


def test_view_weights_hand_cases():
    w = view_weights(torch.tensor([0.0, 45.0, -90.0, 135.0, 180.0, 270.0]))
    expected = torch.tensor([
        [1.0, 0.0, 0.0],   # front
        [0.5, 0.5, 0.0],   # r = 1 − 45/90
        [0.0, 1.0, 0.0],   # side (sign ignored)
        [0.0, 0.5, 0.5],   # r = 1 − (135 − 90)/90
        [0.0, 0.0, 1.0],   # back
        [0.0, 1.0, 0.0],   # 270 wraps to −90
    ])
    torch.testing.assert_close(w, expected)


def test_pose_token_hand_cases():
    # camera at elevation 30 (above the reference), azimuth 90: polar delta = −30° = −π/6, sin(90°) = 1, cos = 0
    t = pose_token(torch.tensor([30.0]), torch.tensor([90.0]), torch.tensor([0.0]))
    torch.testing.assert_close(t, torch.tensor([[-math.pi / 6, 1.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    # reference view → [0, 0, 1, 0]; back view (azimuth 180, wrapped to −180): sin(180°) = 0, cos = −1; Δr = 0.2
    t = pose_token(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 180.0]), torch.tensor([0.0, 0.2]))
    torch.testing.assert_close(t, torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -1.0, 0.2]]), atol=1e-6, rtol=0)


def test_angle_weight_hand_cases():
    ang = view_angle(torch.tensor([0.0, 0.0, 0.0, 90.0, 45.0]), torch.tensor([0.0, 90.0, 180.0, 0.0, 0.0]))
    torch.testing.assert_close(ang, torch.tensor([0.0, 90.0, 180.0, 90.0, 45.0]), atol=ANGLE_TOL * 100, rtol=0)
    # λ = 40: 0 at the reference, 20 at 90°, 40 at the back (spec §7.4)
    lam = 40.0 * ang / 180.0
    assert lam[0] < 1e-2 and lam[1].item() == pytest.approx(20.0, abs=1e-3) and lam[2].item() == pytest.approx(40.0)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return ModelsConfig(kind=ModelsKind.tiny, cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_sd_term_tiny_gradient_flows(tiny_models):
    cfg = StableDiffusionGuidanceConfig(resolution=64)
    term = StableDiffusionGuidance(cfg, TermInputs(models_cfg=tiny_models, prompt="a panda"))
    assert term.prompt == "a panda, 8k, good quality"
    assert not any(p.requires_grad for p in term.parameters())
    # interpolated embeddings: exactly the front one at Δφ = 0, the mean of front/side at 45°
    e = term.text_embeddings(torch.tensor([0.0, 45.0]))
    torch.testing.assert_close(e[0], term.cond_embs[0])
    torch.testing.assert_close(e[1], 0.5 * (term.cond_embs[0] + term.cond_embs[1]))
    img = torch.rand(1, 1, 3, 32, 32, requires_grad=True)
    out = term(img, _ctx([10.0], [30.0]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and img.grad.abs().sum() > 0
    assert 200 <= out.stats["sd/t"] <= 600


def test_zero123_term_tiny(tiny_models, tmp_path):
    cfg = Zero123GuidanceConfig(resolution=64)
    ref = torch.rand(3, 48, 48)
    term = Zero123Guidance(cfg, TermInputs(models_cfg=tiny_models, reference=ref))
    assert term.clip_emb.shape == (1, 1, 32) and term.ref_latent.shape == (1, 4, 8, 8)
    img = torch.rand(2, 1, 3, 32, 32, requires_grad=True)
    out = term(img, _ctx([0.0, 0.0], [90.0, 0.0]))
    out.loss.backward()
    # the second clip is at the reference view: angle weight 0 → no gradient there
    assert img.grad[0].abs().sum() > 0 and img.grad[1].abs().sum() == 0
    assert out.stats["zero123/weight"] == pytest.approx((20.0 + 0.0) / 2, abs=1e-3)
    # cc_projection round trip through the diffusers loading path
    proj = CCProjection(36, 32)
    proj.save_pretrained(tmp_path / "cc_projection")
    again = CCProjection.from_pretrained(str(tmp_path), subfolder="cc_projection")
    torch.testing.assert_close(again.projection.weight, proj.projection.weight)


def test_projection_layouts(tmp_path):
    # both published layouts round-trip through from_pretrained; tiny builders match the tiny image encoder (32 + 4)
    for sub, cls in (("cc_projection", CCProjection), ("clip_camera_projection", CLIPCameraProjection)):
        got_cls, tiny, _ = _projection_builders(sub)
        assert got_cls is cls
        m = tiny()
        assert m(torch.zeros(1, 1, 36)).shape == (1, 1, 32)
        m.save_pretrained(tmp_path / sub)
        again = cls.from_pretrained(str(tmp_path), subfolder=sub)
        for a, b in zip(m.state_dict().values(), again.state_dict().values()):
            assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="projection_subfolder"):
        _projection_builders("nope")
