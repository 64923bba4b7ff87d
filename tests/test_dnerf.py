"""D-NeRF reader: compositing on white, downscaling, file_path with/without extension, one-line input errors."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from animate124.data.dnerf import load_dnerf
from animate124.errors import InputError

TOL = 1.0 / 255.0  # 8-bit PNG quantisation


def _write_dataset(root, frames=2, size=4, ext_in_json=False):
    (root / "train").mkdir(parents=True)
    entries = []
    for k in range(frames):
        img = np.zeros((size, size, 4), np.uint8)
        img[..., 0] = 255  # pure red ...
        img[..., 3] = 255 if k == 0 else 128  # ... opaque in frame 0, alpha 128/255 in frame 1
        img[0, 0] = [0, 0, 255, 0]  # one fully transparent pixel (its colour must not matter)
        iio.imwrite(root / "train" / f"r_{k}.png", img)
        c2w = np.eye(4)
        c2w[:3, 3] = [0.0, 0.0, 2.0 + k]
        entries.append({"file_path": f"./train/r_{k}" + (".png" if ext_in_json else ""), "time": k / 2,
                        "transform_matrix": c2w.tolist()})
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.5, "frames": entries}))
    return root


@pytest.mark.parametrize("ext_in_json", [False, True])
def test_composite_on_white_and_fields(tmp_path, ext_in_json):
    split = load_dnerf(_write_dataset(tmp_path, ext_in_json=ext_in_json), "train", scale=0.5)
    assert split.images.shape == (2, 4, 4, 3) and split.alphas.shape == (2, 4, 4, 1) and split.c2w.shape == (2, 4, 4)
    assert split.times.tolist() == [0.0, 0.5]
    # frame 0, opaque red: (1, 0, 0); frame 1, α = 128/255 ≈ 0.502: red·α + white·(1−α) = (1, 0.498, 0.498)
    torch.testing.assert_close(split.images[0, 1, 1], torch.tensor([1.0, 0.0, 0.0]), atol=TOL, rtol=0)
    torch.testing.assert_close(split.images[1, 1, 1], torch.tensor([1.0, 127 / 255, 127 / 255]), atol=TOL, rtol=0)
    torch.testing.assert_close(split.images[0, 0, 0], torch.ones(3), atol=TOL, rtol=0)  # transparent → white
    # camera positions scaled by 0.5: z = 2·0.5 and 3·0.5
    assert split.c2w[:, 2, 3].tolist() == [1.0, 1.5]
    # focal = 0.5·W / tan(fovx/2) = 2 / tan(0.25) = 7.8293
    assert split.focal == pytest.approx(2.0 / np.tan(0.25))
    # composite on black: W + (0 − 1)(1 − α) = premultiplied colour = (0.502, 0, 0) in frame 1
    black = split.composite(torch.zeros(3))
    torch.testing.assert_close(black[1, 1, 1], torch.tensor([128 / 255, 0.0, 0.0]), atol=TOL, rtol=0)
    flat = split.composite(torch.zeros(2, 3), index=torch.tensor([16 + 5, 5]))  # frame 1 / frame 0, pixel (1, 1)
    torch.testing.assert_close(flat, torch.tensor([[128 / 255, 0.0, 0.0], [1.0, 0.0, 0.0]]), atol=TOL, rtol=0)


def test_downscale_averages_premultiplied_colour(tmp_path):
    split = load_dnerf(_write_dataset(tmp_path), "train", downscale=2)
    assert split.images.shape == (2, 2, 2, 3)
    # top-left 2x2 block of frame 0: three opaque red pixels + one transparent one → α = 3/4,
    # premultiplied (3/4, 0, 0), on white: (3/4 + 1/4, 1/4, 1/4) = (1, 0.25, 0.25)
    torch.testing.assert_close(split.alphas[0, 0, 0], torch.tensor([0.75]), atol=TOL, rtol=0)
    torch.testing.assert_close(split.images[0, 0, 0], torch.tensor([1.0, 0.25, 0.25]), atol=TOL, rtol=0)


def test_input_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_dnerf(tmp_path / "missing")
    with pytest.raises(InputError, match="transforms_train.json not found"):
        load_dnerf(tmp_path)
    (tmp_path / "transforms_train.json").write_text("{bad json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_dnerf(tmp_path)
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.5, "frames": []}))
    with pytest.raises(InputError, match="has no frames"):
        load_dnerf(tmp_path)
    (tmp_path / "transforms_train.json").write_text(json.dumps({"frames": [{}]}))
    with pytest.raises(InputError, match="camera_angle_x"):
        load_dnerf(tmp_path)
    frame = {"file_path": "./train/nope", "transform_matrix": np.eye(4).tolist(), "time": 0}
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": 0.5, "frames": [frame]}))
    with pytest.raises(InputError, match="nope.*not found") as info:
        load_dnerf(tmp_path)
    assert "\n" not in str(info.value)
