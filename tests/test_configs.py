"""Every YAML under configs/ composes against its schema; typos and wrong types fail at compose time;
the configs also work from a non-editable (wheel) install, from another directory."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.config.phases import PhaseKind
from animate124.config.schema import RunConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
GROUPS = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "__pycache__")
PRIMARY = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def _group_options():
    for group in GROUPS:
        for yaml in sorted((CONFIGS / group).glob("*.yaml")):
            yield group, yaml.stem


@pytest.mark.parametrize(("group", "option"), list(_group_options()))
def test_every_group_option_composes(group, option):
    overrides = [f"{group}={option}"]
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = compose("run", overrides=overrides)
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, RunConfig)
    if group == "phase":  # an option is a phase (static.yaml) or a preset of one (fit_cpu.yaml)
        assert isinstance(obj.phase.kind, PhaseKind) and option.startswith(obj.phase.kind.value)


@pytest.mark.parametrize("name", PRIMARY)
def test_every_primary_config_composes(name):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = compose(name)
    OmegaConf.to_object(cfg)


def test_every_yaml_starts_from_its_schema():
    for group, option in _group_options():
        text = (CONFIGS / group / f"{option}.yaml").read_text()
        if group == "preset":  # overlays of the whole run config, checked against RunConfig by composing them
            assert text.startswith("# @package _global_"), f"configs/preset/{option}.yaml must be a _global_ overlay"
            continue
        assert "defaults:" in text and "base_" in text, f"configs/{group}/{option}.yaml must start from its schema"


@pytest.mark.parametrize(
    "override",
    ["phase.max_stepz=3", "field.num_levels=abc", "field.kind=nope", "render.backend=opencl", "phase=nonexistent"],
)
def test_bad_overrides_fail_at_compose_time(override):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            cfg = compose("run", overrides=["phase=static", override])
            OmegaConf.to_object(cfg)


def test_default_run_dir_follows_inputs():
    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = compose("run", overrides=["image=/x/cat.png"], return_hydra_config=True)
        assert cfg.hydra.run.dir == "outputs/cat"
        cfg = compose("run", overrides=["case.name=panda-dance", "image=/x/cat.png"], return_hydra_config=True)
        assert cfg.hydra.run.dir == "outputs/panda-dance"
        cfg = compose("run", overrides=["run_dir=/tmp/r"], return_hydra_config=True)
        assert cfg.hydra.run.dir == "/tmp/r"


def test_configs_work_from_a_wheel_install(tmp_path):
    """Build a wheel, unpack it (a non-editable install), compose a config from another directory."""
    wheel_dir = tmp_path / "wheel"
    env = dict(os.environ, BUILD_NO_CUDA="1")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(ROOT)],
        check=True, env=env, capture_output=True, timeout=1800,  # a ceiling, not a speed limit (loaded CI)
    )
    wheel = next(wheel_dir.glob("animate124-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "animate124/configs/run.yaml" in names and "animate124/configs/phase/static.yaml" in names
        assert "animate124/configs/preset/phase/smoke_all.yaml" in names and "animate124/configs/hydra/launcher/slurm.yaml" in names
        zf.extractall(site)
    code = (
        "import animate124, animate124.config.store\n"
        f"assert animate124.__file__.startswith({str(site)!r}), animate124.__file__\n"
        "from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('animate124.configs', version_base='1.3'):\n"
        "    cfg = compose('run', overrides=['phase=dynamic', 'field=small'])\n"
        "print(cfg.phase.kind.name, cfg.field.num_levels)\n"
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=other, env=dict(os.environ, PYTHONPATH=str(site)),
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dynamic", "8"]
