"""``python -m animate124.metrics run_dir=RUN [models=tiny] [clip_model=...]`` → ``<run_dir>/metrics.json``.

Config: configs/metrics.yaml (schema ``animate124/config/export.py::MetricsConfig``); protocol: docs/metrics.md.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    """Hydra entry point (also works as a multirun: ``-m run_dir=a,b``)."""
    import hydra
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401  (registers the schemas)
    from animate124.config.export import MetricsConfig
    from animate124.errors import Animate124Error
    from animate124.metrics.report import METRIC_KEYS, evaluate_run

    @hydra.main(config_path="pkg://animate124.configs", config_name="metrics", version_base="1.3")
    def _run(dcfg) -> None:
        cfg: MetricsConfig = OmegaConf.to_object(dcfg)  # type: ignore[assignment]
        try:
            result = evaluate_run(cfg)
        except Animate124Error as exc:
            if cfg.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)
        print(json.dumps({k: result[k] for k in METRIC_KEYS} | {"clip_model": cfg.clip_model}))

    _run()


if __name__ == "__main__":
    main()
