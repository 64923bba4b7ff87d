"""ControlNet-Tile SDS term (guidance/controlnet.py) with tiny random models."""

import dataclasses

import pytest
import torch

from animate124.config.guidance import ControlNetGuidanceConfig, Weighting
from animate124.config.schema import ModelsConfig
from animate124.errors import ConfigError
from animate124.guidance.base import TermInputs
from animate124.guidance.controlnet import ControlNetTileGuidance, even_frames
from animate124.guidance.textual_inversion import save_learned_embeds
from animate124.types import GuidanceContext

SIZE = 64  # tiny f8 VAE → 8×8 latents
F = 4
GRAD_RTOL = 1e-4  # fp32 VAE-backward summation order differs between the two calls (seen: 4e-7 abs on 1e-4)


@pytest.fixture(scope="module")
def shared_term(tmp_path_factory):
    """Loaded once per module (model loading dominates); tests reset ``term.cfg`` through :func:`_term`."""
    tmp = tmp_path_factory.mktemp("cn")
    embeds = save_learned_embeds(tmp / "learned_embeds.safetensors", {"_tok_": torch.randn(32)})
    cfg = dataclasses.replace(ControlNetGuidanceConfig(), size=SIZE)
    # tiny models from $ANIMATE124_CACHE (conftest: a temp dir shared by the test files)
    return ControlNetTileGuidance(cfg, TermInputs(models_cfg=ModelsConfig(kind="tiny"), prompt="a _tok_ is dancing",
                                                 learned_embeds=embeds))


def _term(term, **kw):
    term.cfg = dataclasses.replace(ControlNetGuidanceConfig(), size=SIZE, **kw)
    return term


def _ctx(control, step=0):
    z = torch.zeros(1, F)
    return GuidanceContext(step=step, elevation=z, azimuth=z, radius=z + 1.8, control_images=control)


def test_even_frames():
    assert even_frames(16, 2) == [0, 8]  # the original's cn_frame_method='even'
    assert even_frames(4, 2) == [0, 2]
    assert even_frames(1, 2) == [0]


def test_frame_range_is_validated(shared_term):
    term = _term(shared_term, frames=[0, 8])
    assert term.frame_indices(16) == [0, 8]
    with pytest.raises(ConfigError, match="out of range"):
        term.frame_indices(4)


def test_gradient_reaches_trained_only_and_weight_applies(shared_term):
    term = _term(shared_term)
    trained = torch.rand(1, F, 3, 16, 16, requires_grad=True)
    frozen = torch.rand(1, F, 3, 16, 16, requires_grad=True)  # stands in for the frozen model's parameters

    def grad_of(weight):
        term.cfg.weight = weight
        trained.grad = None
        torch.manual_seed(1)
        out = term(trained, _ctx(frozen))
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.stats["controlnet/t"] >= 200 and out.stats["controlnet/t"] <= 800
        return trained.grad.clone()

    g1 = grad_of(1.0)
    g2 = grad_of(2.0)
    assert frozen.grad is None  # control images are detached
    assert all(p.grad is None and not p.requires_grad for p in term.parameters())
    # only the chosen frames {0, 2} of a 4-frame clip receive gradient
    assert g1[:, [0, 2]].abs().sum() > 0 and g1[:, [1, 3]].abs().sum() == 0
    # λ is applied (the original ignored it, spec §14.12): λ=2 doubles the gradient exactly
    torch.testing.assert_close(g2, 2 * g1, rtol=GRAD_RTOL, atol=GRAD_RTOL * float(g1.abs().max()))


def test_control_image_reaches_unet(shared_term):
    term = _term(shared_term, weighting=Weighting.sqrt_snr_inv)
    video = torch.rand(1, F, 3, 16, 16)
    losses = []
    for control in (torch.zeros(1, 2, 3, 16, 16), torch.ones(1, 2, 3, 16, 16)):  # chosen frames only
        torch.manual_seed(3)
        losses.append(float(term(video, _ctx(control)).loss))
    assert losses[0] != losses[1]


def test_missing_control_images(shared_term):
    term = _term(shared_term)
    with pytest.raises(ValueError, match="control_images"):
        term(torch.rand(1, F, 3, 16, 16), _ctx(None))
