"""The static phase (phases/static.py): schedules, input resolution, and short CLI runs with models=tiny on CPU."""

import json

import pytest
import torch
from conftest import BENCHMARK, requires_benchmark

from animate124.errors import InputError
from animate124.guidance.models import download_command
from animate124.phases.static import StaticPhase, default_static_prompt
from animate124.run import main as run_main

# Tiny sizes keep one SDS step (render + normals + two tiny UNets) well under a second of CPU.
FAST = ["models=tiny", "field=small", "render=fast", "render.grid_resolution=32", "render.max_steps=64",
        "phase.render_size=16", "phase.ref_size=16", "phase.val_size=16", "phase.val_views=2",
        "guidance.sd.resolution=64", "guidance.zero123.resolution=64", "phase.progress=false"]


def _compose(overrides):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401

    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=["phase=static", *overrides]))


def test_default_static_prompt_rule():
    assert default_static_prompt("a panda is dancing") == "a high-resolution DSLR image of a panda"
    assert default_static_prompt("a panda") == "a high-resolution DSLR image of a panda"


def test_schedules(tmp_path):
    cfg = _compose(["phase.max_steps=5000", "guidance.sd.enabled=false", "guidance.zero123.enabled=false"])
    ph = StaticPhase(cfg, tmp_path)
    ph.terms = ["stand-in"]  # schedules only; build() is not needed
    # reference steps: all of 0..99, then every 4th (spec §7.1)
    assert all(ph.is_reference_step(s) for s in range(100))
    assert [ph.is_reference_step(s) for s in (100, 101, 102, 103, 104)] == [True, False, False, False, True]
    # coarse-to-fine: 16 levels − 8 for steps < 3000 (the original's "≤ 3000" of 5000)
    cfg.field.num_levels = 16
    assert ph.active_levels(0) == 8 and ph.active_levels(2999) == 8 and ph.active_levels(3000) is None
    # shading: normal-map shading with a = 1 for the first 20% of the steps
    assert ph.shading(999) == ("normal", 1.0)
    modes = [ph.shading(1000) for _ in range(400)]
    assert all(0.1 <= a <= 1.0 for _, a in modes)
    textureless = sum(m == "textureless" for m, _ in modes) / len(modes)
    assert 0.1 < textureless < 0.3  # rate 0.2; 400 draws → std 0.02


def test_missing_inputs_are_one_line_errors(tmp_path):
    ph = StaticPhase(_compose([]), tmp_path)
    with pytest.raises(InputError, match="image="):
        ph.build()


@requires_benchmark
def test_static_cli_tiny_models_end_to_end(tmp_path):
    run_dir = tmp_path / "panda"
    code = run_main(["phase=static", f"image={BENCHMARK / 'panda-dance' / 'rgba.png'}", "prompt=a panda is dancing",
                     f"run_dir={run_dir}", "phase.max_steps=4", "phase.known_iters=2", *FAST])
    assert code == 0
    report = json.loads((run_dir / "static" / "report.json").read_text())
    assert report["complete"] and report["step"] == 4
    assert (run_dir / "static" / "val" / "step_0000004.png").is_file()
    ckpt = run_dir / "static" / "checkpoints" / "step-0000004"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "state.json").is_file()
    stats = report["last_train_stats"]  # step 3 is an SDS step: both terms ran and were finite
    assert stats["ref_step"] == 0.0 and "sd/loss" in stats and "zero123/loss" in stats
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    state = json.loads((ckpt / "state.json").read_text())
    assert state["extra"]["inputs"]["static_prompt"] == "a high-resolution DSLR image of a panda"
    # a later invocation resumes from the stored inputs without image=/prompt=, and continues the step count
    assert run_main(["phase=static", f"run_dir={run_dir}", "phase.max_steps=5", "phase.known_iters=2", *FAST]) == 0
    assert json.loads((run_dir / "static" / "report.json").read_text())["step"] == 5


@requires_benchmark
@pytest.mark.parametrize("case", ["astronaut-horse", "space-shuttle"])
def test_static_benchmark_image_quirks(tmp_path, case):
    # astronaut-horse/image.jpg is a PNG; space-shuttle/image.jpg is a 797×788 RGB JPEG (used as fully opaque).
    # Reference-view steps only (no guidance) keep this to the input path + one optimisation step.
    run_dir = tmp_path / case
    code = run_main(["phase=static", f"image={BENCHMARK / case / 'image.jpg'}", "prompt=an astronaut rides a horse",
                     f"run_dir={run_dir}", "phase.max_steps=1", "guidance.sd.enabled=false",
                     "guidance.zero123.enabled=false", *FAST])
    assert code == 0
    report = json.loads((run_dir / "static" / "report.json").read_text())
    assert report["complete"] and "ref/depth" in report["last_train_stats"]


@requires_benchmark
def test_static_without_weights_is_a_one_line_error(tmp_path, capsys):
    # models=pretrained offline (conftest sets HF_HUB_OFFLINE=1): exit code 2 and one line naming the id + the fix
    code = run_main(["phase=static", f"image={BENCHMARK / 'panda-dance' / 'rgba.png'}", "prompt=a panda",
                     f"run_dir={tmp_path / 'r'}", "guidance.sd.model=nobody/no-such-sd-a124", "field=small",
                     "render=fast", "phase.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "nobody/no-such-sd-a124" in err[0] and download_command("nobody/no-such-sd-a124") in err[0]
