"""The run configuration: defaults < a YAML config file < command-line flags.

Every experiment in `configs/` is one YAML file of these keys. Unknown keys
are rejected with the list of valid ones, and every value is checked before
anything runs. The resolved configuration is written into the run folder.
"""

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Optional

import yaml

from keras_cifar.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "one-cycle")
PRECISIONS = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
JIT_MODES = ("trace", "compile", "off")
DATA_FORMATS = ("channels_first", "channels_last")
INITS = ("torch", "keras")


@dataclasses.dataclass
class RunConfig:
    # --- what to train
    model: str = "cnn"
    weights: Optional[str] = None  # resnet18 only: None, "imagenet" or a torchvision .pth state dict
    init: str = "torch"  # initial weights: "torch" (PyTorch's defaults, as the originals) or "keras"
    data_format: str = "channels_first"  # layout of activations inside the model (measured faster on torch)
    resize_to: Optional[int] = None  # googlenet/resnet18 upscale in pixels; None = the original 224
    normalize: bool = False  # cnn/inception_lite/resnet_lite: standardize pixels per channel, not just [0, 1]
    # --- data
    data: str = "cifar10"  # "cifar10" (TFDS) or a path to a local copy
    data_dir: Optional[str] = None  # where TFDS prepares data; None = TFDS's default (~/tensorflow_datasets)
    val_split: float = 0.0  # fraction of train held out for per-epoch validation; 0 = evaluate on test
    augment: bool = False  # random 4-pixel crop and horizontal flip of training images
    train_images: Optional[int] = None  # train on a random subset of this many images (quick runs)
    eval_images: Optional[int] = None  # evaluate on a random subset of this many images (quick runs)
    # --- optimisation
    epochs: int = 20
    batch_size: int = 32  # images per training step
    eval_batch_size: int = 500  # images per evaluation step (no effect on results)
    optimizer: str = "adam"
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # decoupled weight decay (per step, times the learning rate)
    schedule: str = "constant"  # learning-rate schedule over all training steps
    warmup_epochs: float = 0.0  # cosine: linear warm-up length in epochs; one-cycle: rise length (0 = 30%)
    label_smoothing: float = 0.0
    # --- execution
    seed: int = 0  # seeds weights, shuffling, augmentation and dropout
    device: str = "auto"  # "auto" = cuda when available, else cpu
    mixed_precision: str = "none"  # "bf16" (GPU, or CPUs with bf16 support) or "fp16" (GPU only)
    jit: str = "trace"  # "trace": replay a captured forward graph; "compile": torch.compile; "off": eager
    log_dir: str = "logs"  # run folders are created inside


FIELDS = {field.name: field for field in dataclasses.fields(RunConfig)}
CHOICES = {
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "mixed_precision": PRECISIONS,
    "device": DEVICES,
    "jit": JIT_MODES,
    "data_format": DATA_FORMATS,
    "init": INITS,
}


def valid_keys_message():
    return "Valid keys: " + ", ".join(FIELDS) + "."


def _type_name(field):
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
        _base_type(field).__name__, str(field.type)
    )


def _base_type(field):
    return {"Optional[str]": str, "Optional[int]": int}.get(str(field.type).replace("typing.", ""), field.type)


def coerce(name, value):
    field = FIELDS[name]
    if name == "weights" and isinstance(value, str) and value.lower() in ("none", "random"):
        return None  # `--weights none`: random initial weights
    optional = "Optional" in str(field.type)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"`{name}` needs a value ({_type_name(field)}).")
    kind = _base_type(field)
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
    raise ConfigError(f"`{name}` must be {_type_name(field)}. Received: {name}={value!r}")


def _check_ranges(config):
    def require(condition, message):
        if not condition:
            raise ConfigError(message)

    for name, choices in CHOICES.items():
        value = getattr(config, name)
        require(value in choices, f"`{name}` must be one of {', '.join(choices)}. Received: {name}={value!r}")
    from keras_cifar.models.registry import list_models, unknown_model_message

    require(config.model in list_models(), unknown_model_message(config.model))
    require(0 <= config.seed < 2**32, f"`seed` must be in [0, 2**32). Received: seed={config.seed}")
    require(config.epochs >= 1, f"`epochs` must be at least 1. Received: epochs={config.epochs}")
    require(config.batch_size >= 1, f"`batch_size` must be at least 1. Received: batch_size={config.batch_size}")
    require(config.eval_batch_size >= 1,
            f"`eval_batch_size` must be at least 1. Received: eval_batch_size={config.eval_batch_size}")
    require(config.lr > 0, f"`lr` (learning rate) must be positive. Received: lr={config.lr}")
    require(0 <= config.momentum < 1, f"`momentum` must be in [0, 1). Received: momentum={config.momentum}")
    require(config.weight_decay >= 0, f"`weight_decay` must be >= 0. Received: weight_decay={config.weight_decay}")
    require(0 <= config.label_smoothing < 1,
            f"`label_smoothing` must be in [0, 1). Received: label_smoothing={config.label_smoothing}")
    require(0 <= config.val_split < 1,
            f"`val_split` must be a fraction in [0, 1). Received: val_split={config.val_split}")
    require(0 <= config.warmup_epochs <= config.epochs,
            f"`warmup_epochs` must be in [0, epochs]. Received: warmup_epochs={config.warmup_epochs}")
    for key in ("train_images", "eval_images"):
        value = getattr(config, key)
        require(value is None or value >= 1, f"`{key}` must be at least 1. Received: {key}={value}")
    require(config.resize_to is None or config.resize_to >= 32,
            f"`resize_to` must be at least 32 pixels. Received: resize_to={config.resize_to}")
    require(config.resize_to is None or config.model in ("googlenet", "resnet18"),
            f"`resize_to` applies to googlenet and resnet18 only. Received: model={config.model!r}")
    require(not config.normalize or config.model in ("cnn", "inception_lite", "resnet_lite"),
            f"`normalize` applies to cnn, inception_lite and resnet_lite (googlenet and resnet18 always map "
            f"pixels to [-1, 1]). Received: model={config.model!r}")
    require(config.weights is None or config.model == "resnet18",
            f"`weights` applies to resnet18 only. Received: model={config.model!r}, weights={config.weights!r}")


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


def configs_dir():
    """`configs/` of the checkout (or KERAS_CIFAR_CONFIGS)."""
    return Path(os.environ.get("KERAS_CIFAR_CONFIGS") or Path(__file__).resolve().parents[2] / "configs")


def default_config_path(model):
    path = configs_dir() / f"{model}.yaml"
    return path if path.is_file() else None


def resolve_config(config_file=None, overrides=None):
    """Defaults < `config_file` (or the model's file in configs/) < `overrides` (None values ignored)."""
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
        if default_path is not None:
            values.update(read_config_file(default_path))
    values.update(overrides)
    return build_config(values)


def build_config(values):
    check_keys(values, "the configuration")
    config = RunConfig(**{key: coerce(key, value) for key, value in values.items()})
    _check_ranges(config)
    return config


def to_dict(config):
    return dataclasses.asdict(config)


def write_config(config, path):
    from keras_cifar.train.run_dir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
