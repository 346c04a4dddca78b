"""`Lookahead`: airbench's lookahead around any keras_cifar optimizer."""

import keras
import torch
from keras.saving import deserialize_keras_object, serialize_keras_object

from keras_cifar._backend import PACKAGE


def model_state(model):
    """What a `Lookahead` of `model` averages: its float weights, trainable and not (batch-norm
    statistics), as airbench averages every float tensor of the state dict."""
    return model.trainable_weights + [variable for variable in model.non_trainable_weights
                                      if "float" in str(variable.dtype)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class Lookahead(keras.optimizers.Optimizer):
    """Wraps `base_optimizer` (a keras_cifar optimizer: its `apply`, schedule and step count):
    every `every` steps the model state is pulled to a running average of itself, with a decay
    rising as 0.95^5 (step / total)^3 over `total` steps; at the last step the state takes the
    average. `model_state` (`model_state(model)`) is what it averages; the averages are optimizer
    variables, saved and resumed, and start from the state's values when it is made.

    Made from a config alone (no `model_state`, as `load_model(compile=True)` makes it), it
    averages the variables it is built for; its saved averages of the rest are then not read."""

    def __init__(self, base_optimizer, every=5, total=1, model_state=None, name=None, **kwargs):
        every, total = int(every), int(total)
        if every < 1 or total < 1:
            raise ValueError("Lookahead needs `every` >= 1 and `total` >= 1 steps. Received: "
                             f"every={every!r}, total={total!r}")
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.base_optimizer = base_optimizer
        self.every, self.total = every, total
        self.__dict__.update(_state=None, _averages=[], _statistics=[], _checked=None,
                             _given_state=model_state is not None)
        if model_state is not None:
            self._track_state(list(model_state))

    def _track_state(self, variables):
        averages = []
        with keras.name_scope(self.name):
            for variable in variables:
                average = self.add_variable_from_reference(variable, "lookahead")
                average.assign(variable)
                averages.append(average)
        self.__dict__.update(_state=variables, _averages=averages,
                             _statistics=[i for i, variable in enumerate(variables) if not variable.trainable])

    @property
    def variables(self):
        # the base's then the averages: the layout of the earlier TorchSGD that held its lookahead
        return self.base_optimizer.variables + list(self._averages)

    @property
    def iterations(self):
        return self.base_optimizer.iterations

    @property
    def learning_rate(self):
        return self.base_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.base_optimizer.learning_rate = learning_rate

    def scale_loss(self, loss):
        return self.base_optimizer.scale_loss(loss)

    def host_iterations(self):
        return self.base_optimizer.host_iterations()

    def model_state_averages(self):
        """The averages of the model state that is not trainable (batch-norm statistics), which a
        data-parallel run averages over the ranks with the statistics themselves."""
        return [self._averages[i].value for i in self._statistics]

    def build(self, var_list):
        if not self.base_optimizer.built:
            self.base_optimizer.build(var_list)
        if self._state is None:
            self._track_state(list(var_list))
        super().build(var_list)

    def _check_model(self, variables):
        key = tuple(map(id, variables))
        if key != self._checked:
            known = set(map(id, self._state))
            if not all(id(variable) in known for variable in variables):
                raise ValueError(f"This {type(self).__name__} averages another model's state. Compile this model "
                                 "with a new optimizer (`build_optimizer(config, steps_per_epoch, model)`).")
            self.__dict__["_checked"] = key

    def apply(self, grads, trainable_variables=None, found_inf=None):
        if not self.built:
            with keras.name_scope(self.name):
                self.build(list(trainable_variables))
        if trainable_variables is not None:
            trainable_variables = list(trainable_variables)
            self._check_model(trainable_variables)
        options = {} if found_inf is None else {"found_inf": found_inf}
        self.base_optimizer.apply(grads, trainable_variables, **options)
        self._pull(self.base_optimizer.host_iterations())

    def _pull(self, now):
        if now > self.total:
            return
        if now % self.every == 0:
            decay = 0.95 ** 5 * (now / self.total) ** 3
        elif now == self.total:
            decay = 1.0  # the last step: the state takes the average
        else:
            return
        with torch.no_grad():
            for average, variable in zip(self._averages, self._state):
                average.value.lerp_(variable.value, 1.0 - decay)
                variable.value.copy_(average.value)

    def finalize_variable_values(self, var_list):
        self.base_optimizer.finalize_variable_values(var_list)

    def load_own_variables(self, store):
        variables, saved = self.variables, len(store.keys())
        if saved > len(variables) and not self._given_state:
            for i, variable in enumerate(variables):  # made from a config: the averages it holds
                variable.assign(store[str(i)])
        elif saved != len(variables) and self._given_state:
            raise ValueError(f"The saved state of {self.name} holds {saved} variables, not {len(variables)}: "
                             "another optimizer or model state saved it.")
        else:
            super().load_own_variables(store)
        self.base_optimizer.forget_torch_state()

    def get_config(self):
        return {"name": self.name, "base_optimizer": serialize_keras_object(self.base_optimizer),
                "every": self.every, "total": self.total}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        base = deserialize_keras_object(config.pop("base_optimizer"), custom_objects=custom_objects)
        return cls(base, **config)
