"""`build_optimizer`: the optimizer of a RunConfig."""

from keras_cifar.optim.adam import TorchAdam, TorchAdamW
from keras_cifar.optim.lookahead import Lookahead, model_state
from keras_cifar.optim.loss_scale import TorchLossScaleOptimizer
from keras_cifar.optim.muon import TorchMuon
from keras_cifar.optim.param_groups import param_groups
from keras_cifar.optim.schedules import learning_rate
from keras_cifar.optim.sgd import TorchSGD


def build_optimizer(config, steps_per_epoch, model=None):
    """The optimizer of `config`. `model` gives the parameter groups (`param_groups.py`) and the
    state a lookahead averages (`config.lookahead` needs it)."""
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        optimizer = TorchAdam(learning_rate=lr, weight_decay=decay)
    elif config.optimizer == "adamw":
        optimizer = TorchAdamW(learning_rate=lr, weight_decay=config.weight_decay)
    else:
        options = dict(momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay,
                       param_groups=param_groups(config, steps_per_epoch, model))
        if config.optimizer == "muon":
            optimizer = TorchMuon(learning_rate=lr, muon_lr_scale=config.muon_lr / config.lr,
                                  muon_momentum=config.muon_momentum, **options)
        else:
            optimizer = TorchSGD(learning_rate=lr, **options)
    if config.lookahead:
        if model is None:
            raise ValueError("`lookahead` averages a model's state: pass the model to build_optimizer.")
        optimizer = Lookahead(optimizer, every=config.lookahead, total=config.epochs * steps_per_epoch,
                              model_state=model_state(model))
    if config.mixed_precision == "fp16":  # what Keras's compile would wrap it in, without host syncs
        return TorchLossScaleOptimizer(optimizer)
    return optimizer
