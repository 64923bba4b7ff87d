"""A trained scene: GLBs (flipbook and tracked) from a short ``fit`` run on the synthetic blob scene load in trimesh
and pass the Khronos glTF validator (npm ``gltf-validator``, installed once into ~/.cache/animate124/node).

Slow (a fit run, node); skipped when node/npm are missing or the npm install fails (no registry).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pygltflib
import pytest
import trimesh
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401
from animate124.config.export import ExportConfig, MeshMode
from animate124.data.synthetic import make_synthetic_scene
from animate124.export.outputs import export
from animate124.phases.base import seed_everything, train
from animate124.phases.fit import FitPhase

VALIDATOR = "gltf-validator@2.0.0-dev.3.10"
NODE_DIR = Path(os.environ.get("ANIMATE124_NODE_DIR", Path.home() / ".cache" / "animate124" / "node"))
RUNNER = Path(__file__).with_name("_gltf_validate.js")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit_glb")
    scene = make_synthetic_scene(tmp / "data", size=24, n_train=12, n_test=3, n_val=0)
    overrides = ["phase=fit", f"data.path={scene}", f"run_dir={tmp / 'run'}", "field=fit_cpu", "render=fit_cpu",
                 "render.grid_resolution=16", "phase.time_slots=2", "phase.max_steps=40", "phase.batch_rays=512",
                 "phase.val_every=0", "phase.eval_max_frames=1", "phase.progress=false"]
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("run", overrides=overrides))
    seed_everything(cfg.seed)
    assert train(FitPhase(cfg, tmp / "run"))["complete"]
    return tmp / "run"


@pytest.fixture(scope="module")
def validator_dir():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed (apt-get install nodejs npm)")
    if not (NODE_DIR / "node_modules" / "gltf-validator").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), VALIDATOR],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            pytest.skip(f"npm install {VALIDATOR} failed: {res.stderr.strip()[-300:]}")
    return NODE_DIR


def _validate(glb: Path, node_dir: Path) -> dict:
    res = subprocess.run(["node", str(RUNNER), str(glb)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VALIDATOR_DIR": str(node_dir)})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("mode", [MeshMode.flipbook, MeshMode.tracked])
def test_fit_glb_loads_and_validates(fit_run, validator_dir, mode):
    cfg = ExportConfig(run_dir=str(fit_run), format="mesh", frames=4, out=str(fit_run / f"mesh_{mode.value}"),
                       progress=False, device="cpu")
    cfg.mesh.mode, cfg.mesh.resolution = mode, 64
    export(cfg)
    glb = fit_run / f"mesh_{mode.value}" / "animated.glb"
    loaded = trimesh.load(glb)  # a real glTF reader
    assert len(loaded.geometry) == (4 if mode == MeshMode.flipbook else 1)
    assert all(len(g.faces) > 100 for g in loaded.geometry.values())
    g = pygltflib.GLTF2().load(str(glb))
    assert len(g.animations) == 1
    report = _validate(glb, validator_dir)
    assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["messages"]
