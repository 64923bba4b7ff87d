"""``python -m animate124.export``: render a trained run along any camera path × time schedule.

Examples::

    python -m animate124.export run_dir=outputs/cat                         # orbit while τ runs → videos/orbit.mp4
    python -m animate124.export run_dir=outputs/cat path=turntable time.start=0.5 out=tt.gif
    python -m animate124.export run_dir=outputs/cat path=fixed 'camera.views=[[0,0],[0,90]]' frames=64 fps=8
    python -m animate124.export run_dir=outputs/cat path=keys.json out=frames/     # keyframe file → PNG frames
    python -m animate124.export run_dir=outputs/fit cameras=data/transforms_test.json out=renders/   # D-NeRF file
    python -m animate124.export run_dir=outputs/cat \
        'instances=[{translation:[0,-0.6,0]},{translation:[0,0.6,0],time_offset:0.5}]'     # two copies, ½ cycle apart

Keyframe files (``path=FILE.json``; Catmull-Rom through the keyframes, slerp for ``c2w`` rotations)::

    {"keyframes": [{"elevation": 0, "azimuth": 0, "radius": 1.8, "fov": 40, "time": 0.0},
                   {"elevation": 20, "azimuth": 180, "time": 0.5, "t": 0.6},
                   {"elevation": 0, "azimuth": 360, "time": 1.0}]}

(``t``: position in the video in [0, 1], default evenly spaced; ``time``: scene τ, default the time.* schedule;
``c2w``: a 4×4 / 3×4 OpenGL camera-to-world instead of the spherical values.) A file with ``frames`` is read as a
D-NeRF transforms file. Frame sizes are never changed (odd sizes are written as H.264 4:4:4).

Meshes and the web viewer (``format=``)::

    python -m animate124.export run_dir=outputs/cat format=mesh frames=24         # mesh_seq/frame_NNN.ply + animated.glb
    python -m animate124.export run_dir=outputs/cat format=mesh mesh.mode=tracked  # one mesh, morph targets (shape keys)
    python -m animate124.export run_dir=outputs/cat format=viewer                  # offline HTML player → <run_dir>/viewer

(docs/mesh_export.md: the defaults, the axes, where ``mesh.mode=tracked`` fails, the viewer's controls.)

Outputs: the rgb video/frames at ``out``, optionally ``<out>_depth`` / ``<out>_alpha`` and ``<out>_sheet.png``
(contact sheet: sheet_views azimuths × sheet_times times). Config schema: ``animate124/config/export.py``.
"""

from __future__ import annotations


def main() -> None:
    """Hydra entry point (config ``configs/export.yaml``); the work is ``export/outputs.py::export``."""
    from animate124.cli import run_cli
    from animate124.export.outputs import export

    run_cli("export", export)


if __name__ == "__main__":
    main()
