"""``python -m animate124.rerender run_dir=RUN [path=...] [instances=...] [time.*=...] [models=tiny]``.

Takes the export's camera, time and scene options unchanged (config/export.py) plus ``keyframes.*`` and
``inbetween.*`` (config/rerender.py); writes ``<run_dir>/rerender/{coarse,keyframes,final,side_by_side}.mp4``, the
frames and report.json. See docs/rerender.md.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Hydra entry point (config ``configs/rerender.yaml``)."""
    import hydra
    from omegaconf import OmegaConf

    import animate124.config.store  # noqa: F401  (registers the schemas)
    from animate124.config.rerender import RerenderConfig
    from animate124.errors import Animate124Error
    from animate124.rerender.pipeline import rerender

    @hydra.main(config_path="pkg://animate124.configs", config_name="rerender", version_base="1.3")
    def _run(dcfg) -> None:
        cfg: RerenderConfig = OmegaConf.to_object(dcfg)  # type: ignore[assignment]
        try:
            for p in rerender(cfg):
                print(p)
        except Animate124Error as exc:
            if cfg.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)

    _run()


if __name__ == "__main__":
    main()
