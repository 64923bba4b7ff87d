"""Textual inversion (guidance/textual_inversion.py): only the new row learns; files load in diffusers and from the benchmark."""

import pytest
import torch
from conftest import BENCHMARK, requires_benchmark

from animate124.config.schema import ModelsConfig
from animate124.errors import InputError
from animate124.guidance.models import load_sd_components
from animate124.guidance.textual_inversion import (
    TextualInversion,
    TIAugment,
    add_token,
    load_learned_embeds,
    load_token,
    save_learned_embeds,
)

SD_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
BENCH_TOKENS = {
    "astronaut-horse": "_astronaut_horse_",
    "fox-game": "_fox_game_",
    "panda-dance": "_panda_dance_",
    "space-shuttle": "_shuttle_",
    "tiger-guitar": "_tiger_guitar_",
}


@pytest.fixture(scope="module")
def cache():
    """The tiny models' cache: $ANIMATE124_CACHE (a temp dir set by conftest), built once and shared by test files."""
    from animate124.guidance.models import cache_root

    return str(cache_root())


def _tiny(cache):
    return load_sd_components(SD_ID, ModelsConfig(kind="tiny", cache_dir=cache))


def _trainer(sd, **kw):
    image = torch.rand(3, 40, 56)
    return TextualInversion(sd.tokenizer, sd.text_encoder, sd.vae, sd.unet, sd.scheduler, image, "_tok_", "cat",
                            resolution=64, batch_size=2, lr=1e-2, **kw)


def test_only_new_row_changes_bit_identical(cache):
    sd = _tiny(cache)
    ti = _trainer(sd)
    start = ti.weight.detach().clone()
    for _ in range(3):
        stats = ti.step()
        assert torch.isfinite(torch.tensor(stats["ti/loss"]))
    end = ti.weight.detach()
    others = torch.ones(end.shape[0], dtype=torch.bool)
    others[ti.token_id] = False
    assert torch.equal(end[others], start[others])  # bit-identical, despite AdamW weight decay
    assert not torch.equal(end[ti.token_id], start[ti.token_id])
    # the unet / vae never train
    assert all(not p.requires_grad for p in sd.unet.parameters())
    assert all(not p.requires_grad for p in sd.vae.parameters())


def test_initializer_row_is_initializer_embedding(cache):
    sd = _tiny(cache)
    emb = sd.text_encoder.get_input_embeddings().weight.detach().clone()
    ids = sd.tokenizer.encode("cat", add_special_tokens=False)
    token_id = add_token(sd.tokenizer, sd.text_encoder, "_tok_", "cat")
    # the tiny byte vocab splits "cat" into 3 tokens → the row is their mean
    torch.testing.assert_close(sd.text_encoder.get_input_embeddings().weight[token_id], emb[ids].mean(0))
    assert sd.tokenizer.encode("_tok_", add_special_tokens=False) == [token_id]


def test_vae_sees_minus_one_to_one(cache):
    """Spec §14.10 fix: the augmented pixels reach the VAE encoder in [-1, 1], not [0, 1]."""
    sd = _tiny(cache)
    ti = _trainer(sd)
    seen = []
    hook = sd.vae.encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    ti.loss(torch.zeros(2, 3, 64, 64))  # black image → -1 everywhere
    hook.remove()
    assert torch.all(seen[0] == -1.0)


