"""scripts/run_benchmark.py: command construction, aggregation into Markdown/JSON, the PIL bar plot."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rb():
    spec = importlib.util.spec_from_file_location("run_benchmark", ROOT / "scripts" / "run_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "benchmark.json").write_text(json.dumps([{"name": "a", "caption": "a red blob"},
                                                      {"name": "b", "caption": "a green cube"},
                                                      {"name": "c", "caption": "a blue sphere"}]))
    return bench


def _metrics(out, name, **values):
    d = out / "runs" / name
    d.mkdir(parents=True)
    data = {k: None for k in ("clip_t", "r_precision", "clip_i", "clip_i_all_views", "temporal_consistency",
                              "lpips_flicker")}
    data.update(values, protocol={"clip_model": "tiny/clip", "models": "tiny", "views": 2})
    (d / "metrics.json").write_text(json.dumps(data))


def test_select_cases_and_commands(rb, tmp_path):
    bench = _bench(tmp_path)
    assert [c["name"] for c in rb.select_cases(bench, "c,a")] == ["c", "a"]
    assert len(rb.select_cases(bench, "all")) == 3
    with pytest.raises(SystemExit):
        rb.select_cases(bench, "zzz")
    opts, flags = rb.parse_args([f"benchmark={bench}", "models=tiny", "launcher=joblib", "pipeline=phase=fit seed=1",
                                 "--skip-metrics"])
    assert flags == {"--skip-metrics"}
    cmd = rb.pipeline_command(opts, ["a", "b"], tmp_path / "out")
    assert cmd[1:5] == ["-m", "animate124.run", "-m", "case.name=a,b"]
    assert "models=tiny" in cmd and "hydra/launcher=joblib" in cmd and cmd[-2:] == ["phase=fit", "seed=1"]
    assert any(c.startswith("run_dir=") and c.endswith("/runs/${case.name}") for c in cmd)
    assert "hydra.sweep.subdir=${case.name}" in cmd
    mcmd = rb.metrics_command(opts, [tmp_path / "r1", tmp_path / "r2"], tmp_path / "out")
    assert mcmd[1:4] == ["-m", "animate124.metrics", "-m"]
    assert mcmd[4] == f"run_dir='{tmp_path / 'r1'}','{tmp_path / 'r2'}'"
    with pytest.raises(SystemExit):
        rb.parse_args(["bogus=1"])


def test_aggregate_mean_table_and_plot(rb, tmp_path):
    out = tmp_path / "out"
    _metrics(out, "a", clip_t=0.30, r_precision=1.0, clip_i=0.8, temporal_consistency=0.9)
    _metrics(out, "b", clip_t=0.20, r_precision=0.0, clip_i=0.6, temporal_consistency=0.7, lpips_flicker=0.1)
    result = rb.write_results(out, ["a", "b", "c"])  # c has no metrics.json: failed
    # means over the cases that have the value: clip_t (0.3 + 0.2)/2 = 0.25, lpips only from b = 0.1
    assert result["mean"]["clip_t"] == pytest.approx(0.25)
    assert result["mean"]["r_precision"] == pytest.approx(0.5)
    assert result["mean"]["lpips_flicker"] == pytest.approx(0.1)
    assert result["mean"]["clip_i_all_views"] is None
    assert result["n_cases"]["clip_t"] == 2 and result["cases"]["c"]["status"] == "failed"
    md = (out / "results.md").read_text()
    assert "| a | 0.3000 | 1.0000 |" in md and "| **mean** | 0.2500 |" in md and "failed" in md
    assert "tiny/clip (models=tiny: random stand-in)" in md
    assert json.loads((out / "results.json").read_text())["mean"]["clip_t"] == pytest.approx(0.25)
    with Image.open(out / "results.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_aggregate_only_cli(rb, tmp_path):
    out = tmp_path / "out"
    _metrics(out, "a", clip_t=0.5)
    assert rb.main([f"out={out}", "--aggregate-only"]) == 0
    assert (out / "results.png").is_file()
    bench = _bench(tmp_path)
    assert rb.main([f"benchmark={bench}", f"out={out}", "cases=a,b", "--aggregate-only"]) == 1  # b failed


def test_failed_cases_are_listed_with_the_rerun_command(rb, tmp_path, capsys):
    out = tmp_path / "out"
    _metrics(out, "a", clip_t=0.5)
    bench = _bench(tmp_path)
    assert rb.main([f"benchmark={bench}", f"out={out}", "cases=a,b,c", "models=tiny", "--skip-pipeline"]) == 1
    err = capsys.readouterr().err
    assert "failed cases (2): b, c;" in err
    assert f"python scripts/run_benchmark.py benchmark={bench} out={out} models=tiny --skip-pipeline cases=b,c" in err


@pytest.mark.slow
def test_full_benchmark_fit_runs_tiny(rb, tmp_path):
    """Two cases through the real runner: pipeline = `fit` on synthetic data (the generation phases are exercised
    by their own tests), metrics with a tiny CLIP, then the table and plot. Minutes on 2 CPU cores."""
    import subprocess

    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "animate124.data.synthetic", f"out={data}", "size=16", "n_train=4",
                    "n_test=2", "n_val=1"], check=True)
    bench = _bench(tmp_path)
    out = tmp_path / "out"
    rc = rb.main([f"benchmark={bench}", f"out={out}", "cases=a,b", "models=tiny",
                  f"pipeline=phase=fit data.path={data} field=small render=fast phase.max_steps=4 phase.batch_rays=256",
                  "metrics=views=2 frames=2 resolution=16"])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    assert set(result["cases"]) == {"a", "b"} and result["mean"]["clip_t"] is not None
    assert (out / "results.png").is_file()
