"""``python -m animate124.rerender`` end to end with models=tiny on a tiny run (offline, CPU), the depth ControlNet's
hub layout, and the command's errors."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from animate124.export.writers import read_frames

FRAMES, SIZE = 5, 32


def _tiny_run(run_dir: Path) -> Path:
    """A run directory with a dynamic-phase checkpoint of a fresh small field, a prompt and a 32-d learned token."""
    from animate124.config.schema import FieldConfig, RenderConfig
    from animate124.fields import build_field
    from animate124.guidance.textual_inversion import save_learned_embeds
    from animate124.io.checkpoint import merge_states, save_checkpoint
    from animate124.io.run_dir import phase_dirs, save_inputs, write_json_atomic
    from animate124.phases.textual_inversion import learned_embeds_path
    from animate124.render.occupancy import OccupancyGrid

    fcfg = FieldConfig(encoding="hash", num_levels=4, log2_table_size=10, max_resolution=64, keyframes=2)
    rcfg = RenderConfig(grid_resolution=16, max_steps=32)
    field = build_field(fcfg, dynamic=True)
    occ = OccupancyGrid(16, 4, fcfg.bound)
    config = {"field": asdict(fcfg), "render": asdict(rcfg), "phase": {"kind": "dynamic"}}
    dirs = phase_dirs(run_dir, "dynamic")
    save_checkpoint(dirs.checkpoints, 3, merge_states({"field": field, "occupancy": occ}), None, {"config": config})
    write_json_atomic(dirs.report, {"complete": True})
    save_inputs(run_dir, prompt="a panda is dancing")
    save_learned_embeds(learned_embeds_path(run_dir), {"_panda_": torch.randn(32)})
    return run_dir


def _env(tmp_path):
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                ANIMATE124_CACHE=os.environ.get("ANIMATE124_CACHE", str(tmp_path / "cache")))


@pytest.mark.slow  # ~95 s on the loaded 2-core CI box (imports + tiny SD/SVD); the in-process test below is the fast twin
def test_rerender_command_tiny_models_offline(tmp_path):
    run = _tiny_run(tmp_path / "run")
    cmd = [sys.executable, "-m", "animate124.rerender", f"run_dir={run}", "models=tiny", "device=cpu",
           f"frames={FRAMES}", f"size={SIZE}", "path=orbit", "camera.turns=0.25", "progress=false",
           "keyframes.every=3", "keyframes.steps=3", "keyframes.tile_scale=0.5", "inbetween.steps=3",
           "'instances=[{translation:[0,0,0]}]'"]
    res = subprocess.run(" ".join(cmd), shell=True, check=False, capture_output=True, text=True, env=_env(tmp_path),
                         cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = run / "rerender"
    for name in ("coarse", "final", "side_by_side"):
        assert read_frames(out / f"{name}.mp4").shape[0] == FRAMES
    assert read_frames(out / "keyframes.mp4").shape[0] == 3  # frames 0, 3 and the last (4)
    assert read_frames(out / "side_by_side.mp4").shape[1:] == (SIZE, 2 * SIZE, 3)
    assert sorted(p.name for p in (out / "frames" / "final").iterdir())[0] == "000.png"
    report = json.loads((out / "report.json").read_text())
    assert report["keyframes"] == [0, 3, 4] and "_panda_" in report["prompt"] and report["fallbacks"] == []
    final = read_frames(out / "frames" / "final").astype("float32")
    keys = read_frames(out / "frames" / "keyframes").astype("float32")
    assert abs(final[[0, 3, 4]] - keys).max() == 0  # keyframes are kept exactly in the final video
    coarse = read_frames(out / "frames" / "coarse").astype("float32")
    assert abs(final[1] - coarse[1]).mean() > 1.0  # the in-betweens were regenerated, not copied


def test_rerender_in_process_toy_scene_with_known_region(tmp_path):
    """The whole stage on a toy analytic scene (no checkpoint): outputs, keyframes kept, known region at the input view."""
    import numpy as np
    from _export_toys import fast_render_cfg, full_occupancy, toy_field
    from PIL import Image

    from animate124.config.rerender import RerenderConfig
    from animate124.export.scene import Scene
    from animate124.guidance.textual_inversion import save_learned_embeds
    from animate124.phases.textual_inversion import learned_embeds_path
    from animate124.rerender.pipeline import rerender

    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[8:24, 8:24] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(tmp_path / "input.png")
    save_learned_embeds(learned_embeds_path(tmp_path), {"_blob_": torch.randn(32)})
    scene = Scene(field=toy_field(), occupancy=full_occupancy(), render_cfg=fast_render_cfg(max_steps=24),
                  inputs={"image": str(tmp_path / "input.png"), "prompt": "a blob is dancing"}, phase="fit",
                  config={}, checkpoint=Path("."))
    cfg = RerenderConfig(run_dir=str(tmp_path), frames=4, size=SIZE, device="cpu", progress=False, fps=4)
    cfg.models.kind = "tiny"
    cfg.keyframes.every, cfg.keyframes.steps, cfg.inbetween.steps = 3, 2, 2
    written = rerender(cfg, scene)
    out = tmp_path / "rerender"
    assert {p.name for p in written} >= {"coarse.mp4", "keyframes.mp4", "final.mp4", "side_by_side.mp4", "report.json"}
    report = json.loads((out / "report.json").read_text())
    assert report["keyframes"] == [0, 3] and report["prompt"] == "a _blob_ is dancing"
    assert report["known_region"].startswith("on")  # the orbit starts at the input camera
    final, keys = read_frames(out / "frames" / "final"), read_frames(out / "frames" / "keyframes")
    assert final.shape == (4, SIZE, SIZE, 3) and (final[[0, 3]] == keys).all()


def test_rerender_rejects_bad_settings_with_one_line_errors():
    from animate124.config.rerender import RerenderConfig
    from animate124.errors import ConfigError, InputError
    from animate124.rerender.pipeline import validate

    with pytest.raises(InputError, match="run_dir is required"):
        validate(RerenderConfig())
    for kwargs, match in (({"size": 30}, "multiple of 8"), ({"frames": 1}, "frames >= 2"),
                          ({"cameras": "c.json"}, "not cameras=")):
        with pytest.raises(ConfigError, match=match):
            validate(RerenderConfig(run_dir="r", **kwargs))
    cfg = RerenderConfig(run_dir="r")
    cfg.inbetween.strength = 0.0
    with pytest.raises(ConfigError, match="inbetween.strength"):
        validate(cfg)


def test_depth_controlnet_hub_layout_loads_by_local_dir(tmp_path):
    """Save the tiny depth ControlNet in the real repo's flat layout and load it as ``pretrained`` from that folder."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from animate124.config.schema import ModelsConfig
    from animate124.rerender.models import DEPTH_HUB_FILES, load_depth_controlnet, tiny_depth_controlnet

    net = tiny_depth_controlnet()
    repo = tmp_path / "control_v11f1p_sd15_depth"
    net.save_pretrained(repo)  # writes config.json + diffusion_pytorch_model.safetensors (flat, no subfolder)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, repo / "diffusion_pytorch_model.bin")
    half = {k: v.half() for k, v in state.items()}
    torch.save(half, repo / "diffusion_pytorch_model.fp16.bin")
    save_file(half, str(repo / "diffusion_pytorch_model.fp16.safetensors"))
    assert sorted(p.name for p in repo.iterdir()) == sorted(DEPTH_HUB_FILES)
    loaded = load_depth_controlnet(str(repo), ModelsConfig(kind="pretrained", local_files_only=True), "cpu", "float32")
    assert isinstance(loaded, ControlNetModel)
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(Exception, match="local dir"):
        load_depth_controlnet(str(tmp_path / "missing_subfolder" / "x"), ModelsConfig(kind="pretrained",
                              local_files_only=True), "cpu", "float32")
