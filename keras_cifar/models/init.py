"""Weight initialisation: Keras's defaults, or PyTorch's.

PyTorch initialises `nn.Conv2d` and `nn.Linear` weights and biases from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)); Keras
uses Glorot-uniform kernels and zero biases. `init="torch"` reproduces the
originals' starting point.
"""

import math

import keras
from keras import layers

from keras_cifar.keras_internals import all_layers

INITS = ("torch", "keras")


def weighted_layers(model):
    """Every Conv2D and Dense layer of `model`, inside custom blocks too."""
    return [
        layer for layer in all_layers(model)
        if isinstance(layer, (layers.Conv2D, layers.Dense))
    ]


def initialize(model, init):
    if init not in INITS:
        raise ValueError(f"`init` must be one of {INITS}. Received: init={init!r}")
    if init == "torch":
        for layer in weighted_layers(model):
            kernel_shape = tuple(layer.kernel.shape)
            fan_in = math.prod(kernel_shape[:-1])
            bound = 1.0 / math.sqrt(fan_in)
            layer.kernel.assign(keras.random.uniform(kernel_shape, -bound, bound))
            if layer.use_bias:
                layer.bias.assign(keras.random.uniform(tuple(layer.bias.shape), -bound, bound))
    return model
