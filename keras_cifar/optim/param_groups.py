"""The recipe's parameter groups, in one place: which variables take their own learning rate.

- batch-norm biases (`beta`): `bn_bias_lr_scale` times the learning rate (airbench's 64x);
- the head (the last Dense layer's kernel): `head_lr_scale` times it (airbench94_muon);
- `airbench94`'s whitening bias (the layer named "whiten", a `PatchWhitening`): trains for its
  first `bias_epochs` epochs only (`keras_cifar.train.freeze`); under the linear schedule it has
  its own, reaching 0 at its last step, as airbench94_muon's.
"""

import keras

from keras_cifar import keras_internals
from keras_cifar.models.airbench94 import PatchWhitening
from keras_cifar.optim.schedules import Linear
from keras_cifar.optim.torch_update import param_group

WHITENING = "whiten"


def frozen_bias(model):
    """(the whitening bias, the number of epochs it trains) of `model`, or None where it has no
    data whitening or its bias trains throughout (`bias_epochs=0`)."""
    try:
        layer = model.get_layer(WHITENING)
    except ValueError:
        return None
    if not isinstance(layer, PatchWhitening) or layer.bias is None or layer.bias_epochs < 1:
        return None
    return layer.bias, layer.bias_epochs


def param_groups(config, steps_per_epoch, model):
    """The groups of `model` under `config` (`torch_update.param_group`), the default group left out."""
    if model is None:
        return []
    layers = keras_internals.all_layers(model)
    groups = []
    if config.bn_bias_lr_scale != 1.0:
        groups.append(param_group([layer.beta.path for layer in layers
                                   if isinstance(layer, keras.layers.BatchNormalization) and layer.center],
                                  config.bn_bias_lr_scale))
    heads = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    if config.head_lr_scale != 1.0 and heads:
        groups.append(param_group([heads[-1].kernel.path], config.head_lr_scale))
    frozen = frozen_bias(model)
    if frozen is not None and config.schedule == "linear":
        bias, epochs = frozen
        groups.append(param_group([bias.path], 1.0, Linear(config.lr, epochs * steps_per_epoch)))
    return groups
