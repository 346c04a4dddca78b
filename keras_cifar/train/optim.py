"""Optimizers, learning-rate schedules and the loss, built from a RunConfig.

The optimizers are Keras optimizers (their state lives in Keras variables, saved in every
checkpoint and restored on resume) whose update is torch.optim's own, fused into one kernel on
devices where torch has one: the same update as the PyTorch originals, at the speed of the plain
loop, and without the host synchronisations of Keras's per-step Python (tensors made from Python
numbers, a learning rate read back as a float).
"""

import math

import keras
import torch
from keras import ops

from keras_cifar import keras_internals
from keras_cifar.models.layers import PACKAGE


class _PythonSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule whose value is a Python function of the step (`value_at`): the training step
    reads it from a host-side step counter without touching the device."""

    def value_at(self, step):
        raise NotImplementedError

    def __call__(self, step):
        return ops.convert_to_tensor(self.value_at(int(ops.convert_to_numpy(step))), "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosine(_PythonSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps=0):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def value_at(self, step):
        if step < self.warmup_steps:
            return self.peak * (step + 1) / max(self.warmup_steps, 1)
        progress = min(max((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0), 1.0)
        return 0.5 * self.peak * (1 + math.cos(math.pi * progress))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class OneCycle(_PythonSchedule):
    """PyTorch's `OneCycleLR` (cosine annealing): from `peak / div_factor` up to
    `peak` over the first `rise_steps`, then down to `peak / (div_factor * final_div_factor)`."""

    def __init__(self, peak, total_steps, rise_steps, div_factor=25.0, final_div_factor=1e4):
        self.peak = peak
        self.total_steps = total_steps
        self.rise_steps = rise_steps
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor

    def value_at(self, step):
        start = self.peak / self.div_factor
        end = start / self.final_div_factor

        def anneal(low, high, fraction):  # cosine from `low` (fraction 0) to `high` (fraction 1)
            return high + (low - high) * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))

        if step < self.rise_steps:
            return anneal(start, self.peak, step / max(self.rise_steps, 1))
        return anneal(self.peak, end, (step - self.rise_steps) / max(self.total_steps - self.rise_steps, 1))

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "rise_steps": self.rise_steps,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }
@keras.saving.register_keras_serializable(package=PACKAGE)
class Triangle(_PythonSchedule):
    """airbench's schedule: linear from `start * peak` up to `peak` over the first `rise_steps`,
    then linear down to `end * peak` at `total_steps`."""

    def __init__(self, peak, total_steps, rise_steps, start=0.2, end=0.07):
        self.peak = peak
        self.total_steps = total_steps
        self.rise_steps = rise_steps
        self.start = start
        self.end = end

    def value_at(self, step):
        if step < self.rise_steps:
            fraction = step / self.rise_steps
            return self.peak * (self.start * (1 - fraction) + fraction)
        fraction = min((step - self.rise_steps) / max(self.total_steps - self.rise_steps, 1), 1.0)
        return self.peak * ((1 - fraction) + self.end * fraction)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "rise_steps": self.rise_steps,
                "start": self.start, "end": self.end}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Linear(_PythonSchedule):
    """airbench94_muon's schedule: linear from `peak` at the first step down to 0 at `total_steps`."""

    def __init__(self, peak, total_steps):
        self.peak = peak
        self.total_steps = total_steps

    def value_at(self, step, end=None):
        """The learning rate at `step` of a decay that reaches 0 at `end` (default `total_steps`):
        a variable that trains for the first steps only falls to 0 at its own last step."""
        end = self.total_steps if end is None else end
        return self.peak * max(1.0 - step / max(end, 1), 0.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps}


def learning_rate(config, steps_per_epoch):
    total = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "linear":
        return Linear(config.lr, total)
    if config.schedule == "cosine":
        return WarmupCosine(config.lr, total, int(round(config.warmup_epochs * steps_per_epoch)))
    rise = config.warmup_epochs * steps_per_epoch if config.warmup_epochs else 0.3 * total
    if config.schedule == "triangle":
        rise = config.warmup_epochs * steps_per_epoch if config.warmup_epochs else 0.23 * total
        return Triangle(config.lr, total, max(int(rise), 1))
    return OneCycle(config.lr, total, int(round(rise)))




