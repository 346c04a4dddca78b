"""keras_cifar's optimizers: torch.optim's updates on Keras variables, a `Lookahead` around any of
them, float16 loss scaling, the schedules, and the recipe's parameter groups (`param_groups`)."""

from keras_cifar.optim.adam import TorchAdam, TorchAdamW
from keras_cifar.optim.factory import build_optimizer
from keras_cifar.optim.lookahead import Lookahead
from keras_cifar.optim.loss_scale import TorchLossScaleOptimizer
from keras_cifar.optim.muon import TorchMuon, newton_schulz
from keras_cifar.optim.schedules import Linear, OneCycle, Triangle, WarmupCosine, learning_rate
from keras_cifar.optim.sgd import TorchSGD

__all__ = ["Linear", "Lookahead", "OneCycle", "TorchAdam", "TorchAdamW", "TorchLossScaleOptimizer", "TorchMuon",
           "TorchSGD", "Triangle", "WarmupCosine", "build_optimizer", "learning_rate", "newton_schulz"]
