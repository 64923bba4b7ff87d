"""Hydra configs of animate124 (installed as the package ``animate124.configs``; loaded as ``pkg://animate124.configs``)."""