class _TorchStep:
    """A torch.optim optimizer over the torch tensors of a list of Keras variables, with a
    host-side copy of the step count (read from the device once, when it is made)."""

    def __init__(self, optimizer, variables, parameters, iterations, fused):
        self.optimizer = optimizer
        self.variables = variables
        self.parameters = parameters
        self.iterations = iterations
        self.fused = fused


class _TorchOptimUpdate:
    """Mixin for a Keras optimizer: `apply` runs `torch_class`'s update on the Keras variables.

    torch's optimizer state aliases the Keras slot variables (updated in place), so checkpoints,
    `--resume` and `get_config` stay Keras's. The step count is kept on the host as well, so a
    schedule's learning rate is a Python number and a constant one stays a device tensor: the
    update never waits for the device."""

    torch_class = None

    def _check_supported(self):
        unsupported = [name for name in ("clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps",
                                         "loss_scale_factor", "use_ema") if getattr(self, name, None)]
        if unsupported:
            raise ValueError(f"{type(self).__name__} applies torch.optim's update and does not support "
                             f"{', '.join(unsupported)}. Received: " +
                             ", ".join(f"{name}={getattr(self, name)!r}" for name in unsupported))

    def torch_hyperparameters(self):
        raise NotImplementedError

    def torch_state(self, variable, iterations, fused):
        """torch's per-parameter state for `variable`, made of the Keras slot variables' tensors."""
        raise NotImplementedError

    def param_group_of(self, variable):
        """(learning-rate scale, step from which the variable stays still or None) of `variable`.
        From that step on its tensor stops requiring gradients (for `airbench94`'s whitening bias the
        backward pass then skips the first layer and block1's input gradient, as airbench's
        `bias.detach()` does); `restore_gradients` turns them back on after training."""
        return 1.0, None

    def _param_groups(self, variables, parameters):
        """torch param groups, one per (scale, frozen-at step): weight decay divided by the scale,
        so that the decay per step (learning rate x weight decay) is the same in every group."""
        groups = {}
        for variable, parameter in zip(variables, parameters):
            groups.setdefault(self.param_group_of(variable), []).append(parameter)
        decay = self.torch_hyperparameters().get("weight_decay", 0.0)
        return [{"params": params, "scale": scale, "frozen_at": frozen_at, "weight_decay": decay / scale}
                for (scale, frozen_at), params in groups.items()]

    def _torch_step(self, variables):
        steps = self.__dict__.setdefault("_torch_steps", {})
        key = tuple(id(variable) for variable in variables)
        step = steps.get(key)
        if step is None:
            parameters = [variable.value for variable in variables]
            fused = all(parameter.device.type in ("cpu", "cuda") for parameter in parameters)
            iterations = int(keras.ops.convert_to_numpy(self.iterations))  # once, not every step
            optimizer = self.torch_class(self._param_groups(variables, parameters), lr=0.0, fused=fused or None,
                                         foreach=None if fused else True, **self.torch_hyperparameters())
            for variable, parameter in zip(variables, parameters):
                optimizer.state[parameter].update(self.torch_state(variable, iterations, fused))
            step = steps[key] = _TorchStep(optimizer, variables, parameters, iterations, fused)
        return step

    def _learning_rate_now(self, step):
        schedule = keras_internals.optimizer_learning_rate(self)
        if isinstance(schedule, _PythonSchedule):
            return schedule.value_at(step.iterations)
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
        schedule = keras_internals.optimizer_learning_rate(self)
        for group in step.optimizer.param_groups:
            frozen_at = group["frozen_at"]
            if frozen_at is not None and step.iterations >= frozen_at:
                group["lr"] = 0.0
                for parameter in group["params"]:  # the backward pass skips what only these needed
                    if parameter.requires_grad:
                        parameter.requires_grad_(False)
            elif frozen_at is not None and isinstance(schedule, Linear):  # falls to 0 at its own last step
                group["lr"] = schedule.value_at(step.iterations, end=frozen_at) * group["scale"]
            else:
                group["lr"] = lr if group["scale"] == 1.0 else lr * group["scale"]
        if found_inf is not None and not step.fused:
            raise ValueError(f"{type(self).__name__}: skipping non-finite updates needs torch's fused optimizer, "
                             f"which {step.parameters[0].device} lacks.")
        step.optimizer.found_inf = found_inf  # read by torch's fused update
        step.optimizer.step()
        if found_inf is None:
            self.iterations.value.add_(1)
        else:
            self.iterations.value.add_(1 - found_inf.to(self.iterations.value.dtype))
        step.iterations += 1
        self.after_update(step)

    def after_update(self, step):
        """Called after every update with the host step count already advanced."""

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self.__dict__.pop("_torch_steps", None)  # the step count changed: read it again


