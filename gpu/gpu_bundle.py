"""What an offline GPU machine with its own torch installs from the bundle of gpu/gpu_prepare.sh.

    python gpu/gpu_bundle.py pyproject.toml     # one requirement a line

keras-cifar's dependencies from pyproject.toml, less torch (the machine's own, built for its CUDA,
is kept), torchvision (it would pull the torch it was built for) and TensorFlow with TFDS and
TensorBoard (`fit --no-tensorboard` and local data need none of them). Standard library only.
"""

import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's own copy of tomli
    from pip._vendor import tomli as tomllib

NOT_INSTALLED = {"torch", "torchvision", "tensorflow", "tensorflow-cpu", "tensorflow-datasets", "tensorboard",
                 "importlib-resources"}


def name(requirement):
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements(pyproject):
    with open(pyproject, "rb") as handle:
        dependencies = tomllib.load(handle)["project"]["dependencies"]
    return [r for r in dependencies if name(r) not in NOT_INSTALLED]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1])))
