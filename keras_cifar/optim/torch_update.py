"""The bridge that runs a torch.optim optimizer's update (fused where torch has it) on Keras variables.

torch's optimizer state aliases the Keras slot variables (updated in place), so checkpoints,
`--resume` and `get_config` stay Keras's. The step count is kept on the host as well, so a
schedule's learning rate is a Python number and a constant one stays a device tensor: the update
never waits for the device. The host's count is also written into Keras's `iterations` variable
only when something reads it (`iterations`, `variables`, `learning_rate`: checkpoints, the
epoch's logs): one kernel less per step than adding 1 on the device at every update.
"""

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar.optim.schedules import PythonSchedule


def param_group(paths, lr_scale=1.0, learning_rate=None):
    """A parameter group: the variables at `paths` step with `lr_scale` times the optimizer's
    learning rate, or with `lr_scale` times their own `learning_rate` (a number or a schedule of
    the same step count) where given."""
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, (int, float)) or lr_scale <= 0:
        raise ValueError(f"A parameter group's `lr_scale` must be a positive number. Received: lr_scale={lr_scale!r}")
    return {"paths": list(paths), "lr_scale": float(lr_scale), "learning_rate": learning_rate}


class _TorchStep:
    """A torch.optim optimizer over the torch tensors of one list of Keras variables."""

    def __init__(self, key, optimizer, parameters, fused):
        self.key = key
        self.optimizer = optimizer
        self.parameters = parameters
        self.fused = fused