class _TorchAdamUpdate(_TorchOptimUpdate):
    def torch_hyperparameters(self):
        return dict(betas=(self.beta_1, self.beta_2), eps=self.epsilon, amsgrad=self.amsgrad,
                    weight_decay=self.torch_weight_decay)

    def torch_state(self, variable, iterations, fused):
        slots = keras_internals.slot_variables(self, variable)
        state = {"exp_avg": slots["momentum"].value, "exp_avg_sq": slots["velocity"].value,
                 # torch counts steps per parameter, on the device for its fused update
                 "step": torch.tensor(float(iterations), dtype=torch.float32,
                                      device=variable.value.device if fused else "cpu")}
        if self.amsgrad:
            state["max_exp_avg_sq"] = slots["velocity_hat"].value
        return state


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchAdam(_TorchAdamUpdate, keras.optimizers.Adam):
    """Adam that updates exactly as `torch.optim.Adam` (epsilon 1e-8 after the bias correction;
    weight decay as an L2 term added to the gradients, as torch's `weight_decay`). Keras's own
    Adam adds epsilon to sqrt(v) before the bias correction, which in torch's terms is an epsilon
    of eps / sqrt(1 - b2**t): 30x larger at the first step, damping the steps of weights with small
    gradients until the correction settles (thousands of steps)."""

    torch_class = torch.optim.Adam

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, weight_decay=None, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, **kwargs)
        self.torch_weight_decay = weight_decay or 0.0
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

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay, **kwargs)
        self._check_supported()

    @property
    def torch_weight_decay(self):
        return self.weight_decay


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchSGD(_TorchOptimUpdate, keras.optimizers.SGD):
    """SGD that updates exactly as `torch.optim.SGD`: momentum buffer `b = m * b + g`, step
    `w -= lr * b` (Nesterov: `w -= lr * (g + m * b)`), weight decay as an L2 term added to the
    gradients. Keras's SGD scales the buffer by the learning rate instead, which differs from
    torch's whenever the learning rate changes."""

    torch_class = torch.optim.SGD

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, lr_scales=None,
                 frozen_after=None, lookahead_every=0, lookahead_total=0, **kwargs):
        """`lr_scales`: {variable path: learning-rate multiplier} (its weight decay is divided by
        it: the same decay per step). `frozen_after`: {variable path: step} from which the
        variable no longer moves. `lookahead_every` > 0: every that many steps the weights are
        pulled to a running average of themselves (airbench's lookahead; the average is
        optimizer state, saved and resumed) with a decay rising as 0.95^5 (step / total)^3 over
        `lookahead_total` steps; at the last step the weights take the average. The model's
        state (batch-norm moving statistics, `average_model_state`) is averaged with them."""
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.torch_weight_decay = weight_decay or 0.0
        self.lr_scales = dict(lr_scales or {})
        self.frozen_after = dict(frozen_after or {})
        for name, table in (("lr_scales", self.lr_scales), ("frozen_after", self.frozen_after)):
            bad = {path: value for path, value in table.items()
                   if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0}
            if bad:
                raise ValueError(f"`{name}` values must be positive numbers. Received: {name}={bad!r}")
        if lookahead_every and (lookahead_every < 1 or lookahead_total < 1):
            raise ValueError("Lookahead needs `lookahead_every` >= 1 and `lookahead_total` >= 1 steps. Received: "
                             f"lookahead_every={lookahead_every!r}, lookahead_total={lookahead_total!r}")
        self.lookahead_every = int(lookahead_every or 0)
        self.lookahead_total = int(lookahead_total or 0)
        # the model's variables, kept away from Keras's tracker (which would count them as the optimizer's)
        self.__dict__.update(_model_state=[], _model_state_start=[])
        self._check_supported()

    def torch_hyperparameters(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.torch_weight_decay)

    def torch_state(self, variable, iterations, fused):
        if not self.momentum:
            return {}
        return {"momentum_buffer": keras_internals.slot_variables(self, variable)["momentum"].value}

    def param_group_of(self, variable):
        frozen_at = self.frozen_after.get(variable.path)
        return float(self.lr_scales.get(variable.path, 1.0)), int(frozen_at) if frozen_at is not None else None

    def average_model_state(self, variables):
        """Lookahead averages `variables` too: the model's non-trainable float weights, such as
        batch-norm moving statistics, as airbench's average covers every float tensor of the
        network's state dict. Their averages start from their values now, before any training
        step moves them (`ImageClassifier.compile` calls it; a hand-written step builds the
        optimizer at its first update, after its forward pass has moved the statistics)."""
        if not self.lookahead_every:
            return
        if self.built:
            if list(map(id, variables)) != list(map(id, self._model_state)):
                raise ValueError(f"This {type(self).__name__} was built with another model's state; its lookahead "
                                 "averages are optimizer variables. Compile the other model with a new optimizer.")
            return  # the same model compiled again with this optimizer
        self.__dict__["_model_state"] = list(variables)
        self.__dict__["_model_state_start"] = [ops.copy(ops.stop_gradient(variable.value)) for variable in variables]

    def model_state_averages(self):
        """The lookahead's averages of the model state, once built (a data-parallel run averages
        them over the ranks with the batch-norm statistics, every rank's average then the same)."""
        if not self.lookahead_every or not self.built:
            return []
        return [self._lookahead[variable.path].value for variable in self._model_state]

    def build(self, variables):
        super().build(variables)
        if self.lookahead_every:
            self._lookahead = {}
            for variable in variables:
                average = self._lookahead[variable.path] = self.add_variable_from_reference(variable, "lookahead")
                average.assign(variable)
            for variable, start in zip(self._model_state, self._model_state_start):
                average = self._lookahead[variable.path] = self.add_variable_from_reference(variable, "lookahead")
                average.assign(start)
            self._model_state_start.clear()  # used once: the averages hold them now

    def after_update(self, step):
        every, total, now = self.lookahead_every, self.lookahead_total, step.iterations
        if not every or now > total:
            return
        if now % every == 0:
            decay = 0.95 ** 5 * (now / total) ** 3
        elif now == total:
            decay = 1.0  # the last step: the weights take the average
        else:
            return
        averages = [self._lookahead[variable.path].value for variable in step.variables + self._model_state]
        with torch.no_grad():
            for average, parameter in zip(averages, step.parameters + [v.value for v in self._model_state]):
                average.lerp_(parameter, 1.0 - decay)
                parameter.copy_(average)

    def get_config(self):
        config = super().get_config()
        config.update(weight_decay=self.torch_weight_decay or None, lr_scales=self.lr_scales,
                      frozen_after=self.frozen_after, lookahead_every=self.lookahead_every,
                      lookahead_total=self.lookahead_total)
        return config


