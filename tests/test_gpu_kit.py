"""The GPU kit's plumbing on CPU: stage budgets and failure isolation, the wheel-folder checks, the report tables."""

from __future__ import annotations

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest

GPU_DIR = Path(__file__).resolve().parents[1] / "scripts" / "gpu"
sys.path.insert(0, str(GPU_DIR))

import check  # noqa: E402
import check_report  # noqa: E402
import verify_wheels  # noqa: E402


def fake_wheel(folder: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = (), pad: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
        if pad:
            z.writestr("pad.bin", b"\0" * pad)
    return path


def test_wheel_folder_checks_closure_duplicates_and_size(tmp_path):
    whl = tmp_path / "whl"
    fake_wheel(whl, "hydra-core", requires=("omegaconf<2.4,>=2.2", "packaging", 'importlib-resources; python_version < "3.9"'))
    fake_wheel(whl, "omegaconf", requires=("PyYAML>=5.1.0", "antlr4-python3-runtime==4.9.*"))
    problems, summary = verify_wheels.check(whl, ["hydra-core", "omegaconf"], {"packaging", "pyyaml"}, 64.0)
    assert problems == ["omegaconf needs 'antlr4-python3-runtime==4.9.*': neither carried nor on the GPU machine; "
                        "add it to wheels.txt"]
    fake_wheel(whl, "antlr4-python3-runtime", "4.9.3")
    fake_wheel(whl, "omegaconf", "2.3.1", pad=2 ** 20)
    problems, summary = verify_wheels.check(whl, ["hydra-core", "omegaconf"], {"packaging", "pyyaml"}, 0.5)
    text = "\n".join(problems)
    assert "omegaconf: 2 wheels" in text and "antlr4-python3-runtime: a wheel" in text and "over the 0.5 MiB" in text
    assert summary["size_mib"] >= 1.0 and len(summary["wheels"]) == 4


def test_the_kit_lists_match():
    listed = verify_wheels.read_names(GPU_DIR / "wheels.txt")
    assert "imageio-ffmpeg" not in listed and {"diffusers", "hydra-core", "antlr4-python3-runtime", "nerfacc"} <= set(listed)
    assert not set(listed) & set(verify_wheels.read_names(GPU_DIR / "device_packages.txt"))


def _context(tmp_path, rehearse=True):
    args = argparse.Namespace(rehearse=rehearse, only=[], wheels=".whl")
    return check.Context(args=args, work=tmp_path, env={"PATH": "/usr/bin:/bin"})


def test_a_failing_or_overrunning_stage_does_not_stop_the_next(tmp_path):
    c = _context(tmp_path)
    stages = [check.Stage("slow", 1.0, 1.0, lambda c: [["sh", "-c", "sleep 60"]]),
              check.Stage("broken", 10, 10, lambda c: [["sh", "-c", "echo boom; exit 3"], ["sh", "-c", "echo never"]]),
              check.Stage("fine", 10, 10, lambda c: [[sys.executable, "-c", "print('hello')"]])]
    deadline = time.monotonic() + 120
    for s in stages:
        check.run_stage(s, c, deadline)
    assert c.results["slow"]["status"] == "timeout" and c.results["slow"]["seconds"] < 30
    assert c.results["broken"]["status"] == "failed" and "exit 3" in c.results["broken"]["detail"]
    assert "boom" in c.results["broken"]["log_tail"] and "never" not in c.results["broken"]["log_tail"]
    assert c.results["fine"]["status"] == "ok" and "hello" in c.results["fine"]["log_tail"]
    check.run_stage(check.Stage("late", 10, 10, lambda c: [["true"]]), c, time.monotonic() + 1)
    assert c.results["late"]["status"] == "skipped" and "--only late" in c.results["late"]["detail"]


def test_only_rejects_unknown_stages_and_reports_merge(tmp_path, capsys):
    with pytest.raises(SystemExit):
        check.parse_args(["--only", "build,nope"])
    assert "unknown stage(s) nope" in capsys.readouterr().err
    assert check.parse_args(["--only", "build,pytest", "--rehearse"]).only == ["build", "pytest"]
    (tmp_path / "bench.json").write_text(json.dumps({"results": {
        "torch": {"march+composite train (rays/s)": 100.0, "grid_encode 4D fwd+bwd (points/s)": 1000.0},
        "cuda": {"march+composite train (rays/s)": 5000.0, "grid_encode 4D fwd+bwd (points/s)": 5000.0},
        "nerfacc": {"march+composite train (rays/s)": 4000.0}}, "meta": {"errors": {}}}))
    first = check_report.collect(tmp_path / "check.json", {"date": "d1", "mode": "gpu"},
                                 {"bench": {"status": "ok", "seconds": 1.0, "t_start": 0.0}}, tmp_path)
    check_report.write_outputs(tmp_path, first, tmp_path)
    second = check_report.collect(tmp_path / "check.json", {"date": "d2", "mode": "gpu"},
                                  {"build": {"status": "failed", "seconds": 2.0, "t_start": 0.0}}, tmp_path)
    assert set(second["stages"]) == {"bench", "build"} and second["stages"]["bench"]["run"] == "d1"
    text = check_report.markdown(second)
    assert "| march+composite train (rays/s) | 100 | 5000 | 4000 | 50 | 1.25 | ≥ 20× and ≥ nerfacc: met |" in text
    assert "| grid_encode 4D fwd+bwd (points/s) | 1000 | 5000 | - | 5 | - | ≥ 10×: MISSED |" in text
