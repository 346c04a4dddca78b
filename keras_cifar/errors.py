"""Errors a user can cause and fix. The CLI prints their message (one paragraph,
no traceback) and exits with `exit_code`; library callers can catch them."""


class KerasCifarError(Exception):
    """A problem with the user's input or environment, explained in the message."""

    exit_code = 1


class UsageError(KerasCifarError, ValueError):
    """A bad argument: unknown name, wrong type, value out of range."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file that is missing, not YAML, or has unknown keys or bad values."""


class DataError(KerasCifarError):
    """A data source that is missing, corrupt, of unknown layout, or cannot be downloaded."""


class CheckpointError(KerasCifarError):
    """A checkpoint that is missing, unreadable, or built for another model."""


class WeightsError(KerasCifarError):
    """Pretrained weights that cannot be found, downloaded or converted."""


class TrainingError(KerasCifarError):
    """Training stopped by the run itself (for example a loss that became NaN)."""
