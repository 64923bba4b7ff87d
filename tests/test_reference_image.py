"""data/reference.py (input picture → reference tensors) and the preprocessing CLI (animate124.preprocess)."""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import BENCHMARK, requires_benchmark
from PIL import Image

from animate124.data.reference import load_reference, pad_to_square, sibling_depth
from animate124.errors import InputError, MissingWeightsError
from animate124.preprocess import main as preprocess_main

EXIF_ORIENTATION = 0x0112


def _save_rgba(path, arr, fmt="PNG"):
    Image.fromarray(arr.astype(np.uint8), "RGBA").save(path, format=fmt)


def test_pad_to_square_centres():
    a = np.ones((2, 5, 1))
    # pad 3 rows: 1 on top, 2 at the bottom
    p = pad_to_square(a)
    assert p.shape == (5, 5, 1) and p[:, :, 0].sum(1).tolist() == [0, 5, 5, 0, 0]


def test_composite_mask_depth_hand_case(tmp_path):
    arr = np.zeros((2, 2, 4), np.uint8)
    arr[..., 0] = 255          # red
    arr[0, 0, 3] = 255         # opaque
    arr[0, 1, 3] = 51          # α = 0.2
    arr[1, 0, 3] = 204         # α = 0.8
    _save_rgba(tmp_path / "x.png", arr)
    depth = np.array([[255, 0], [51, 0]], np.uint8)  # disparity 1.0 and 0.2 on the mask
    Image.fromarray(depth).save(tmp_path / "depth.png")
    ref = load_reference(tmp_path / "x.png", depth=sibling_depth(tmp_path / "x.png"))
    v = ref.at(2)
    # rgb = c·α + (1 − α): red channel 1 everywhere; green = 1 − α → [0, 0.8, 0.2, 1]
    torch.testing.assert_close(v.rgb[1].flatten(), torch.tensor([0.0, 0.8, 0.2, 1.0]), atol=1e-6, rtol=0)
    assert v.mask.flatten().tolist() == [1.0, 0.0, 1.0, 0.0]
    # depth = 1 − png/255 = [0, ., 0.8, .]; minus masked min 0, divided by max (1.0 at the unmasked 0 pixels)
    torch.testing.assert_close(v.depth.flatten(), torch.tensor([0.0, 0.0, 0.8, 0.0]), atol=1e-6, rtol=0)


def test_area_resize_averages(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 3] = 255
    arr[:2, :2, :3] = 255  # white top-left quadrant
    arr[0, 2, :3] = 255    # one white pixel in the top-right quadrant
    _save_rgba(tmp_path / "q.png", arr)
    v = load_reference(tmp_path / "q.png").at(2)
    torch.testing.assert_close(v.rgb[0], torch.tensor([[1.0, 0.25], [0.0, 0.0]]))


def test_png_content_in_jpg_name_and_rgb_with_mask(tmp_path):
    arr = np.full((3, 5, 4), 255, np.uint8)
    arr[..., 3] = 0
    arr[1, 2, 3] = 255
    _save_rgba(tmp_path / "image.jpg", arr)  # PNG bytes, .jpg name
    ref = load_reference(tmp_path / "image.jpg")
    assert ref.rgba.shape == (4, 5, 5) and ref.rgba[3].sum() == 1.0
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    mask = np.zeros((3, 5), np.uint8)
    mask[0, 0] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    ref2 = load_reference(tmp_path / "rgb.png", mask=tmp_path / "mask.png")
    assert ref2.rgba[3].sum() == 1.0 and ref2.rgba[3, 1, 0] == 1.0  # one row of padding on top


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((2, 4, 3), np.uint8)  # wide
    arr[0, 0] = 255
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "e.jpg", exif=exif, quality=100)
    ref = load_reference(tmp_path / "e.jpg")
    # displayed image is 4 tall × 2 wide → padded to 4×4 with 1 column each side; top-left white pixel → top-right
    rgb = ref.rgba[0]
    assert rgb[0, 2] > 0.8 and rgb[0, 1] < 0.2


def test_missing_and_corrupt_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_reference(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="not a readable image") as e:
        load_reference(tmp_path / "bad.png")
    assert "\n" not in str(e.value)


@requires_benchmark
@pytest.mark.parametrize("case,size", [("astronaut-horse", 600), ("space-shuttle", 797)])
def test_benchmark_quirks(case, size):
    # astronaut-horse/image.jpg is a PNG (RGBA) with a .jpg name; space-shuttle/image.jpg is 797×788
    folder = BENCHMARK / case
    ref = load_reference(folder / "image.jpg", depth=sibling_depth(folder / "image.jpg"))
    assert ref.size == size and ref.disparity is not None and ref.disparity.shape[-1] == size
    v = ref.at(64)
    assert v.rgb.shape == (3, 64, 64) and 0 <= float(v.depth.min()) and float(v.depth.max()) <= 1


@pytest.mark.skipif(importlib.util.find_spec("rembg") is not None, reason="rembg installed")
def test_preprocess_rgb_without_rembg_asks_for_rgba(tmp_path, capsys):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    assert preprocess_main([f"image={tmp_path / 'rgb.jpg'}", "no_depth=true"]) == 2
    assert "rembg" in capsys.readouterr().err


def test_preprocess_missing_depth_model_offline(tmp_path):
    arr = np.full((4, 6, 4), 255, np.uint8)
    _save_rgba(tmp_path / "a.png", arr)
    from animate124.preprocess import preprocess

    with pytest.raises(MissingWeightsError, match="nobody/no-depth-a124"):
        preprocess(str(tmp_path / "a.png"), str(tmp_path / "out"), "nobody/no-depth-a124")


def test_normalise_in_mask_hand_case():
    from animate124.preprocess import normalise_in_mask

    d = np.array([[1.0, 3.0], [2.0, 9.0]], np.float32)
    a = np.array([[1.0, 1.0], [0.5, 0.0]], np.float32)
    # masked values 1, 3, 2 → (d − 1)/2 = 0, 1, 0.5; unmasked → 0
    np.testing.assert_allclose(normalise_in_mask(d, a), [[0.0, 1.0], [0.5, 0.0]], atol=1e-6)


def test_preprocess_with_tiny_dpt(tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=64,
                    patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                    fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5])
    model_dir = tmp_path / "dpt"
    DPTForDepthEstimation(cfg).save_pretrained(model_dir)
    proc = DPTImageProcessorPil(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    proc.save_pretrained(model_dir)
    arr = np.random.default_rng(0).integers(0, 255, (30, 40, 4)).astype(np.uint8)
    arr[..., 3] = 0
    arr[5:25, 10:30, 3] = 255
    _save_rgba(tmp_path / "img.png", arr)
    out = tmp_path / "out"
    assert preprocess_main([f"image={tmp_path / 'img.png'}", f"depth_model={model_dir}", f"out_dir={out}"]) == 0
    rgba = np.asarray(Image.open(out / "rgba.png"))
    depth = np.asarray(Image.open(out / "depth.png"))
    assert rgba.shape == (40, 40, 4) and depth.shape == (40, 40)
    inside = rgba[..., 3] > 0
    # 0 outside the mask; inside normalised to [0, 1] (a random tiny DPT has a ~1e-8 output range, so the 1e-9 of
    # (d − min)/(max − min + 1e-9) keeps the top below 255: check the spread, the exact values are tested below)
    assert depth[~inside].max() == 0 and depth[inside].min() == 0 and depth[inside].max() > 100
    ref = load_reference(out / "rgba.png", depth=out / "depth.png")
    assert ref.at(20).depth.shape == (1, 20, 20)
