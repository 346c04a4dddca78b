"""keras_cifar: the classic CIFAR-10 PyTorch experiments as Keras 3 models on torch.

It trains on Keras's torch backend; imported on another (`KERAS_BACKEND=tensorflow` or `jax`) it
registers its layers, so that its checkpoints load and predict there."""

from keras_cifar import _backend  # noqa: F401  (KERAS_BACKEND=torch unless chosen otherwise, imports keras)

from keras_cifar.models import create_model, get_model_info, list_models  # noqa: E402
from keras_cifar.models.blocks import InceptionBlock, ResidualBlock  # noqa: E402
from keras_cifar import losses as _losses  # noqa: E402,F401  (registers the loss for checkpoints)
from keras_cifar import optim as _optim  # noqa: E402,F401  (registers the optimizers and schedules)

__version__ = "0.1.0"

__all__ = [
    "InceptionBlock",
    "ResidualBlock",
    "create_model",
    "get_model_info",
    "list_models",
]
