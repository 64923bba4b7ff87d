"""``python -m animate124.rerender run_dir=RUN [path=...] [instances=...] [time.*=...] [models=tiny]``.

Takes the export's camera, time and scene options unchanged (config/export.py) plus ``keyframes.*`` and
``inbetween.*`` (config/rerender.py); writes ``<run_dir>/rerender/{coarse,keyframes,final,side_by_side}.mp4``, the
frames and report.json. See docs/rerender.md.
"""

from __future__ import annotations


def main() -> None:
    """Hydra entry point (config ``configs/rerender.yaml``)."""
    from animate124.cli import run_cli
    from animate124.rerender.pipeline import rerender

    run_cli("rerender", rerender)

if __name__ == "__main__":
    main()
