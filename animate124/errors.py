"""User-facing errors: one line naming the problem and the fix; the CLI exits with code 2 (traceback only with debug=true)."""


class Animate124Error(Exception):
    """An error caused by user input (paths, images, configs, missing weights). Message = problem + fix, one line."""

    exit_code = 2


class InputError(Animate124Error):
    """A missing or corrupt input file (image, dataset, camera file)."""


class ConfigError(Animate124Error):
    """A config value that is out of range or inconsistent."""


class CheckpointError(Animate124Error):
    """A checkpoint that is missing, corrupt or incompatible with the current config."""


class MissingWeightsError(Animate124Error):
    """Pretrained weights that are not available locally (offline) or cannot be loaded."""
