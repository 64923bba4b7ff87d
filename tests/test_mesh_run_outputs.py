"""phase=all's end-of-run GLB and viewer (phases/all.py::_final_outputs): written with phase.outputs, each off
switch honoured, and a failure is a warning + report entry, not a lost run."""

from types import SimpleNamespace

import pygltflib
from test_export import _fake_run

from animate124.config.export import RunOutputsConfig
from animate124.config.phases import AllPhasesConfig
from animate124.phases import all as all_phase

SMALL = dict(glb_frames=2, glb_resolution=24, viewer_views=2, viewer_times=2, viewer_size=16)


def test_final_outputs_written_and_switchable(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, "refine", keyframes=2)
    pcfg = AllPhasesConfig(outputs=RunOutputsConfig(**SMALL))
    out = all_phase._final_outputs(SimpleNamespace(device="cpu"), run, pcfg)
    assert out["output_errors"] == {}
    g = pygltflib.GLTF2().load(out["glb"])
    assert len(g.nodes) == 2 and (run / "mesh" / "mesh_seq" / "frame_001.ply").is_file()
    assert out["viewer"] == str(run / "viewer" / "index.html") and (run / "viewer" / "atlas" / "t001.jpg").is_file()
    off = AllPhasesConfig(outputs=RunOutputsConfig(**SMALL, glb=False, viewer=False))
    other = tmp_path / "other"
    _fake_run(other, "refine", keyframes=2)
    assert all_phase._final_outputs(SimpleNamespace(device="cpu"), other, off) == {
        "glb": None, "viewer": None, "output_errors": {}}
    assert not (other / "mesh").exists() and not (other / "viewer").exists()


def test_failed_output_is_reported_not_raised(tmp_path, caplog):
    pcfg = AllPhasesConfig(outputs=RunOutputsConfig(**SMALL))
    out = all_phase._final_outputs(SimpleNamespace(device="cpu"), tmp_path / "empty", pcfg)  # no checkpoint
    assert out["glb"] is None and out["viewer"] is None
    assert set(out["output_errors"]) == {"glb", "viewer"} and "does not exist" in out["output_errors"]["glb"]
    assert "end-of-run glb was not written" in caplog.text
