"""Reading, checking and writing run configurations: the model's config file (or `--config
FILE`) < command-line flags, checked against the schema `RunConfig` (`run_config.py`).

Unknown keys are rejected with the list of valid ones, and every value is checked before
anything runs. The resolved configuration is written into the run folder.
"""

import dataclasses
import difflib
import re
import sys
import types
import typing
from pathlib import Path

import yaml

from keras_cifar.errors import ConfigError
from keras_cifar.optim.settings import check_optimizer_settings
from keras_cifar.train.config_files import configs_dir, default_config_path  # noqa: F401 (re-exported)
from keras_cifar.train.run_config import (CHOICES, FIELDS, MODEL_SPECIFIC, RESUMABLE, TYPES,  # noqa: F401
                                          RunConfig, setting)


def base_type(name):
    """(type, optional) of a field from its annotation: `Optional[int]` -> (int, True)."""
    hint = TYPES[name]
    if typing.get_origin(hint) in (typing.Union, getattr(types, "UnionType", typing.Union)):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) != 1:
            raise TypeError(f"RunConfig.{name}: only Optional[T] unions are supported, not {hint}.")
        return args[0], True
    return hint, False


def flag_name(name):
    return "--" + name.replace("_", "-")


def valid_keys_message():
    return "Valid keys: " + ", ".join(FIELDS) + "."


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_name(name):
    kind = base_type(name)[0]
    return _TYPE_NAMES.get(kind, kind.__name__)


def coerce(name, value):
    """`value` as the type of field `name` (YAML and flags give strings, ints for floats, ...)."""
    field = FIELDS[name]
    kind, optional = base_type(name)
    if isinstance(value, str) and value.lower() in field.metadata["none_words"]:
        return None  # `--weights none`: random initial weights
    if value is None:
        if optional:
            return None
        raise ConfigError(f"`{name}` needs a value ({_type_name(name)}).")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-3 (no dot) as a string
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"RunConfig.{name}: no coercion for {kind}.")
    raise ConfigError(f"`{name}` must be {_type_name(name)}. Received: `{name}={value!r}`")


def format_number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def range_text(name):
    """The allowed range of a field in words, or None: "at least 1", "positive", "in [0, 1)"."""
    meta = FIELDS[name].metadata
    low, high = meta["min"], meta["max"]
    if low is not None and high is not None:
        low_bracket, high_bracket = "(" if meta["min_open"] else "[", ")" if meta["max_open"] else "]"
        return f"in {low_bracket}{format_number(low)}, {format_number(high)}{high_bracket}"
    if low is not None:
        if meta["min_open"]:
            return "positive" if low == 0 else f"greater than {format_number(low)}"
        return f"at least {format_number(low)}"
    if high is not None:
        return f"{'below' if meta['max_open'] else 'at most'} {format_number(high)}"
    return None


def _in_range(name, value):
    meta = FIELDS[name].metadata
    low, high = meta["min"], meta["max"]
    if low is not None and (value < low or (meta["min_open"] and value == low)):
        return False
    if high is not None and (value > high or (meta["max_open"] and value == high)):
        return False
    return True


def _join(words):
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def models_taking(name):
    """The registered models whose registry entry declares the model-specific setting `name`."""
    from keras_cifar.models.registry import get_model_info, list_models

    return [model for model in list_models() if name in get_model_info(model).settings]


def _check_values(config):
    """Every check that the schema declares, then the few that relate fields to each other (those of the
    optimizers in `check_optimizer_settings`)."""
    from keras_cifar.models.registry import get_model_info, list_models, unknown_model_message

    def require(condition, message):
        if not condition:
            raise ConfigError(message)

    for name, field in FIELDS.items():
        value = getattr(config, name)
        if value is None:
            continue
        choices = field.metadata["choices"]
        require(choices is None or value in choices,
                f"`{name}` must be one of {', '.join(choices or ())}. Received: `{name}={value!r}`")
        pattern = field.metadata["pattern"]
        require(pattern is None or re.fullmatch(pattern[0], value) is not None,
                f"`{name}` must be {pattern and pattern[1]}. Received: `{name}={value!r}`")
        label = f" ({field.metadata['label']})" if field.metadata["label"] else ""
        require(_in_range(name, value), f"`{name}`{label} must be {range_text(name)}. Received: `{name}={value!r}`")
    require(config.model in list_models(), unknown_model_message(config.model))
    require(config.warmup_epochs <= config.epochs,
            f"`warmup_epochs` must be in [0, epochs]. Received: `warmup_epochs={config.warmup_epochs!r}`, "
            f"`epochs={config.epochs!r}`")
    check_optimizer_settings(config)
    require(not config.stop_at_target or config.target_accuracy is not None,
            "`stop_at_target` needs `target_accuracy`. Received: `stop_at_target=True`, `target_accuracy=None`")
    takes = get_model_info(config.model).settings
    for name in MODEL_SPECIFIC:
        value = getattr(config, name)
        if value != FIELDS[name].default and name not in takes:
            models = models_taking(name)
            require(False, f"`{name}` applies to {_join(models) if models else 'no model'} only. "
                           f"Received: `model={config.model!r}`, `{name}={value!r}`")


