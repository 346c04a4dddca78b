"""The data layer: CIFAR-10 from TFDS or a local copy, fed as batched tensors."""

from keras_cifar.data.dataset import CifarData, Split, default_data_dir, load_cifar
from keras_cifar.data.loader import TensorLoader
from keras_cifar.data.readers import CIFAR10_CLASSES
from keras_cifar.data.sources import DataSource, resolve_source

__all__ = [
    "CIFAR10_CLASSES",
    "CifarData",
    "DataSource",
    "Split",
    "TensorLoader",
    "default_data_dir",
    "load_cifar",
    "resolve_source",
]