def newton_schulz(matrix, steps=3, eps=1e-7, dtype=torch.bfloat16):
    """airbench94_muon's quintic Newton-Schulz iteration, in `dtype` (airbench's bfloat16):
    `matrix` (2-D) with its singular values pushed towards 1 (roughly into [0.5, 1.5]), its
    singular vectors kept."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = matrix.to(dtype)
    x = x / (x.norm() + eps)  # the largest singular value at most 1
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchMuon(TorchSGD):
    """airbench94_muon's optimizer pair as one Keras optimizer: Muon for every trainable
    convolution kernel (4-D), `TorchSGD` (with its learning-rate scales and frozen variables) for
    every other variable.

    Muon's step for a kernel (Keller Jordan's, as in airbench94_muon): momentum buffer
    `b = m * b + g` (Nesterov: `u = g + m * b`, else `u = b`); the kernel rescaled to a norm of
    sqrt(output channels); then `w -= lr * NS(u)`, where NS is `newton_schulz` of `u` as an
    (output channels) x (inputs) matrix. The orthogonalised update does not depend on the
    gradient's scale, so a mean or a summed loss give the same step. Muon's learning rate is
    `muon_lr_scale` times the schedule's, and follows it; its buffers are optimizer variables,
    saved in checkpoints."""

    ns_dtype = torch.bfloat16  # Newton-Schulz's precision (airbench's); float32 in tests that compare runs

    def __init__(self, learning_rate=0.01, muon_lr_scale=1.0, muon_momentum=0.6, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        if isinstance(muon_lr_scale, bool) or not isinstance(muon_lr_scale, (int, float)) or muon_lr_scale <= 0:
            raise ValueError(f"`muon_lr_scale` must be a positive number. Received: muon_lr_scale={muon_lr_scale!r}")
        if isinstance(muon_momentum, bool) or not isinstance(muon_momentum, (int, float)) \
                or not 0 <= muon_momentum < 1:
            raise ValueError(f"`muon_momentum` must be in [0, 1). Received: muon_momentum={muon_momentum!r}")
        if self.lookahead_every:
            raise ValueError("TorchMuon does not take lookahead. Received: "
                             f"lookahead_every={self.lookahead_every!r}")
        self.muon_lr_scale = float(muon_lr_scale)
        self.muon_momentum = float(muon_momentum)

    @staticmethod
    def takes_muon_step(variable):
        return variable.trainable and len(variable.shape) == 4

    def build(self, variables):
        super().build(variables)
        self._muon_buffers = {variable.path: self.add_variable_from_reference(variable, "muon_momentum")
                              for variable in variables if self.takes_muon_step(variable)}

    def apply(self, grads, trainable_variables=None, found_inf=None):
        if found_inf is not None:
            raise ValueError("TorchMuon does not take float16 loss scaling; train in bf16 or float32.")
        trainable_variables = self._built_for(trainable_variables)
        grads = list(grads)
        muon, others = self._split(trainable_variables)
        other_variables = [trainable_variables[i] for i in others]
        step = self._torch_step(other_variables)
        lr = self._learning_rate_now(step) * self.muon_lr_scale
        with torch.no_grad():
            for i in muon:
                self._muon_step(trainable_variables[i], grads[i], lr)
        super().apply([grads[i] for i in others], other_variables)

    def _split(self, variables):
        """(indices of the kernels Muon steps, indices of the rest), worked out once per variable list."""
        splits = self.__dict__.setdefault("_splits", {})
        key = tuple(id(variable) for variable in variables)
        if key not in splits:
            muon = [i for i, variable in enumerate(variables) if self.takes_muon_step(variable)]
            others = sorted(set(range(len(variables))) - set(muon))
            if not others:
                raise ValueError("TorchMuon needs at least one variable that is not a convolution kernel "
                                 "(its step count lives in the SGD part).")
            splits[key] = (muon, others)
        return splits[key]

    def _muon_step(self, variable, grad, lr):
        if grad is None:
            return
        weight = variable.value
        buffer = self._muon_buffers[variable.path].value
        buffer.mul_(self.muon_momentum).add_(grad)
        update = grad.add(buffer, alpha=self.muon_momentum) if self.nesterov else buffer
        outputs = weight.shape[-1]  # Keras's kernel layout: (kh, kw, in, out)
        weight.mul_(outputs ** 0.5 / weight.norm())
        orthogonal = newton_schulz(update.reshape(-1, outputs).T, dtype=self.ns_dtype).T.reshape(weight.shape)
        if isinstance(lr, torch.Tensor):
            weight.sub_(orthogonal.to(weight.dtype) * lr)
        else:
            weight.add_(orthogonal, alpha=-lr)

    def get_config(self):
        config = super().get_config()
        config.update(muon_lr_scale=self.muon_lr_scale, muon_momentum=self.muon_momentum)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras's dynamic loss scaling for float16 (the same variables, schedule and checkpoint
    format) without its host synchronisations: the gradients are unscaled and checked for
    infinities on the device, the inner optimizer's fused update skips a non-finite step on the
    device, and the scale is updated there (torch's GradScaler kernels). Keras's own decides
    with `ops.cond`, which reads the verdict back to the host every step."""

    def apply(self, grads, trainable_variables=None):
        if not isinstance(self.inner_optimizer, _TorchOptimUpdate):
            return super().apply(grads, trainable_variables)
        if not self.built:
            with keras.name_scope(self.name):
                self.build(trainable_variables)
            self.built = True
        present = [grad for grad in grads if grad is not None]
        found_inf = torch.zeros((), device=present[0].device)
        inverse_scale = self.dynamic_scale.value.double().reciprocal().float()
        torch._amp_foreach_non_finite_check_and_unscale_(present, found_inf, inverse_scale)
        self.inner_optimizer.apply(grads, trainable_variables, found_inf=found_inf)
        torch._amp_update_scale_(self.dynamic_scale.value, self.step_counter.value, found_inf, 2.0, 0.5,
                                 self.dynamic_growth_steps)


