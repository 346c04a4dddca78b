"""The custom layers of the model zoo, in one namespace (checkpoints name them by their registered
names, "keras_cifar>ClassName", not by module)."""

from keras_cifar._backend import PACKAGE
from keras_cifar.models.batch_norm import BatchNormalization, TorchBatchNorm
from keras_cifar.models.blocks import (InceptionBlock, ResidualBlock, SymmetricMaxPooling2D, apply_all, build_all,
                                       follow_dtype_policy)
from keras_cifar.models.conv import TorchConv2D, channels_last_conv2d, torch_conv, torch_conv2d
from keras_cifar.models.data_format import DATA_FORMATS, channel_axis, standardize_data_format

__all__ = ["DATA_FORMATS", "PACKAGE", "BatchNormalization", "InceptionBlock", "ResidualBlock", "SymmetricMaxPooling2D",
           "TorchBatchNorm", "TorchConv2D", "apply_all", "build_all", "channel_axis", "channels_last_conv2d",
           "follow_dtype_policy", "standardize_data_format", "torch_conv", "torch_conv2d"]
