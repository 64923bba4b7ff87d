"""Inputs resolved by one phase (from case= or image=/prompt=) are found by later phases given only run_dir=."""

from pathlib import Path

from conftest import BENCHMARK, requires_benchmark
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.phases.static import resolve_inputs


def _cfg(*overrides):
    with initialize_config_module("animate124.configs", version_base="1.3"):
        return OmegaConf.to_object(compose("run", overrides=list(overrides)))


@requires_benchmark
def test_case_inputs_reach_later_phases_without_the_case(tmp_path):
    first = resolve_inputs(_cfg("case=panda-dance", f"case.root={BENCHMARK}"), tmp_path)
    assert first["image"].endswith("panda-dance/rgba.png") and first["prompt"] == "a panda is dancing"
    later = resolve_inputs(_cfg("phase=dynamic"), tmp_path)  # no case, no image, no prompt: only the run dir
    # the record may resolve symlinks (../shared is one in helper worktrees): compare the files, not the spellings
    same_file = {k: Path(v).resolve() if k in ("image", "depth") else v for k, v in first.items()}
    assert {k: Path(v).resolve() if k in ("image", "depth") else v for k, v in later.items()} == same_file
    assert later["depth"] is not None and later["depth"].endswith("panda-dance/depth.png")
