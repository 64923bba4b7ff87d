"""Typed configs (schema.py, phases.py, guidance.py) and their Hydra ConfigStore registration (store.py)."""
