"""The model zoo: importing this package registers every model, in this order."""

# isort: off
from keras_cifar.models import cnn, inception_lite, resnet_lite, googlenet, resnet18, airbench94  # noqa: F401

# isort: on
from keras_cifar.models.registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
