"""Synthetic blob scene: its independent renderer against a closed-form optical depth, and the D-NeRF output."""

import math

import pytest
import torch

from animate124.data.dnerf import load_dnerf
from animate124.data.synthetic import (
    RADIUS,
    BlobScene,
    look_at,
    main,
    make_synthetic_scene,
    render_view,
    spherical_position,
)
from animate124.errors import InputError

ALPHA_TOL = 2e-3  # midpoint quadrature with 128 samples over the sphere chord (dt ≈ 0.013 ≪ std 0.1)


def test_single_blob_matches_closed_form():
    # One Gaussian blob at the origin, peak p = 2, std s = 0.1, colour (0.2, 0.4, 0.6).
    # Optical depth through the centre: ∫ p·exp(−r²/2s²) dr = p·s·√(2π) = 2·0.1·2.5066 = 0.50133,
    # so α = 1 − exp(−0.50133) = 0.39422 at the centre pixel (even size: 4 pixels straddle the centre ray,
    # each offset by half a pixel; at 64 px and fov 40°, that is ≈ 0.015 world units, a 1.1 % drop in depth).
    z = torch.zeros(1, 3)
    scene = BlobScene(base=z, amp=z, freq=z, phase=z, std=torch.tensor([0.1]), peak=torch.tensor([2.0]),
                      color=torch.tensor([[0.2, 0.4, 0.6]]))
    rgba = render_view(scene, look_at(spherical_position(20.0, 30.0, RADIUS)), 0.5, 64)
    focal = 32 / math.tan(math.radians(20.0))
    b = RADIUS * math.hypot(0.5, 0.5) / focal  # distance of the nearest pixel rays from the centre
    expected = 1.0 - math.exp(-2.0 * 0.1 * math.sqrt(2 * math.pi) * math.exp(-b * b / (2 * 0.01)))
    assert rgba[31:33, 31:33, 3].max().item() == pytest.approx(expected, abs=ALPHA_TOL)
    torch.testing.assert_close(rgba[32, 32, :3], torch.tensor([0.2, 0.4, 0.6]), atol=1e-4, rtol=0)
    assert rgba[0, 0, 3] == 0.0  # corner rays miss the bounding sphere


def test_scene_folder_novel_views_and_times(tmp_path):
    root = make_synthetic_scene(tmp_path / "blobs", size=24, n_train=4, n_test=2, n_val=0)
    train, test = load_dnerf(root, "train"), load_dnerf(root, "test")
    assert train.images.shape == (4, 24, 24, 3) and test.images.shape == (2, 24, 24, 3)
    assert train.times.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])  # k / (n − 1)
    assert test.times.tolist() == pytest.approx([0.25, 0.75])  # (k + 0.5) / n: never a training time
    assert not any(torch.allclose(a, b) for a in test.c2w for b in train.c2w)  # novel cameras
    assert (train.alphas[:, 12, 12] > 0.9).all()  # the body blob at the origin is opaque in every view
    border = torch.cat([train.alphas[:, 0], train.alphas[:, -1], train.alphas[:, :, 0], train.alphas[:, :, -1]], 1)
    assert border.max() < 0.05  # the object is framed inside the image
    assert torch.allclose(train.c2w[:, :3, 3].norm(dim=-1), torch.full((4,), RADIUS))


def test_cli(tmp_path, capsys):
    assert main([f"out={tmp_path / 'cli'}", "size=8", "n_train=1", "n_test=1", "n_val=0"]) == 0
    assert (tmp_path / "cli" / "transforms_test.json").is_file()
    assert main(["size=8"]) == 2
    assert capsys.readouterr().err.startswith("error: missing out=DIR")


def test_multicam_layout_is_sparse_in_time(tmp_path):
    root = make_synthetic_scene(tmp_path / "mc", size=8, n_test=4, n_val=2, layout="multicam", n_times=3, n_cams=2)
    train, test, val = load_dnerf(root, "train"), load_dnerf(root, "test"), load_dnerf(root, "val")
    assert train.times.tolist() == pytest.approx([0, 0, 0.5, 0.5, 1, 1])  # 3 times × a rig of 2 cameras
    torch.testing.assert_close(train.c2w[0], train.c2w[2])  # the rig is fixed across times
    assert not torch.allclose(train.c2w[0], train.c2w[1])
    assert test.times.tolist() == pytest.approx([0.25, 0.75, 0.25, 0.75])  # midpoints, cycled: novel times
    assert val.times.tolist() == pytest.approx([0.25, 0.75])
    assert not any(torch.allclose(a, b) for a in torch.cat([test.c2w, val.c2w]) for b in train.c2w)


def test_monocular_layout_moves_one_camera(tmp_path):
    root = make_synthetic_scene(tmp_path / "mono", size=8, n_train=5, n_test=1, n_val=0, layout="monocular")
    train = load_dnerf(root, "train")
    assert train.times.tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    positions = train.c2w[:, :3, 3]
    assert (positions[1:] - positions[:-1]).norm(dim=-1).min() > 0.5  # a new viewpoint at every time
    assert torch.allclose(positions.norm(dim=-1), torch.full((5,), RADIUS))


def test_bad_layout_is_rejected(tmp_path):
    with pytest.raises(InputError, match="unknown layout 'grid'"):
        make_synthetic_scene(tmp_path / "x", size=8, layout="grid")
    assert main([f"out={tmp_path / 'y'}", "size=8", "layout=multicam", "n_times=1"]) == 2