def test_augment_shape_and_range():
    aug = TIAugment(64)
    out = aug(torch.rand(5, 3, 80, 80))
    assert out.shape == (5, 3, 64, 64) and out.min() >= 0 and out.max() <= 1
    # rotation padding is white: rotating an all-white image keeps it white
    assert torch.allclose(1.0 - aug.rotate(1.0 - torch.ones(2, 3, 80, 80)), torch.ones(2, 3, 80, 80))


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_saved_embeds_load_in_diffusers_pipeline(tmp_path, cache, suffix):
    from diffusers import StableDiffusionPipeline

    sd = _tiny(cache)
    ti = _trainer(sd)
    ti.step()
    learned = ti.embedding()
    path = save_learned_embeds(tmp_path / f"learned_embeds{suffix}", {"_tok_": learned})
    assert torch.equal(load_learned_embeds(path)["_tok_"], learned)
    fresh = _tiny(cache)  # token-free tokenizer/encoder loaded back from the tiny cache
    pipe = StableDiffusionPipeline(vae=fresh.vae, text_encoder=fresh.text_encoder, tokenizer=fresh.tokenizer,
                                   unet=fresh.unet, scheduler=fresh.scheduler, safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.load_textual_inversion(str(path))
    token_id = pipe.tokenizer.convert_tokens_to_ids("_tok_")
    torch.testing.assert_close(pipe.text_encoder.get_input_embeddings().weight[token_id], learned)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_learned_embeds(tmp_path / "nope.bin")
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot read"):
        load_learned_embeds(bad)
    torch.save({"tok": torch.zeros(2, 3)}, tmp_path / "2d.bin")
    with pytest.raises(InputError, match="1-D"):
        load_learned_embeds(tmp_path / "2d.bin")


@requires_benchmark
@pytest.mark.parametrize("case, token", sorted(BENCH_TOKENS.items()))
def test_benchmark_learned_embeds_load(case, token):
    embeds = load_learned_embeds(BENCHMARK / case / "learned_embeds.bin")
    assert list(embeds) == [token]
    assert embeds[token].shape == (768,) and torch.isfinite(embeds[token]).all()


@requires_benchmark
def test_benchmark_token_width_mismatch_is_clear(cache):
    sd = _tiny(cache)  # 32-d tiny text encoder
    with pytest.raises(InputError, match="768-d"):
        load_token(sd.tokenizer, sd.text_encoder, BENCHMARK / "panda-dance" / "learned_embeds.bin")


# ------------------------------------------------------------------------------------------------- the phase


def _run_ti(run_dir, cache, *overrides):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401  (registers the schemas)
    from animate124.phases import run_phase

    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = compose("run", overrides=["phase=textual_inversion", "models=tiny", f"models.cache_dir={cache}",
                                        "phase.batch_size=1", "phase.resolution=64", "phase.progress=false",
                                        *overrides])
    return run_phase(OmegaConf.to_object(cfg), run_dir)


def test_phase_trains_saves_and_resumes(tmp_path, cache):
    from PIL import Image

    img = tmp_path / "cat" / "image.jpg"
    img.parent.mkdir()
    Image.new("RGB", (50, 40), (200, 30, 30)).save(img)
    rep = _run_ti(tmp_path / "run", cache, f"image={img}", "prompt=a cat is waving", "phase.max_steps=1")
    assert rep["complete"] and rep["step"] == 1 and rep["metrics"]["trained"] == 1.0
    out = tmp_path / "run" / "textual_inversion"
    first = load_learned_embeds(out / "learned_embeds.safetensors")
    assert list(first) == ["_cat_"]  # folder name for a file called image.jpg
    assert torch.equal(load_learned_embeds(out / "learned_embeds.bin")["_cat_"], first["_cat_"])
    # more steps in the same run dir: resumes from step 1 (its checkpoint), not from scratch
    rep = _run_ti(tmp_path / "run", cache, f"image={img}", "prompt=a cat is waving", "phase.max_steps=2")
    assert rep["start_step"] == 1 and rep["step"] == 2


def test_phase_uses_case_embeds_of_matching_width(tmp_path, cache):
    import json

    from PIL import Image

    root = tmp_path / "bench"
    (root / "cat-wave").mkdir(parents=True)
    (root / "benchmark.json").write_text(json.dumps([{"name": "cat-wave", "caption": "a cat is waving its paw"}]))
    Image.new("RGB", (32, 32)).save(root / "cat-wave" / "image.jpg")
    given = torch.randn(32)  # tiny text encoder width
    torch.save({"_cat_wave_": given}, root / "cat-wave" / "learned_embeds.bin")
    rep = _run_ti(tmp_path / "run", cache, "case=cat-wave", f"case.root={root}")
    assert rep["step"] == 0 and rep["metrics"]["trained"] == 0.0
    saved = load_learned_embeds(tmp_path / "run" / "textual_inversion" / "learned_embeds.safetensors")
    assert torch.equal(saved["_cat_wave_"], given)
