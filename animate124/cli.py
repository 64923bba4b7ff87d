"""``run_cli``: the one Hydra entry of the output commands (``python -m animate124.export``, ``python -m
animate124.rerender``).

It lives here, beside ``run.py``, because it is command-line plumbing (compose the config, print what was written,
turn an Animate124Error into one line and its exit code) shared by two packages: not output machinery (export/),
not run persistence (io/).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from animate124.errors import Animate124Error


def run_cli(config_name: str, job: Callable[[Any], Iterable[Path]]) -> None:
    """Hydra entry point of the output commands (export, rerender): compose ``configs/<config_name>.yaml``, run
    ``job(config)``, print each written path; an Animate124Error becomes one line and its exit code."""
    import hydra
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401  (registers the schemas)

    @hydra.main(config_path="pkg://animate124.configs", config_name=config_name, version_base="1.3")
    def _run(dcfg) -> None:
        cfg: Any = OmegaConf.to_object(dcfg)
        try:
            for p in job(cfg):
                print(p)
        except Animate124Error as exc:
            if cfg.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)

    _run()