def model_options(config):
    """The model-specific settings of `config` that its model's builder takes, where set."""
    from keras_cifar.models.registry import get_model_info

    return {name: getattr(config, name) for name in get_model_info(config.model).settings
            if getattr(config, name) != FIELDS[name].default}


def read_config_file(path):
    """A YAML mapping of config keys, checked for unknown keys (not yet for values)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"The config file {str(path)!r} does not exist.")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"The config file {str(path)!r} is not valid YAML: {detail}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"The config file {str(path)!r} cannot be read: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"The config file {str(path)!r} must hold a mapping of keys to values, "
                          f"not a {type(values).__name__}.")
    check_keys(values, f"config file {str(path)!r}")
    return values


def check_keys(values, where):
    unknown = [key for key in values if key not in FIELDS]
    if unknown:
        hints = [difflib.get_close_matches(str(key), FIELDS, n=1) for key in unknown]
        hint = "".join(f" Did you mean {h[0]!r} for {k!r}?" for k, h in zip(unknown, hints) if h)
        raise ConfigError(f"Unknown key(s) in {where}: {', '.join(map(str, unknown))}.{hint} {valid_keys_message()}")


def resolve_config(config_file=None, overrides=None):
    """`config_file` (or the model's file in configs/) < `overrides` (None values ignored).

    Every registered model has a config file; a model without one is an error, never silent
    defaults (the defaults of RunConfig are not any experiment's recipe)."""
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    check_keys(overrides, "the options")
    values = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    else:
        model = overrides.get("model", RunConfig.model)
        from keras_cifar.models.registry import list_models, unknown_model_message

        if model not in list_models():
            raise ConfigError(unknown_model_message(model))
        default_path = default_config_path(model)
        if default_path is None:
            raise ConfigError(
                f"The model {model!r} has no config: {str(configs_dir() / f'{model}.yaml')!r} does not exist. "
                f"Pass a config file with `config_file` (any YAML of the keys of configs/*.yaml), or reinstall "
                f"keras-cifar if its configs are missing."
            )
        values.update(read_config_file(default_path))
    values.update(overrides)
    return build_config(values)


# Values a setting no longer takes, read as their successor, with a note once per process: a run
# folder saved with one still resumes. {setting: {retired value: (successor, why)}}
RETIRED_VALUES = {"jit": {value: ("graph", "TorchScript is deprecated in torch; the forward graph is now captured by "
                                           "torch.export and replays the same ops")
                          for value in ("trace", "trace-fused")}}
_retired_noted = set()


def _successor(key, value):
    retired = RETIRED_VALUES.get(key, {})
    if not isinstance(value, str) or value not in retired:
        return value
    successor, why = retired[value]
    if (key, value) not in _retired_noted:
        _retired_noted.add((key, value))
        print(f"Note: `{key}: {value}` is retired ({why}): running with `{key}: {successor}`.", file=sys.stderr)
    return successor


def build_config(values):
    check_keys(values, "the configuration")
    config = RunConfig(**{key: coerce(key, _successor(key, value)) for key, value in values.items()})
    _check_values(config)
    return config


def to_dict(config):
    return dataclasses.asdict(config)


def write_config(config, path):
    from keras_cifar.train.run_dir import atomic_write_text

    atomic_write_text(path, "# batch_size: images per step on each process (global batch under torchrun: "
                            "batch_size x processes; see summary.json)\n"
                            + yaml.safe_dump(to_dict(config), sort_keys=False))
