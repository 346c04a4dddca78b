"""SGD with torch.optim's update."""

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar._backend import PACKAGE
from keras_cifar.optim.torch_update import TorchUpdate

# Options of the TorchSGD of earlier releases, now parameter groups, the freeze callback and `Lookahead`.
_LEGACY_OPTIONS = ("lr_scales", "frozen_after", "lookahead_every", "lookahead_total")


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchSGD(TorchUpdate, keras.optimizers.SGD):
    """SGD that updates exactly as `torch.optim.SGD`: momentum buffer `b = m * b + g`, step
    `w -= lr * b` (Nesterov: `w -= lr * (g + m * b)`), weight decay as an L2 term added to the
    gradients. Keras's SGD scales the buffer by the learning rate instead, which differs from
    torch's whenever the learning rate changes. `param_groups`: see `torch_update.param_group`."""

    torch_class = torch.optim.SGD

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, param_groups=None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.torch_weight_decay = weight_decay or 0.0
        self._init_groups(param_groups)
        self._check_supported()

    def torch_hyperparameters(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.torch_weight_decay)

    def torch_state(self, variable, fused):
        if not self.momentum:
            return {}
        return {"momentum_buffer": keras_internals.slot_variables(self, variable)["momentum"].value}

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.torch_weight_decay or None
        if self.param_groups:
            config["param_groups"] = self.groups_config()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Also reads an earlier release's config, whose lookahead was an option: a `Lookahead`
        around this optimizer then (its learning-rate scales and frozen variables come from the
        recipe, `param_groups.py`, when a run resumes)."""
        config = dict(config)
        legacy = {name: config.pop(name, None) for name in _LEGACY_OPTIONS}
        config["param_groups"] = cls.groups_from_config(config.get("param_groups"))
        optimizer = super().from_config(config, custom_objects)
        if legacy["lookahead_every"]:
            from keras_cifar.optim.lookahead import Lookahead

            return Lookahead(optimizer, every=legacy["lookahead_every"], total=legacy["lookahead_total"])
        return optimizer
