"""Adam and AdamW with torch.optim's update."""

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar._backend import PACKAGE
from keras_cifar.optim.torch_update import TorchUpdate


class _TorchAdamUpdate(TorchUpdate):
    def torch_hyperparameters(self):
        return dict(betas=(self.beta_1, self.beta_2), eps=self.epsilon, amsgrad=self.amsgrad,
                    weight_decay=self.torch_weight_decay)

    def torch_state(self, variable, fused):
        slots = keras_internals.slot_variables(self, variable)
        # torch counts steps per parameter (applied ones), on the device for its fused update
        step = (self.iterations.value.to(torch.float32) if fused
                else torch.tensor(float(self.host_iterations()), dtype=torch.float32))
        state = {"exp_avg": slots["momentum"].value, "exp_avg_sq": slots["velocity"].value, "step": step}
        if self.amsgrad:
            state["max_exp_avg_sq"] = slots["velocity_hat"].value
        return state

    def get_config(self):
        config = super().get_config()
        if self.param_groups:
            config["param_groups"] = self.groups_config()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["param_groups"] = cls.groups_from_config(config.get("param_groups"))
        return super().from_config(config, custom_objects)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchAdam(_TorchAdamUpdate, keras.optimizers.Adam):
    """Adam that updates exactly as `torch.optim.Adam` (epsilon 1e-8 after the bias correction;
    weight decay as an L2 term added to the gradients, as torch's `weight_decay`). Keras's own
    Adam adds epsilon to sqrt(v) before the bias correction, which in torch's terms is an epsilon
    of eps / sqrt(1 - b2**t): 30x larger at the first step, damping the steps of weights with small
    gradients until the correction settles (thousands of steps)."""

    torch_class = torch.optim.Adam

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, weight_decay=None, param_groups=None, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, **kwargs)
        self.torch_weight_decay = weight_decay or 0.0
        self._init_groups(param_groups)
        self._check_supported()

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.torch_weight_decay or None
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchAdamW(_TorchAdamUpdate, keras.optimizers.AdamW):
    """AdamW that updates exactly as `torch.optim.AdamW` (decoupled weight decay, as Keras's AdamW,
    then torch's Adam step)."""

    torch_class = torch.optim.AdamW

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, weight_decay=0.004, param_groups=None, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay, **kwargs)
        self._init_groups(param_groups)
        self._check_supported()

    @property
    def torch_weight_decay(self):
        return self.weight_decay
