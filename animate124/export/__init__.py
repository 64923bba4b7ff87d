"""User-facing outputs of a trained scene (``python -m animate124.export``; docs/architecture.md §2).

outputs.py (export: paths × time → video/frames, mesh, viewer; what phases/all.py and rerender call),
scene.py (run dir / checkpoint → Scene), frames.py (frame rendering), writers.py (video/PNG), mesh.py, texture.py,
gltf.py (PLY / GLB), viewer.py + viewer_assets/ (offline HTML player), __main__.py (the CLI).
Run persistence (checkpoints, run dirs, hand-off) is io/.
"""
