"""The guidance-term table (guidance/factory.py): every term builds as ``Term(cfg, inputs)`` from its default
config; unknown names and missing references fail with a clear error; image encoders leave the run's device once the
reference embedding is computed."""

import pytest
import torch
from conftest import requires_cuda

from animate124.config.guidance import (
    GuidanceConfig,
    ImageVideoGuidanceConfig,
    SDSConfig,
    VideoGuidanceConfig,
    VideoPriorKind,
    Zero123GuidanceConfig,
)
from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.data.reference import ReferenceImage
from animate124.errors import ConfigError, InputError
from animate124.guidance.base import TermInputs
from animate124.guidance.factory import TERMS, TermUse, build_term, build_terms, term_names
from animate124.guidance.image_video import ImageVideoGuidance

TINY = ModelsConfig(kind=ModelsKind.tiny)  # tiny models from $ANIMATE124_CACHE (conftest: shared temp dir)


def _reference(size: int = 64) -> ReferenceImage:
    g = torch.Generator().manual_seed(0)
    return ReferenceImage(rgba=torch.rand(4, size, size, generator=g))


def _inputs(**kw) -> TermInputs:
    base = dict(models_cfg=TINY, prompt="a panda is dancing", reference=_reference())
    return TermInputs(**{**base, **kw})


@pytest.mark.parametrize("name", list(TERMS))
def test_every_term_builds_from_its_default_config(name):
    spec = TERMS[name]
    cfg = getattr(GuidanceConfig(), name)
    assert type(cfg) is spec.config
    term = build_term(cfg, _inputs())
    assert type(term) is spec.term and term.name == name
    assert not any(p.requires_grad for p in term.parameters())


def test_term_names_follow_the_table_and_the_video_kind():
    g = GuidanceConfig()
    assert term_names(g, TermUse.every_frame) == ["sd", "zero123"]
    assert term_names(g, TermUse.start_frame) == ["zero123"]
    for kind, names in ((VideoPriorKind.text, ["video"]), (VideoPriorKind.image, ["image_video"]),
                        (VideoPriorKind.both, ["video", "image_video"])):
        g.video.kind = kind
        assert term_names(g, TermUse.clip) == names


def test_build_terms_skips_disabled_terms():
    g = GuidanceConfig()
    g.sd.enabled = g.zero123.enabled = False
    assert build_terms(g, TermUse.every_frame, _inputs()) == []


def test_unknown_term_name_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"unknown guidance term.*'nope'.*known: sd, zero123"):
        build_terms(GuidanceConfig(), ["sd", "nope"], _inputs())


def test_unknown_config_class_is_a_clear_error():
    with pytest.raises(ConfigError, match="no guidance term is configured by SDSConfig"):
        build_term(SDSConfig(), _inputs())


@pytest.mark.parametrize("cfg", [Zero123GuidanceConfig(), ImageVideoGuidanceConfig()], ids=["zero123", "image_video"])
def test_a_reference_term_without_a_reference_is_a_clear_error(cfg):
    name = "zero123" if isinstance(cfg, Zero123GuidanceConfig) else "image_video"
    with pytest.raises(InputError, match=rf"guidance term '{name}' is conditioned on the reference image.*"
                                         rf"guidance\.{name}\.enabled=false"):
        build_term(cfg, _inputs(reference=None))


def test_the_text_to_video_term_without_a_prompt_is_a_clear_error():
    with pytest.raises(InputError, match="needs a motion prompt"):
        build_term(VideoGuidanceConfig(), _inputs(prompt=""))


def test_a_reference_object_is_taken_at_each_terms_resolution():
    ref = _reference(96)
    inputs = _inputs(reference=ref)
    torch.testing.assert_close(inputs.reference_rgb("zero123", 32), ref.at(32).rgb)
    t = torch.rand(3, 40, 40)
    assert _inputs(reference=t).reference_rgb("zero123", 32) is t  # a tensor is used as given


def _image_encoder_offloaded(device: str) -> None:
    """Zero123's and SVD's image encoders end on the CPU; the cached embeddings stay on the term's device."""
    small = dict(device=device, models_cfg=TINY, reference=_reference())
    z = build_term(Zero123GuidanceConfig(resolution=64), TermInputs(**small))
    assert {p.device.type for p in z.image_encoder.parameters()} == {"cpu"}
    assert z.clip_emb.device == z.device == torch.device(device) and z.ref_latent.device == z.device
    assert {p.device.type for p in z.unet.parameters()} == {torch.device(device).type}
    v = build_term(ImageVideoGuidanceConfig(height=32, width=32), TermInputs(**small))
    assert isinstance(v, ImageVideoGuidance)
    assert {p.device.type for p in v.image_encoder.parameters()} == {"cpu"}
    assert v.reference.embeds.device == v.reference.latent.device == v.device == torch.device(device)
    with pytest.raises(RuntimeError, match="keep_image_encoder=True"):
        v.condition(torch.rand(3, 32, 32))


def test_image_encoders_are_offloaded_after_the_reference_embedding(monkeypatch):
    """On a CPU-only machine the run's device IS the CPU, so this test proves that the encoders are moved with
    ``.to("cpu")`` after the embedding (recorded) and that the term still works; the CUDA twin below checks the
    placement on a real device."""
    moved = []
    original = torch.nn.Module.to

    def spy(self, *args, **kwargs):
        if type(self).__name__ == "CLIPVisionModelWithProjection":
            moved.append(args[0] if args else kwargs.get("device", kwargs.get("dtype")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    _image_encoder_offloaded("cpu")
    assert moved.count("cpu") == 2  # one per term, the last move of each encoder


@pytest.mark.cuda
@requires_cuda
def test_image_encoders_leave_the_gpu():
    _image_encoder_offloaded("cuda")