def restore_gradients(model):
    """Every trainable weight of `model` requires gradients again (after a run whose optimizer
    froze some, so that later training of the same model object trains them)."""
    if keras.backend.backend() != "torch":
        return  # training was refused: nothing froze
    for variable in model.trainable_weights:
        variable.value.requires_grad_(True)


def build_optimizer(config, steps_per_epoch, model=None):
    """The optimizer of `config`. `model` (needed for `bn_bias_lr_scale` and for layers whose bias
    trains for a number of epochs only, as `airbench94`'s whitening layer) names the variables that
    take their own learning rate."""
    optimizer = _build_optimizer(config, steps_per_epoch, model)
    if config.mixed_precision == "fp16":  # what Keras's compile would wrap it in, without host syncs
        return TorchLossScaleOptimizer(optimizer)
    return optimizer


def _variable_options(config, steps_per_epoch, model):
    """SGD's per-variable options for `model`: batch-norm biases' learning-rate scale, frozen
    biases, lookahead."""
    options = {}
    if config.lookahead:
        options.update(lookahead_every=config.lookahead, lookahead_total=config.epochs * steps_per_epoch)
    if model is None:
        return options
    sublayers = keras_internals.all_layers(model)
    scales = {}
    if config.bn_bias_lr_scale != 1.0:
        scales.update({layer.beta.path: config.bn_bias_lr_scale for layer in sublayers
                       if isinstance(layer, keras.layers.BatchNormalization) and layer.center})
    heads = [layer for layer in sublayers if isinstance(layer, keras.layers.Dense)]
    if config.head_lr_scale != 1.0 and heads:
        scales[heads[-1].kernel.path] = config.head_lr_scale
    if scales:
        options["lr_scales"] = scales
    frozen = {layer.bias.path: layer.bias_epochs * steps_per_epoch for layer in sublayers
              if isinstance(getattr(layer, "bias_epochs", None), int) and getattr(layer, "bias", None) is not None}
    if frozen:
        options["frozen_after"] = {path: step for path, step in frozen.items() if step > 0} or None
    return options


def _build_optimizer(config, steps_per_epoch, model=None):
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return TorchAdam(learning_rate=lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return TorchAdamW(learning_rate=lr, weight_decay=config.weight_decay)
    options = _variable_options(config, steps_per_epoch, model)
    if config.optimizer == "muon":
        return TorchMuon(learning_rate=lr, muon_lr_scale=config.muon_lr / config.lr,
                         muon_momentum=config.muon_momentum, momentum=config.momentum, nesterov=config.nesterov,
                         weight_decay=decay, **options)
    return TorchSGD(learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=decay,
                    **options)
