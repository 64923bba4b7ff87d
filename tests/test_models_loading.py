"""guidance/models.py: the one loading path (tiny round trip offline, one-line errors, dtype rules)."""

import pytest
import torch

from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.errors import MissingWeightsError
from animate124.guidance import models as M

SD_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.fixture()
def tiny_cfg(tmp_path):
    return ModelsConfig(kind=ModelsKind.tiny, cache_dir=str(tmp_path / "cache"))


def test_tiny_round_trip_offline(tiny_cfg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import UNet2DConditionModel

    built = []

    def builder():
        built.append(1)
        return M.tiny_unet()

    unet = M.load(UNet2DConditionModel, SD_ID, "unet", "auto", tiny_cfg, builder)
    # saved to <cache>/tiny/v<N>/<id>/unet and loaded back through from_pretrained
    folder = M.tiny_dir(SD_ID, tiny_cfg) / "unet"
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    assert next(unet.parameters()).dtype == torch.float32  # auto on CPU
    again = M.load(UNet2DConditionModel, SD_ID, "unet", "auto", tiny_cfg, builder)
    assert len(built) == 1  # built once, then reused
    for a, b in zip(unet.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_sd_components_and_prompt_encoding(tiny_cfg):
    c = M.load_sd_components(SD_ID, tiny_cfg)
    emb = M.encode_prompts(c.tokenizer, c.text_encoder, ["a panda", "a panda, side view"])
    assert emb.shape == (2, 77, M.TINY_DIM)
    assert not torch.allclose(emb[0], emb[1])
    ids = c.tokenizer(["a cat"]).input_ids[0]
    assert ids[0] == 512 and ids[-1] == 513 and c.tokenizer.model_max_length == 77
    assert c.alphas_cumprod.shape == (1000,)
    assert c.vae.config.scaling_factor == pytest.approx(0.18215)
    # f8 VAE: 64² → 8² latents
    with torch.no_grad():
        lat = c.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert lat.shape == (1, 4, 8, 8)


def test_missing_id_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import UNet2DConditionModel

    with pytest.raises(MissingWeightsError) as e:
        M.load(UNet2DConditionModel, "nobody/no-such-model-a124", "unet", "auto", ModelsConfig())
    msg = str(e.value)
    assert "\n" not in msg and "nobody/no-such-model-a124" in msg and "hf download nobody/no-such-model-a124" in msg


def test_missing_tokenizer_is_an_error_not_an_empty_tokenizer(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import CLIPTokenizer

    with pytest.raises(MissingWeightsError, match="nobody/no-such-model-a124"):
        M.load(CLIPTokenizer, "nobody/no-such-model-a124", "tokenizer", "auto", ModelsConfig())


def test_broken_local_dir_names_the_folder(tmp_path):
    from diffusers import AutoencoderKL

    (tmp_path / "vae").mkdir()
    with pytest.raises(MissingWeightsError, match="local dir"):
        M.load(AutoencoderKL, str(tmp_path), "vae", "auto", ModelsConfig())


def test_dtype_rules():
    assert M.resolve_dtype("auto", "cpu") == torch.float32
    assert M.resolve_dtype("auto", "cuda") == torch.float16
    assert M.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError):
        M.resolve_dtype("float17", "cpu")


def test_random_kind_uses_random_builder(tiny_cfg):
    from diffusers import AutoencoderKL

    cfg = ModelsConfig(kind=ModelsKind.random, dtype="float32")
    vae = M.load(AutoencoderKL, SD_ID, "vae", "auto", cfg, M.tiny_vae, M.tiny_vae)
    assert isinstance(vae, AutoencoderKL) and not vae.training


@pytest.mark.slow
def test_full_size_random_architectures_parameter_counts():
    # SD-1.5 UNet 859.5 M, VAE 83.7 M, CLIP-L text 123.1 M, CLIP-L/14 vision + projection 304.0 M
    # (built on the meta device: no memory, same architecture)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    with torch.device("meta"):
        assert count(M.random_unet()) == pytest.approx(859.52, abs=0.1)
        assert count(M.random_vae()) == pytest.approx(83.65, abs=0.1)
        assert count(M.random_text_encoder()) == pytest.approx(123.06, abs=0.1)
        assert count(M.random_image_encoder()) == pytest.approx(303.97, abs=0.1)


def test_gated_repo_says_it_is_gated(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffusers import UNetSpatioTemporalConditionModel

    with pytest.raises(MissingWeightsError, match="gated repo") as e:
        M.load(UNetSpatioTemporalConditionModel, "stabilityai/stable-video-diffusion-img2vid", "unet", "auto",
               ModelsConfig())
    assert "\n" not in str(e.value) and "hf auth login" in str(e.value)


def test_download_command_matches_the_installed_hub(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "__version__", "0.33.4")
    assert M.download_command("a/b") == "huggingface-cli download a/b"
    monkeypatch.setattr(huggingface_hub, "__version__", "1.0.0")
    assert M.download_command("a/b") == "hf download a/b"
