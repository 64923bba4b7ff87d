"""The one phase table (config/phases.py::PHASES), the one checkpoint resolver (io/handoff.py) and the shared helpers
(metrics/image.psnr, OccupancyGrid.from_config) that the phases and export use."""

import json
import math

import pytest
import torch
from hydra.core.config_store import ConfigStore

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.config import phases as P
from animate124.config.schema import RenderConfig
from animate124.errors import CheckpointError
from animate124.export import scene as scene_mod
from animate124.io.handoff import find_checkpoint
from animate124.metrics.image import psnr, psnr_from_mse
from animate124.phases import PHASE_MODULES
from animate124.phases import all as all_phase
from animate124.render.occupancy import OccupancyGrid


def test_every_registry_derives_from_the_phase_table():
    kinds = [spec.kind for spec in P.PHASES]
    assert sorted(k.value for k in kinds) == sorted(k.value for k in P.PhaseKind)  # one row per kind
    assert all_phase.ORDER == ("textual_inversion", "static", "dynamic", "refine")
    assert scene_mod.PHASE_ORDER == ("refine", "dynamic", "static", "fit")
    assert scene_mod.STATIC_PHASES == ("static",)
    assert PHASE_MODULES[P.PhaseKind.refine] == "animate124.phases.refine" and len(PHASE_MODULES) == len(kinds)
    repo = ConfigStore.instance().repo["phase"]
    for spec in P.PHASES:
        assert f"base_{spec.kind.value}.yaml" in repo
        assert spec.config().kind == spec.kind  # the config class declares its own kind
    for name in all_phase.ORDER:  # every chain phase has its field in AllPhasesConfig
        assert isinstance(getattr(P.AllPhasesConfig(), name), P.TrainLoopConfig)


def _ckpt(run, phase, step, complete=None):
    d = run / phase / "checkpoints" / f"step-{step:07d}"
    d.mkdir(parents=True)
    (d / "state.json").write_text("{}")
    if complete is not None:
        (run / phase / "report.json").write_text(json.dumps({"complete": complete}))
    return d


def test_find_checkpoint_prefers_finished_phases_then_any(tmp_path, caplog):
    run = tmp_path / "run"
    dyn = _ckpt(run, "dynamic", 4, complete=False)
    static = _ckpt(run, "static", 9, complete=True)
    order = ("refine", "dynamic", "static")
    assert find_checkpoint(run, order) == (static, "static")  # the unfinished dynamic is passed over
    (run / "static" / "report.json").write_text(json.dumps({"complete": False}))
    with caplog.at_level("WARNING"):
        assert find_checkpoint(run, order) == (dyn, "dynamic")
    assert "unfinished phase dynamic" in caplog.text
    assert find_checkpoint(run, ("static",)) == (static, "static")


def test_find_checkpoint_init_from_and_errors(tmp_path):
    other = tmp_path / "other"
    _ckpt(other, "static", 3)
    newest = _ckpt(other, "static", 12)
    for given in (newest, newest.parent, newest.parent.parent, other):
        assert find_checkpoint(tmp_path / "this_run", ("static",), init_from=str(given)) == (newest, None)
    with pytest.raises(CheckpointError, match=r"init_from=.* holds no checkpoint .*static/checkpoints"):
        find_checkpoint(other, ("static",), init_from=str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match=r"no dynamic checkpoint in .*this_run; run phase=dynamic"):
        find_checkpoint(tmp_path / "this_run", ("dynamic",), missing="no dynamic checkpoint in {run_dir}; run phase=dynamic")
    with pytest.raises(CheckpointError, match="holds no checkpoint of refine, dynamic"):
        find_checkpoint(tmp_path / "this_run", ("refine", "dynamic"))


def test_psnr_one_definition():
    a = torch.zeros(3, 4, 4)
    b = torch.full((3, 4, 4), 0.1)
    # MSE = 0.01 → −10·log10(0.01) = 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-5)
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr(a, a) == pytest.approx(120.0)  # floored at MSE 1e-12
    assert math.isfinite(psnr_from_mse(0.0))


def test_occupancy_from_config_reads_render_settings():
    render = RenderConfig(grid_resolution=16, occupancy_decay=0.9, density_thresh=3.0, update_fraction=0.5)
    occ = OccupancyGrid.from_config(render, time_slots=4, bound=1.5)
    assert (occ.resolution, occ.time_slots, occ.bound, occ.decay, occ.density_thresh, occ.update_fraction) == (
        16, 4, 1.5, 0.9, 3.0, 0.5)
    occ = OccupancyGrid.from_config(render, 2, 1.0, density_thresh=1.0, resolution=8)
    assert (occ.resolution, occ.density_thresh) == (8, 1.0)
