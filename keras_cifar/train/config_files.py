"""Where the experiment configs are: `configs/<model>.yaml`, in a checkout or an installed copy."""

import os
from pathlib import Path


def configs_dir():
    """The folder of the experiment configs, found from any working directory:

    1. `KERAS_CIFAR_CONFIGS`, if set;
    2. `keras_cifar/configs/` inside the installed package (a wheel or sdist install: the build
       maps the top-level `configs/` there, see pyproject.toml);
    3. `configs/` beside the package (a checkout, installed editable or not at all).
    """
    if os.environ.get("KERAS_CIFAR_CONFIGS"):
        return Path(os.environ["KERAS_CIFAR_CONFIGS"])
    return _configs_beside(Path(__file__).resolve().parents[1])


def _configs_beside(package):
    """`package/configs` where the build put it, else the checkout's `configs/` next to `package`."""
    packaged = package / "configs"
    return packaged if packaged.is_dir() else package.parent / "configs"


def default_config_path(model):
    """The model's config file, or None when it has none."""
    path = configs_dir() / f"{model}.yaml"
    return path if path.is_file() else None

