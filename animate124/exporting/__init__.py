"""Export machinery behind ``python -m animate124.export``: scene loading, frame rendering, video/PNG writers."""