class TorchUpdate:
    """Mixin for a Keras optimizer: `apply` runs `torch_class`'s update on the Keras variables,
    with parameter groups (`param_group`) by variable path; the other variables form the default
    group. The variable list may change between steps (a variable frozen by its `trainable` flag):
    a new torch optimizer then takes over the same slot variables and the host's step count."""

    torch_class = None

    def _init_groups(self, param_groups):
        self.__dict__["param_groups"] = [param_group(group["paths"], group.get("lr_scale", 1.0), group.get("learning_rate"))
                             for group in param_groups or ()]
        seen = [path for group in self.param_groups for path in group["paths"]]
        if len(seen) != len(set(seen)):
            raise ValueError(f"A variable is in two parameter groups. Received: param_groups={self.param_groups!r}")
        self.__dict__["_group_of_path"] = {path: index for index, group in enumerate(self.param_groups)
                                          for path in group["paths"]}

    def _check_supported(self):
        unsupported = [name for name in ("clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps",
                                         "loss_scale_factor", "use_ema") if getattr(self, name, None)]
        if unsupported:
            raise ValueError(f"{type(self).__name__} applies torch.optim's update and does not support "
                             f"{', '.join(unsupported)}. Received: " +
                             ", ".join(f"{name}={getattr(self, name)!r}" for name in unsupported))

    def torch_hyperparameters(self):
        raise NotImplementedError

    def torch_state(self, variable, fused):
        """torch's per-parameter state for `variable`, made of the Keras slot variables' tensors."""
        raise NotImplementedError

    def model_state_averages(self):
        """Averages of the model state this optimizer keeps (a `Lookahead`'s); none here."""
        return []

    @property
    def iterations(self):
        self._write_iterations()
        return super().iterations

    @property
    def variables(self):
        self._write_iterations()
        return super().variables

    @property
    def learning_rate(self):
        self._write_iterations()  # a Keras schedule reads the device's step count
        return super().learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        keras.optimizers.Optimizer.learning_rate.fset(self, learning_rate)

    def _write_iterations(self):
        """Adds the updates applied since the last read to Keras's `iterations` variable."""
        unwritten = self.__dict__.get("_unwritten_updates", 0)
        if unwritten:
            self.__dict__["_unwritten_updates"] = 0
            with torch.no_grad():
                keras_internals.optimizer_iterations(self).value.add_(unwritten)

    def host_iterations(self):
        """The step count on the host: every `apply`, read from the device once."""
        count = self.__dict__.get("_host_iterations")
        if count is None:
            count = self.__dict__["_host_iterations"] = int(keras.ops.convert_to_numpy(self.iterations))
        return count

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        """A slot variable in the memory layout of its weight (a convolution kernel laid out as
        torch's): torch's fused update walks a weight, its gradient and its slots in memory order."""
        slot = super().add_variable_from_reference(reference_variable, name, initializer)
        if keras.backend.backend() != "torch":  # a checkpoint loaded on another backend
            return slot
        weight = reference_variable.value
        if slot.value.stride() != weight.stride():
            order = sorted(range(weight.ndim), key=lambda axis: -weight.stride(axis))
            keras_internals.lay_out(slot, tuple(order))
        return slot

    def _torch_groups(self, variables, parameters):
        """torch param groups: weight decay divided by the group's scale, so that the decay per step
        (learning rate x weight decay) is the same in every group."""
        by_group = {}
        for variable, parameter in zip(variables, parameters):
            by_group.setdefault(self._group_of_path.get(variable.path), []).append(parameter)
        decay = self.torch_hyperparameters().get("weight_decay", 0.0)
        groups = []
        for index, params in by_group.items():
            settings = self.param_groups[index] if index is not None else param_group(())
            groups.append({"params": params, "lr_scale": settings["lr_scale"],
                           "own_lr": settings["learning_rate"], "weight_decay": decay / settings["lr_scale"]})
        return groups

    def _torch_step(self, variables):
        key = tuple(map(id, variables))
        step = self.__dict__.get("_torch_step_now")
        if step is None or step.key != key:
            parameters = [variable.value for variable in variables]
            fused = all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
            optimizer = self.torch_class(self._torch_groups(variables, parameters), lr=0.0, fused=fused or None,
                                         foreach=None if fused else True, **self.torch_hyperparameters())
            for variable, parameter in zip(variables, parameters):
                optimizer.state[parameter].update(self.torch_state(variable, fused))
            step = self.__dict__["_torch_step_now"] = _TorchStep(key, optimizer, parameters, fused)
        return step

    def _learning_rate_now(self, step):
        schedule = keras_internals.optimizer_learning_rate(self)
        if isinstance(schedule, PythonSchedule):
            return schedule.value_at(self.host_iterations())
        value = schedule(self.iterations) if callable(schedule) else schedule.value
        return value if step.fused else float(value)  # torch's foreach update takes a tensor only if capturable

    def _built_for(self, trainable_variables):
        """The variables `apply` updates (the optimizer's own when None), building it on first use."""
        if trainable_variables is None:
            return keras_internals.optimizer_variables(self)
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name):
                self.build(trainable_variables)
            self.built = True
        return trainable_variables

    def apply(self, grads, trainable_variables=None, found_inf=None):
        """`found_inf` (a device tensor, 1 where a gradient was not finite) skips the update on the
        device, as torch's GradScaler does: the step count on the device counts applied updates,
        the host's (and so the schedule) every step, as with torch's schedulers."""
        trainable_variables = self._built_for(trainable_variables)
        step = self._torch_step(trainable_variables)
        for parameter, grad in zip(step.parameters, grads):
            if parameter.grad is not grad:
                parameter.grad = grad
        lr = self._learning_rate_now(step)
        now = self.host_iterations()
        for group in step.optimizer.param_groups:
            own, scale = group["own_lr"], group["lr_scale"]
            if own is None:
                group["lr"] = lr if scale == 1.0 else lr * scale
            else:
                group["lr"] = (own.value_at(now) if isinstance(own, PythonSchedule) else own) * scale
        if found_inf is not None and not step.fused:
            raise ValueError(f"{type(self).__name__}: skipping non-finite updates needs torch's fused optimizer, "
                             f"which {step.parameters[0].device} lacks.")
        step.optimizer.found_inf = found_inf  # read by torch's fused update
        step.optimizer.step()
        if found_inf is None:
            self.__dict__["_unwritten_updates"] = self.__dict__.get("_unwritten_updates", 0) + 1
        else:  # the device counts the updates it applied
            iterations = self.iterations.value
            iterations.add_(1 - found_inf.to(iterations.dtype))
        self.__dict__["_host_iterations"] = now + 1

    def forget_torch_state(self):
        """Drops the torch optimizer and the host's step count (the Keras variables changed: the
        updates not yet written to `iterations` are those of the state that was replaced)."""
        self.__dict__.pop("_torch_step_now", None)
        self.__dict__.pop("_host_iterations", None)
        self.__dict__.pop("_unwritten_updates", None)

    def load_own_variables(self, store):
        self.forget_torch_state()
        super().load_own_variables(store)
        self.forget_torch_state()

    def groups_config(self):
        return [{"paths": group["paths"], "lr_scale": group["lr_scale"],
                 "learning_rate": keras.saving.serialize_keras_object(group["learning_rate"])}
                for group in self.param_groups]

    @classmethod
    def groups_from_config(cls, groups):
        return [{**group, "learning_rate": keras.saving.deserialize_keras_object(group["learning_rate"])}
                for group in groups or ()]
