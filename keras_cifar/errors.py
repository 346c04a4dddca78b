"""Errors a user can cause and fix. The CLI prints their message (one paragraph,
no traceback) and exits with `exit_code`; library callers can catch them.

Messages speak the library's language: parameters in backticks as Python callers write
them, `name` for a parameter, `name=value` for a setting (the value as a Python literal), and
`command(name=value, ...)` for something to run (`fit(resume_path='logs/cnn-...')`).
`render` rewrites these for another audience; the CLI turns them into its flags
(`--batch-size`, `--device cpu`) and into the program name the user typed
(`python cli.py fit --resume ...` or `keras-cifar fit --resume ...`).
"""

import ast
import re

# `name`, `name=value` or `name(arguments)`, in backticks.
_MARKUP = re.compile(r"`([A-Za-z_]\w*)(?:\((.*?)\)|=(.*?))?`")


def _literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _arguments(text):
    """`a=1, b='x'` -> {"a": 1, "b": "x"}; None if it is not a keyword-argument list."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg} if not call.args else None
    except (ValueError, SyntaxError):
        return None


def render(message, parameter, setting, command):
    """Rewrites the markup of `message`. `parameter(name)`, `setting(name, value)` and
    `command(name, arguments)` return the replacement text, or None to keep the markup as it is."""

    def replace(match):
        name, arguments, value = match.group(1), match.group(2), match.group(3)
        if arguments is not None or match.group(0).endswith("()`"):
            parsed = _arguments(arguments or "")
            replacement = command(name, parsed) if parsed is not None else None
        elif value is not None:
            replacement = setting(name, _literal(value))
        else:
            replacement = parameter(name)
        return match.group(0) if replacement is None else replacement

    return _MARKUP.sub(replace, message)


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


class ExportError(KerasCifarError):
    """A model that cannot be exported (a layer torch.export or ONNX cannot capture)."""


class MissingExtraError(KerasCifarError):
    """An optional feature whose packages are not installed (the message names the extra)."""


class StorageError(KerasCifarError):
    """A log folder that refuses a write: a full disk, a file-size or quota limit, or a read-only folder."""
