"""The run configuration: the model's config file (or `--config FILE`) < command-line flags.

`RunConfig` is the one schema of a run's settings. Each field declares its type (the
annotation), its default, and in its metadata the help text, the allowed choices or range,
whether a resumed run may change it, and whether it is a model-specific setting. From
these alone come the `fit` flags (`keras_cifar/cli.py`), the validation here, and the
settings table of docs/SETTINGS.md (`settings_doc.py`). A model-specific setting
(`resize_to`, `weights`, `normalize`) applies to the models whose registry entry declares it
(`register_model(..., settings=...)`).

Every experiment in `configs/` is one YAML file of these keys; the files ship inside the
package (`keras_cifar/configs/` in an installed copy, see `config_files.py`). Unknown keys are rejected with the list
of valid ones, and every value is checked before anything runs. The resolved configuration is
written into the run folder.
"""

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Optional

import yaml

from keras_cifar.errors import ConfigError
from keras_cifar.train.config_files import configs_dir, default_config_path
from keras_cifar.optim.settings import check_optimizer_settings


def setting(default, help, *, choices=None, pattern=None, min=None, max=None, min_open=False, max_open=False,
            label=None, path=None, none_words=(), resumable=False, model_specific=False):
    """A RunConfig field and its metadata.

    `choices`: the allowed values. `pattern`: (regular expression, the same in words) of allowed
    strings, where a list of choices cannot say it. `min`/`max` (with `min_open`/`max_open`): the allowed range.
    `label`: words that follow the name in messages ("`lr` (learning rate) must be ...").
    `path="dir"`: the flag takes a folder path. `none_words`: strings that mean None
    (`--weights none`). `resumable`: a resumed run may change it. `model_specific`: passed to the
    model builder of the models that declare it in the registry, rejected for the others.
    """
    metadata = dict(help=help, choices=tuple(choices) if choices else None, pattern=pattern, min=min, max=max,
                    min_open=min_open, max_open=max_open, label=label, path=path, none_words=tuple(none_words),
                    resumable=resumable, model_specific=model_specific)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class RunConfig:
    # --- what to train
    model: str = setting("cnn", "Model to train (see `models`); its config in configs/<model>.yaml gives the "
                                "defaults.")
    weights: Optional[str] = setting(
        None, "Initial weights: 'imagenet' (torchvision's, downloaded once), a path to a torchvision .pth state "
              "dict, or 'none' (random).", none_words=("none", "random"), model_specific=True)
    init: str = setting("torch", "Initial weights: PyTorch's default initialisation, as the originals, or Keras's.",
                        choices=("torch", "keras"))
    data_format: str = setting("channels_first", "Activation layout inside the model (channels_first is faster "
                                                 "on torch).", choices=("channels_first", "channels_last"))
    resize_to: Optional[int] = setting(None, "Upscale size in pixels (unset: 224, as the originals).", min=32,
                                       model_specific=True)
    whitening: str = setting("data", "The first layer (2x2 patches to 24 channels). data: a frozen kernel that "
                                     "whitens the training images' patches (airbench); learned: an ordinary "
                                     "trainable convolution (the ablation).", choices=("data", "learned"),
                             model_specific=True)
    head: str = setting("airbench94", "airbench94's classifier head. airbench94: PyTorch's initialisation, logits "
                                      "x 1/9; muon (airbench94_muon): weights scaled to unit std, logits / 256 "
                                      "(the last block's width).", choices=("airbench94", "muon"),
                        model_specific=True)
    whiten_bias_init: str = setting("zeros", "airbench94's whitening bias at the start. zeros: airbench94's; uniform "
                                             "(airbench94_muon): PyTorch's nn.Conv2d default, U(+-1/sqrt(12)).",
                                    choices=("zeros", "uniform"), model_specific=True)
    normalize: bool = setting(False, "Standardize pixels with CIFAR-10's per-channel mean and std instead of only "
                                     "scaling to [0, 1] (off in the original configs).", model_specific=True)
    # --- data
    data: str = setting("cifar10", "'cifar10' (TFDS, downloaded once) or a path to a local copy: "
                                   "cifar-10-batches-py, cifar-10-batches-bin, an image folder, or an archive.",
                        resumable=True)
    data_dir: Optional[str] = setting(None, "Where TFDS prepares and caches data (unset: ~/tensorflow_datasets).",
                                      path="dir", resumable=True)
    val_split: float = setting(0.0, "Hold out this fraction of train for per-epoch validation (0: evaluate on "
                                    "test).", min=0, max=1, max_open=True)
    augment: bool = setting(False, "Random 4-pixel crop and horizontal flip of training images (off in the "
                                   "original configs); `crop_padding`, `crop_fill` and `flip` shape it.")
    crop_padding: int = setting(4, "With `augment`: the largest random translation, in pixels.", min=0, max=16)
    crop_fill: str = setting("zeros", "With `augment`: what a translation moves in at the border: zeros "
                                      "(torchvision's RandomCrop(32, padding)) or reflect (mirrored pixels).",
                             choices=("zeros", "reflect"))
    flip: str = setting("random", "With `augment`: horizontal flips. random: each image with probability 1/2, "
                                  "every epoch; alternate: a random half of the images in even epochs and the "
                                  "other half in odd ones (airbench); none.", choices=("random", "alternate", "none"))
    train_images: Optional[int] = setting(None, "Train on a random subset of this many images (quick runs).",
                                          min=1)
    eval_images: Optional[int] = setting(None, "Evaluate every epoch on a random subset of this many images "
                                               "(quick runs).", min=1)
    # --- optimisation
    epochs: int = setting(20, "Number of epochs.", min=1, resumable=True)
    batch_size: int = setting(32, "Images per training step on each process: under torchrun with N processes "
                                  "the global batch is N x batch_size (the learning rate is not rescaled).", min=1)
    drop_last: bool = setting(False, "Skip each epoch's last partial training batch, so that every step trains on a "
                                     "full batch (airbench; each epoch leaves out a different random remainder).")
    eval_batch_size: int = setting(500, "Images per evaluation step (no effect on results).", min=1,
                                   resumable=True)
    optimizer: str = setting("adam", "Optimizer (adam, adamw and sgd step as torch.optim's, fused; muon: "
                                     "airbench94_muon's Muon for the convolution kernels at `muon_lr`, sgd at `lr` "
                                     "for every other weight).", choices=("adam", "adamw", "sgd", "muon"))
    lr: float = setting(1e-3, "(Peak) learning rate.", min=0, min_open=True, label="learning rate")
    momentum: float = setting(0.9, "SGD momentum.", min=0, max=1, max_open=True)
    nesterov: bool = setting(False, "SGD (and Muon) with Nesterov momentum.")
    muon_lr: float = setting(0.24, "muon: (peak) learning rate of the convolution kernels; it follows "
                                   "`schedule` as `lr` does. The step is orthogonalised, so the loss's scale "
                                   "does not matter.", min=0, min_open=True)
    muon_momentum: float = setting(0.6, "muon: momentum of the convolution kernels' Muon step.", min=0, max=1,
                                   max_open=True)
    weight_decay: float = setting(0.0, "Weight decay, as torch.optim's: adamw decoupled (per step, times the learning "
                                       "rate); adam and sgd an L2 term added to the gradients; muon: the SGD part's "
                                       "(Muon keeps each kernel at a fixed norm instead).", min=0)
    schedule: str = setting("constant", "Learning-rate schedule over all training steps.",
                            choices=("constant", "cosine", "one-cycle", "triangle", "linear"))
    warmup_epochs: float = setting(0.0, "Warm-up length in epochs (cosine), or rise length (one-cycle; 0: 30% of "
                                        "the steps; triangle: 0: 23%, linear from 0.2 x lr to lr, then linear to "
                                        "0.07 x lr at the end). At most `epochs`. linear: from lr at the "
                                        "first step to 0 at the last, no warm-up (a weight that trains for the "
                                        "first epochs only, as airbench94's whitening bias, reaches 0 at its own "
                                        "last step).", min=0)
    label_smoothing: float = setting(0.0, "Label smoothing.", min=0, max=1, max_open=True)
    bn_bias_lr_scale: float = setting(1.0, "sgd, muon: learning-rate multiplier of batch-norm biases; their weight decay "
                                           "is divided by it, so the decay per step is unchanged (airbench: 64).",
                                      min=0, min_open=True)
    head_lr_scale: float = setting(1.0, "sgd, muon: learning-rate multiplier of the classifier head (the last "
                                        "Dense layer's weights); their weight decay is divided by it "
                                        "(airbench94_muon: 0.67 / 0.053).", min=0, min_open=True)
    lookahead: int = setting(0, "sgd: every this many steps, pull the weights and batch-norm statistics to "
                                "their running average (airbench's lookahead, decay rising to 0.77 at the end, "
                                "where they take the average); 0: off.", min=0)
    # --- evaluation
    tta: bool = setting(False, "Final evaluation with test-time augmentation: the mean logits of the image and "
                               "its mirror, and of both shifted one pixel up-left and down-right (6 passes; "
                               "airbench's level 2). Per-epoch evaluations stay plain.", resumable=True)
    target_accuracy: Optional[float] = setting(None, "Report the training time to this accuracy on the evaluated "
                                                     "split (in the output and summary.json); with the final "
                                                     "TTA evaluation too when `tta` is on.", min=0, max=1,
                                               min_open=True, resumable=True)
    stop_at_target: bool = setting(False, "Stop training at the end of the epoch that reaches `target_accuracy`.",
                                   resumable=True)
    # --- execution
    seed: int = setting(0, "Seed of weights, data order, augmentation and dropout.", min=0, max=2**32 - 1)
    device: str = setting("auto", "Device: cuda (GPU 0), cuda:N, cpu, or auto (cuda when available, else cpu; "
                                  "warns when googlenet or resnet18 would fall back to the CPU).",
                          pattern=(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"), resumable=True)
    deterministic: bool = setting(False, "GPU: bit-reproducible runs (deterministic cuDNN and cuBLAS algorithms, no "
                                         "autotuning, no TF32; slower). Off: TF32 matmuls and convolutions and "
                                         "cuDNN autotuning. The settings in force go into summary.json.",
                                  resumable=True)
    mixed_precision: str = setting("none", "Mixed precision: bf16 (GPU or bf16-capable CPU) or fp16 (GPU only).",
                                   choices=("none", "bf16", "fp16"))
    jit: str = setting("trace", "trace: replay a captured forward graph, TorchScript's fuser off (on a GPU "
                                "the unfused ops that the CPU tests verify); trace-fused: the same with fused "
                                "kernels on CUDA (compiled at the second step and at each new batch "
                                "shape; on the CPU the same as trace); compile: torch.compile; off: eager.",
                       choices=("trace", "trace-fused", "compile", "off"), resumable=True)
    sync_bn: bool = setting(False, "Under torchrun: batch-norm statistics over the global batch of all processes "
                                   "(turns graph capture off). No effect in a single process.")
    dist_timeout: float = setting(300.0, "Under torchrun: seconds after which a stopped or hung process ends the "
                                         "job, naming its rank.", min=0, min_open=True, resumable=True)
    log_dir: str = setting("logs", "Where run folders go (default logs/, in the working folder).", path="dir")
    tensorboard: bool = setting(True, "Write TensorBoard summaries into the run folder (needs TensorFlow). Off: "
                                      "metrics.csv, summary.json and the checkpoints only, for machines without "
                                      "TensorFlow (a GPU image with torch alone).", resumable=True)


FIELDS = {field.name: field for field in dataclasses.fields(RunConfig)}
TYPES = typing.get_type_hints(RunConfig)
CHOICES = {name: field.metadata["choices"] for name, field in FIELDS.items() if field.metadata["choices"]}
MODEL_SPECIFIC = tuple(name for name, field in FIELDS.items() if field.metadata["model_specific"])
RESUMABLE = frozenset(name for name, field in FIELDS.items() if field.metadata["resumable"])


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


def build_config(values):
    check_keys(values, "the configuration")
    config = RunConfig(**{key: coerce(key, value) for key, value in values.items()})
    _check_values(config)
    return config


def to_dict(config):
    return dataclasses.asdict(config)


def write_config(config, path):
    from keras_cifar.train.run_dir import atomic_write_text

    atomic_write_text(path, "# batch_size: images per step on each process (global batch under torchrun: "
                            "batch_size x processes; see summary.json)\n"
                            + yaml.safe_dump(to_dict(config), sort_keys=False))
