"""Metrics (animate124/metrics): CLIP scores against a direct CLIPModel computation, constructed R-precision /
temporal cases, LPIPS with torchvision/lpips key names, and the run evaluation writing metrics.json."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _export_toys import fast_render_cfg, full_occupancy, toy_field
from PIL import Image

from animate124.config.export import LpipsConfig, MetricsConfig
from animate124.config.schema import ModelsConfig
from animate124.errors import MissingWeightsError
from animate124.export.scene import Scene
from animate124.metrics import clip as C
from animate124.metrics.lpips import LPIPS, load_lpips
from animate124.metrics.report import METRIC_KEYS, evaluate_run

COS_TOL = 1e-5  # fp32 cosines through two code paths of the same model


@pytest.fixture(scope="module")
def tiny_clip():
    return C.load_clip("openai/clip-vit-large-patch14", ModelsConfig(kind="tiny"), "cpu", batch_size=3)


def test_clip_scores_match_direct_clipmodel_forward(tiny_clip):
    images = torch.rand(4, 3, 224, 224)
    texts = ["a panda is dancing", "a cat is waving its paw"]
    # direct: CLIPModel.forward gives logits_per_image = exp(logit_scale)·cos(image, text)
    mean = torch.tensor(C.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(C.CLIP_STD).view(1, 3, 1, 1)
    tok = tiny_clip.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = tiny_clip.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                              pixel_values=(images - mean) / std)
    cos = out.logits_per_image / tiny_clip.model.logit_scale.exp()  # [4, 2]
    img, txt = tiny_clip.embed_images(images), tiny_clip.embed_texts(texts)
    torch.testing.assert_close(img @ txt.T, cos, atol=COS_TOL, rtol=0)
    assert C.clip_t(img, txt[0]) == pytest.approx(float(cos[:, 0].mean()), abs=COS_TOL)
    # R-precision of caption 0 = fraction of images whose larger cosine is caption 0
    expected_r = float((cos.argmax(-1) == 0).float().mean())
    assert C.r_precision(img, txt, 0) == pytest.approx(expected_r)


def test_preprocess_resizes_shorter_side_and_centre_crops():
    img = torch.zeros(1, 3, 100, 300)
    img[..., 100:200] = 1.0  # the central third is white
    px = C.preprocess(img, 224)
    assert px.shape == (1, 3, 224, 224)
    # after resizing to 224×672 and cropping columns 224..448, everything is white: (1 − mean)/std
    expected = (1.0 - torch.tensor(C.CLIP_MEAN)) / torch.tensor(C.CLIP_STD)
    torch.testing.assert_close(px[0, :, 112, 112], expected, atol=1e-3, rtol=0)


def test_r_precision_and_temporal_constructed_cases():
    caps = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), dim=-1)
    imgs = F.normalize(torch.tensor([[1.0, 0.1], [0.9, 0.3], [0.2, 1.0], [0.7, 0.6]]), dim=-1)
    # nearest caption per image: 0, 0, 1, 0 → R@1 for caption 0 = 3/4, caption 1 = 1/4, caption 2 = 0
    assert C.r_precision(imgs, caps, 0) == 0.75
    assert C.r_precision(imgs, caps, 1) == 0.25
    assert C.r_precision(imgs, caps, 2) == 0.0
    video = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    # view 0: cos 0 then 1; view 1: 1, 1 → mean (0 + 1 + 1 + 1)/4 = 0.75
    assert C.temporal_consistency(video) == pytest.approx(0.75)
    assert C.temporal_consistency(video[:, :1]) is None
    # CLIP-I of [1, 0] and [0, 1] against reference [1, 0]: (1 + 0)/2
    assert C.clip_i(video[0, :2], torch.tensor([1.0, 0.0])) == pytest.approx(0.5)


def _save_lpips_weights(tmp_path, net):
    ref = LPIPS(net)
    for p in ref.parameters():
        torch.nn.init.uniform_(p, 0.0, 0.05)
    state = ref.state_dict()
    trunk = {k: v for k, v in state.items() if k.startswith("features.")}
    trunk["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files also hold the classifier: ignored
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    torch.save(trunk, tmp_path / f"{net}_trunk.pth")
    torch.save(heads, tmp_path / f"{net}_heads.pth")
    return ref, tmp_path / f"{net}_trunk.pth", tmp_path / f"{net}_heads.pth"


@pytest.mark.parametrize("net", ["alex", pytest.param("vgg", marks=pytest.mark.slow)])  # vgg: 2×60 MB of weights
def test_lpips_loads_torchvision_names_and_matches_direct_formula(tmp_path, net):
    ref, trunk, heads = _save_lpips_weights(tmp_path, net)
    model, reason = load_lpips(net, str(trunk), str(heads))
    assert reason is None and model is not None
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    d = model(x, y)
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-7)
    # direct: run the trunk layer by layer on the scaled input, unit-normalise channels, weight, average
    shift, scale = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), torch.tensor([0.458, 0.448, 0.450]).view(
        1, 3, 1, 1)
    hx, hy, total, start = (2 * x - 1 - shift) / scale, (2 * y - 1 - shift) / scale, torch.zeros(2), 0
    for k, end in enumerate(ref.slice_ends):
        for i in range(start, end):
            hx, hy = ref.features[i](hx), ref.features[i](hy)
        start = end
        nx = hx / (hx.norm(dim=1, keepdim=True) + 1e-10)
        ny = hy / (hy.norm(dim=1, keepdim=True) + 1e-10)
        w = getattr(ref, f"lin{k}").model[1].weight.view(1, -1, 1, 1)
        total = total + ((nx - ny) ** 2 * w).sum(1).mean(dim=(1, 2))
    torch.testing.assert_close(d, total, atol=1e-5, rtol=1e-4)
    assert bool((d > 0).all())


def test_lpips_unavailable_without_weights_and_errors_on_wrong_files(tmp_path):
    model, reason = load_lpips("vgg", None, None)
    assert model is None and "lpips.trunk_weights" in reason
    _, trunk, heads = _save_lpips_weights(tmp_path, "alex")
    with pytest.raises(MissingWeightsError):
        load_lpips("vgg", str(trunk), str(heads))  # alex weights for a vgg trunk
    with pytest.raises(MissingWeightsError):
        load_lpips("alex", str(tmp_path / "nope.pth"), str(heads))


def test_evaluate_run_writes_metrics_json(tmp_path, tiny_clip):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "benchmark.json").write_text(json.dumps([{"name": "a", "caption": "a red blob"},
                                                      {"name": "b", "caption": "a green cube"},
                                                      {"name": "c", "caption": "a blue sphere"}]))
    ref = tmp_path / "ref.png"
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[8:24, 8:24] = [230, 30, 30, 255]
    Image.fromarray(rgba).save(ref)
    inputs = {"prompt": "a red blob", "image": str(ref)}
    scene = Scene(toy_field(), full_occupancy(), fast_render_cfg(max_steps=48), inputs, "fit", {}, Path("ckpt"))
    cfg = MetricsConfig(run_dir=str(tmp_path), models=ModelsConfig(kind="tiny"), views=2, frames=3, resolution=16,
                        captions_file=str(bench / "benchmark.json"), lpips=LpipsConfig(trunk_weights=None,
                                                                                           head_weights=None),
                        progress=False, device="cpu")
    result = evaluate_run(cfg, scene=scene)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    for key in METRIC_KEYS:
        assert key in saved
    assert saved["lpips_flicker"] is None and "lpips" in saved["unavailable"]["lpips_flicker"]
    for key in ("clip_t", "clip_i", "clip_i_all_views", "temporal_consistency"):
        assert -1.0 <= saved[key] <= 1.0
    assert saved["r_precision"] in (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)  # 6 frames, each right or wrong
    assert saved["protocol"]["clip_model"] == "openai/clip-vit-large-patch14"
    assert saved["protocol"]["n_captions"] == 3 and saved["protocol"]["views"] == 2
    assert saved["caption"] == "a red blob"


def test_reference_and_caption_come_from_the_case(tmp_path):
    from animate124.metrics.report import captions_of, case_image

    bench = tmp_path / "bench"
    (bench / "a").mkdir(parents=True)
    (bench / "benchmark.json").write_text(json.dumps([{"name": "a", "caption": "a red blob is dancing"},
                                                      {"name": "b", "caption": "a green cube"}]))
    Image.fromarray(np.zeros((8, 8, 4), dtype=np.uint8)).save(bench / "a" / "rgba.png")
    scene = Scene(toy_field(), full_occupancy(), fast_render_cfg(), {"case": "a"}, "dynamic",
                  {"case": {"name": "a", "root": str(bench)}}, Path("ckpt"))
    assert case_image(scene) == str(bench / "a" / "rgba.png")
    caption, candidates, source = captions_of(MetricsConfig(run_dir=str(tmp_path)), scene)
    assert caption == "a red blob is dancing" and candidates == ["a red blob is dancing", "a green cube"]
    assert source == str(bench / "benchmark.json")
