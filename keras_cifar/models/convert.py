"""Copies PyTorch weights into Keras models, layer by layer, matched by name.

A torch module path `a.b.c` matches the Keras layer (or nested sub-layer)
named `a_b_c`. Conv kernels go from (out, in, kh, kw) to (kh, kw, in, out),
dense kernels are transposed, and a dense layer after a channels-last
`flatten` gets its rows reordered from PyTorch's CHW flattening to HWC.
"""

import numpy as np
from keras import layers
from torch import nn

from keras_cifar.keras_internals import all_layers
from keras_cifar.models.airbench94 import PatchWhitening


def keras_layers_by_name(model):
    return {layer.name: layer for layer in all_layers(model)}


def _numpy(tensor):
    return tensor.detach().cpu().numpy()


def model_data_format(model):
    for layer in all_layers(model):
        if isinstance(layer, layers.Conv2D):
            return layer.data_format
    raise ValueError(f"Model {model.name!r} has no convolution.")


def _flatten_chw_to_hwc(model, kernel):
    """Reorders dense rows when the Keras model flattens channels-last maps."""
    try:
        flatten = model.get_layer("flatten")
    except ValueError:
        return kernel
    if len(flatten.input.shape) != 4 or model_data_format(model) != "channels_last":
        return kernel
    _, height, width, channels = flatten.input.shape
    if height * width * channels != kernel.shape[0]:
        return kernel
    return kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(kernel.shape)


def copy_module(keras_layer, module, model=None):
    if isinstance(module, nn.Conv2d):
        weights = [_numpy(module.weight).transpose(2, 3, 1, 0)]
    elif isinstance(module, nn.Linear):
        kernel = _numpy(module.weight).T
        weights = [_flatten_chw_to_hwc(model, kernel) if model is not None else kernel]
    elif isinstance(module, nn.BatchNorm2d):
        weights = [_numpy(module.bias), _numpy(module.running_mean), _numpy(module.running_var)]
        if getattr(keras_layer, "scale", True):
            weights.insert(0, _numpy(module.weight))
        elif not np.all(_numpy(module.weight) == 1.0):
            raise ValueError(f"Layer {keras_layer.name!r} has no scale; the torch module's weight is not all ones.")
    else:
        raise TypeError(f"No conversion for {type(module).__name__}")
    if getattr(module, "bias", None) is not None and not isinstance(module, nn.BatchNorm2d):
        weights.append(_numpy(module.bias))
    if isinstance(keras_layer, PatchWhitening):
        weights = weights[::-1]  # Keras lists trainable weights (the bias) before the frozen kernel
    expected = [tuple(w.shape) for w in keras_layer.get_weights()]
    received = [tuple(w.shape) for w in weights]
    if expected != received:
        raise ValueError(
            f"Layer {keras_layer.name!r} holds weights of shapes {expected}; the torch module gives {received}."
        )
    keras_layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])


WEIGHTED_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def copy_torch_weights(model, module, skip=()):
    """Copies every Conv2d, Linear and BatchNorm2d of `module` into `model`.

    `skip` lists torch module paths to leave alone (for example `("fc",)`).
    Returns the Keras layer names that were filled. Raises `ValueError` when a
    module has no Keras counterpart or shapes differ.
    """
    by_name = keras_layers_by_name(model)
    copied = []
    for path, submodule in module.named_modules():
        if not isinstance(submodule, WEIGHTED_MODULES) or path in skip:
            continue
        keras_name = path.replace(".", "_")
        if keras_name not in by_name:
            raise ValueError(f"The Keras model has no layer {keras_name!r} for torch module {path!r}.")
        copy_module(by_name[keras_name], submodule, model)
        copied.append(keras_name)
    return copied


def keras_weighted_layer_names(model):
    return sorted(
        layer.name
        for layer in all_layers(model)
        if isinstance(layer, (layers.Conv2D, layers.Dense, layers.BatchNormalization, PatchWhitening))
    )
