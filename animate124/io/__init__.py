"""Run persistence: checkpoints, the run directory and its reports, hand-off between phases, disk and lock guards.

User-facing outputs made from a trained scene (videos, meshes, the viewer) are ``animate124.export``."""
