"""Model registry: builders registered by name, created with `create_model`."""

import dataclasses
import difflib
import inspect
from typing import Callable

from keras_cifar.errors import UsageError

_REGISTRY: dict = {}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable
    input_size: str  # what the network sees after in-model preprocessing
    experiment: str  # the original script it reproduces
    description: str
    settings: tuple = ()  # the model-specific run settings (RunConfig fields) its builder takes
    data_init: Callable = None  # data_init(model, train_images): initialises weights from the data (new runs)


def register_model(name, *, input_size, experiment, description, settings=(), data_init=None):
    """Decorator: registers `builder(num_classes=..., **overrides) -> keras.Model`.

    `settings` names the model-specific run settings the model takes (`resize_to`, `weights`,
    `normalize`: RunConfig fields declared `model_specific`); each must be a keyword of the
    builder. A run passes them to the builder where set and rejects them for other models.
    `data_init(model, train_images)`, where given, sets weights from the training images (raw
    uint8 NHWC) when a run starts from scratch (`airbench94`: its whitening layer).
    """

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        accepted = inspect.signature(builder).parameters
        missing = [setting for setting in settings if setting not in accepted]
        if missing:
            raise ValueError(f"Model {name!r} declares the settings {missing}, which its builder does not take.")
        _REGISTRY[name] = ModelInfo(name, builder, input_size, experiment, description, tuple(settings), data_init)
        return builder

    return decorator


def list_models():
    """Names of all registered models, in registration order."""
    return list(_REGISTRY)


def unknown_model_message(name):
    if name in RENAMED:
        return (f"The model {name!r} is now called {RENAMED[name]!r} (configs/{RENAMED[name]}.yaml): "
                f"pass `model={RENAMED[name]!r}`.")
    known = list_models()
    message = f"Unknown model {name!r}. Known models: {', '.join(known)}."
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.4)
    if close:
        message += f" Did you mean {close[0]!r}?"
    return message


# Names of earlier releases: refused with the new name, never silently mapped (a run's name says what it trained).
RENAMED = {"fast": "airbench94", "fast_muon": "airbench94_muon", "fast95": "airbench95"}


def get_model_info(name):
    if name not in _REGISTRY:
        raise UsageError(unknown_model_message(name))
    return _REGISTRY[name]


def create_model(name, num_classes=10, **overrides):
    """Builds the registered model `name` with a `num_classes`-way head.

    `overrides` go to the builder (for example `data_format`, `resize_to`,
    `weights`); an argument the builder does not take raises `TypeError`.
    """
    info = get_model_info(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise UsageError(f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}")
    return info.builder(num_classes=num_classes, **overrides)
