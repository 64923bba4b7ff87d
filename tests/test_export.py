"""Export (animate124/export/: outputs.py, scene.py, writers.py, CLI): writers read back, paths × time → files, D-NeRF files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _export_toys import fast_render_cfg, full_occupancy, toy_field

from animate124.config.export import ExportConfig, InstanceConfig, TimeConfig
from animate124.errors import CheckpointError, InputError
from animate124.export.outputs import build_paths, export
from animate124.export.scene import Scene, pick_phase
from animate124.export.writers import depth_to_gray, read_frames, sibling, tile, write_frames
from animate124.render.cameras import spherical_to_c2w

CODEC_TOL = 40  # uint8 levels: H.264 at quality 8 on smooth gradients stays well within this


def _scene():
    return Scene(field=toy_field(), occupancy=full_occupancy(), render_cfg=fast_render_cfg(max_steps=64),
                 inputs={}, phase="fit", config={}, checkpoint=Path("."))


def _frames(n, h, w):
    y = torch.linspace(0, 1, h)[None, :, None, None]
    x = torch.linspace(0, 1, w)[None, None, :, None]
    k = torch.arange(n, dtype=torch.float32)[:, None, None, None] / max(n, 1)
    return torch.cat([x.expand(n, h, w, 1), y.expand(n, h, w, 1), k.expand(n, h, w, 1)], dim=-1)


@pytest.mark.parametrize(("suffix", "h", "w"), [(".mp4", 32, 48), (".mp4", 21, 35), (".gif", 21, 35), ("", 20, 30)])
def test_writers_read_back_count_and_size(tmp_path, suffix, h, w):
    frames = _frames(7, h, w)
    out = write_frames(tmp_path / f"v{suffix}", frames, fps=10)
    back = read_frames(out)
    assert back.shape == (7, h, w, 3)  # never resized, odd sizes included
    expected = (frames.clamp(0, 1) * 255).round().numpy()
    assert np.abs(back.astype(np.float32) - expected).mean() < CODEC_TOL / 4
    if suffix == "":
        assert sorted(p.name for p in out.iterdir())[:2] == ["000.png", "001.png"]
        np.testing.assert_array_equal(back, expected.astype(np.uint8))  # PNG is lossless


def test_sibling_tile_and_depth():
    assert sibling("a/v.mp4", "depth") == Path("a/v_depth.mp4")
    assert sibling("a/frames", "alpha") == Path("a/frames_alpha")
    assert sibling("a/v.gif", "sheet", ".png") == Path("a/v_sheet.png")
    imgs = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1).expand(6, 2, 3, 1)
    sheet = tile(imgs, 2, 3, pad=1, pad_value=-1.0)
    assert sheet.shape == (2 * 2 + 1, 3 * 3 + 2, 1)
    assert sheet[0, 0, 0] == 0 and sheet[0, 4, 0] == 1 and sheet[3, 8, 0] == 5 and sheet[2, 0, 0] == -1
    # depth 2 (near) → 1, depth 4 (far) → 0, background (alpha 0) → 0; range given explicitly
    depth = torch.tensor([2.0, 4.0, 3.0, 0.0]).reshape(1, 1, 4, 1)
    alpha = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 4, 1)
    torch.testing.assert_close(depth_to_gray(depth, alpha, (2.0, 4.0)).flatten(), torch.tensor([1.0, 0.0, 0.5, 0.0]))


def test_build_paths_orbit_fixed_and_keyframes(tmp_path):
    cfg = ExportConfig(run_dir="x", frames=5, size=8)
    [(name, path)] = build_paths(cfg)
    assert name == "orbit" and len(path) == 5
    cfg.path, cfg.camera.views = "fixed", [[0.0, 0.0], [10.0, 90.0]]
    assert [n for n, _ in build_paths(cfg)] == ["view0", "view1"]
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keyframes": [{"azimuth": 0, "time": 0}, {"azimuth": 90, "time": 1}]}))
    cfg.path = str(keys)
    [(name, path)] = build_paths(cfg)
    assert name == "keys" and len(path) == 5 and float(path.times[-1]) == 1.0
    cfg.path = "zigzag"
    with pytest.raises(InputError):
        build_paths(cfg)


def test_export_orbit_mp4_with_depth_alpha_and_sheet(tmp_path):
    out = tmp_path / "orbit.mp4"
    cfg = ExportConfig(run_dir=str(tmp_path), frames=6, size=18, fps=6, out=str(out), depth=True, alpha=True,
                       sheet_views=2, sheet_times=3, progress=False, device="cpu")
    written = export(cfg, scene=_scene())
    assert set(written) == {out, sibling(out, "depth"), sibling(out, "alpha"), sibling(out, "sheet", ".png")}
    rgb = read_frames(out)
    assert rgb.shape == (6, 18, 18, 3)
    assert rgb.min() < 200 and rgb.max() > 240  # object on white
    assert read_frames(sibling(out, "alpha")).shape == (6, 18, 18, 3)
    sheet = np.asarray(__import__("imageio").imread(sibling(out, "sheet", ".png")))
    assert sheet.shape[:2] == (2 * 18 + 2, 3 * 18 + 2 * 2)


def test_export_gif_turntable_and_pingpong_fixed(tmp_path):
    cfg = ExportConfig(run_dir=str(tmp_path), path="turntable", frames=4, size=16, out=str(tmp_path / "t.gif"),
                       contact_sheet=False, progress=False, device="cpu")
    [gif] = export(cfg, scene=_scene())
    assert read_frames(gif).shape == (4, 16, 16, 3)
    # fixed view, pingpong at speed 2 over 5 frames: τ = 0, .5, 1, .5, 0 → frames 0/4 and 1/3 identical
    cfg = ExportConfig(run_dir=str(tmp_path), path="fixed", frames=5, size=16, out=str(tmp_path / "pp"),
                       time=TimeConfig(loop="pingpong", speed=2.0), contact_sheet=False, progress=False, device="cpu")
    [folder] = export(cfg, scene=_scene())
    frames = read_frames(folder).astype(np.int32)
    assert frames.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(frames[0], frames[4])
    np.testing.assert_array_equal(frames[1], frames[3])
    assert np.abs(frames[0] - frames[2]).max() > 10  # the blobs moved between τ = 0 and τ = 1


def test_export_instances_two_copies(tmp_path):
    cfg = ExportConfig(run_dir=str(tmp_path), frames=2, size=16, out=str(tmp_path / "two"), contact_sheet=False,
                       progress=False, device="cpu",
                       instances=[InstanceConfig(translation=[0.0, -0.5, 0.0], scale=0.5),
                                  InstanceConfig(translation=[0.0, 0.5, 0.0], scale=0.5, time_offset=0.5)])
    [folder] = export(cfg, scene=_scene())
    assert read_frames(folder).shape == (2, 16, 16, 3)


def test_cameras_file_renders_in_file_order(tmp_path):
    c2w = spherical_to_c2w(torch.tensor([0.0, 0.0, 30.0]), torch.tensor([0.0, 90.0, 200.0]), 3.0)
    spec = {"camera_angle_x": 0.7, "w": 12, "h": 10,
            "frames": [{"file_path": f"r_{i}", "time": t, "transform_matrix": c2w[i].tolist()}
                       for i, t in enumerate([0.0, 0.5, 1.0])]}
    cam_file = tmp_path / "transforms_test.json"
    cam_file.write_text(json.dumps(spec))
    out = tmp_path / "renders"
    cfg = ExportConfig(run_dir=str(tmp_path), cameras=str(cam_file), out=str(out), progress=False, device="cpu")
    [folder] = export(cfg, scene=_scene())
    assert sorted(p.name for p in folder.iterdir()) == ["000.png", "001.png", "002.png"]
    frames = read_frames(folder)
    assert frames.shape == (3, 10, 12, 3)
    assert frames[0, 0, 0].tolist() == [255, 255, 255]  # white background in the corner
    with pytest.raises(InputError):
        export(ExportConfig(run_dir=str(tmp_path), cameras=str(cam_file), out=str(tmp_path / "x.mp4"),
                            progress=False, device="cpu"), scene=_scene())


def test_pick_phase_errors(tmp_path):
    with pytest.raises(InputError):
        pick_phase(tmp_path / "missing")
    with pytest.raises(CheckpointError):
        pick_phase(tmp_path)
    with pytest.raises(CheckpointError):
        pick_phase(tmp_path, "dynamic")


def test_cli_without_checkpoint_exits_2(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "animate124.export", f"run_dir={tmp_path}"], check=False,
                         capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=900)  # a ceiling for loaded machines
    assert res.returncode == 2, res.stderr
    assert "no checkpoint" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "outputs").exists()  # Hydra wrote nothing


def _fake_run(run_dir, phase="fit", complete=True, keyframes=4):
    """A run directory with one checkpoint of a freshly built small field (what the training loop writes)."""
    from dataclasses import asdict

    from animate124.config.schema import FieldConfig, RenderConfig
    from animate124.fields import build_field
    from animate124.io.checkpoint import merge_states, save_checkpoint
    from animate124.io.run_dir import phase_dirs, write_json_atomic
    from animate124.render.occupancy import OccupancyGrid

    fcfg = FieldConfig(encoding="hash", num_levels=4, log2_table_size=10, max_resolution=64, keyframes=keyframes)
    rcfg = RenderConfig(grid_resolution=16, max_steps=64)
    field = build_field(fcfg, dynamic=phase != "static")
    occ = OccupancyGrid(16, 1 if phase == "static" else 4, fcfg.bound)
    config = {"field": asdict(fcfg), "render": asdict(rcfg), "phase": {"kind": phase}}
    dirs = phase_dirs(run_dir, phase)
    save_checkpoint(dirs.checkpoints, 3, merge_states({"field": field, "occupancy": occ}), None, {"config": config})
    write_json_atomic(dirs.report, {"complete": complete})
    return field


def test_load_scene_picks_latest_finished_phase_and_exports(tmp_path):
    from animate124.export.scene import load_scene

    run = tmp_path / "run"
    _fake_run(run, "fit")
    dyn = _fake_run(run, "dynamic", keyframes=2)
    _fake_run(run, "refine", complete=False)  # unfinished: not picked while a finished phase exists
    scene = load_scene(run)
    assert scene.phase == "dynamic" and scene.occupancy.time_slots == 4
    x, t = torch.rand(5, 3) * 2 - 1, torch.rand(5)
    torch.testing.assert_close(scene.field(x, t).density, dyn(x, t).density)  # the saved weights were loaded
    assert load_scene(run, "fit").phase == "fit"
    field, occupancy, render_cfg, inputs = load_scene(run)  # the short form
    assert occupancy is not None and render_cfg.grid_resolution == 16 and inputs["prompt"] is None
    cfg = ExportConfig(run_dir=str(run), frames=2, size=8, out=str(tmp_path / "v.gif"), contact_sheet=False,
                       progress=False, device="cpu")
    [gif] = export(cfg)
    assert read_frames(gif).shape[1:] == (8, 8, 3)
