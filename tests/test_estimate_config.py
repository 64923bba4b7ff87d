"""``gpu_memory_gb`` (the memory budget of animate124.estimate) is a root key of the run config: unset by default,
accepted with every phase including ``phase=all``, and a non-positive value is a one-line config error."""

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.errors import ConfigError
from animate124.run import check_gpu_memory_gb


def _compose(*overrides):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


def test_gpu_memory_gb_unset_by_default():
    assert _compose().gpu_memory_gb is None


@pytest.mark.parametrize("phase", ["all", "static", "dynamic", "refine", "textual_inversion"])
def test_gpu_memory_gb_accepted(phase):
    obj = _compose(f"phase={phase}", "gpu_memory_gb=24")
    assert obj.gpu_memory_gb == 24.0


@pytest.mark.parametrize("bad", [0, -3.5])
def test_gpu_memory_gb_must_be_positive(bad):
    with pytest.raises(ConfigError, match="gpu_memory_gb"):
        check_gpu_memory_gb(bad)
    check_gpu_memory_gb(None)
    check_gpu_memory_gb(12)
