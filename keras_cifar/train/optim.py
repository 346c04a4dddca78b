"""Optimizers, learning-rate schedules and the loss, built from a RunConfig."""

import math

import keras
from keras import ops

from keras_cifar.models.layers import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to 0 at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps=0):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1) / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = 0.5 * self.peak * (1 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's `OneCycleLR` (cosine annealing): from `peak / div_factor` up to
    `peak` over the first `rise_steps`, then down to `peak / (div_factor * final_div_factor)`."""

    def __init__(self, peak, total_steps, rise_steps, div_factor=25.0, final_div_factor=1e4):
        self.peak = peak
        self.total_steps = total_steps
        self.rise_steps = rise_steps
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        start = self.peak / self.div_factor
        end = start / self.final_div_factor

        def anneal(low, high, fraction):  # cosine from `low` (fraction 0) to `high` (fraction 1)
            return high + (low - high) * 0.5 * (1 + ops.cos(math.pi * ops.clip(fraction, 0.0, 1.0)))

        rising = anneal(start, self.peak, step / max(self.rise_steps, 1))
        falling = anneal(self.peak, end, (step - self.rise_steps) / max(self.total_steps - self.rise_steps, 1))
        return ops.where(step < self.rise_steps, rising, falling)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "rise_steps": self.rise_steps,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


def learning_rate(config, steps_per_epoch):
    total = config.epochs * steps_per_epoch
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return WarmupCosine(config.lr, total, int(round(config.warmup_epochs * steps_per_epoch)))
    rise = config.warmup_epochs * steps_per_epoch if config.warmup_epochs else 0.3 * total
    return OneCycle(config.lr, total, int(round(rise)))


class _TorchAdamUpdate:
    """torch.optim.Adam's update, `w -= lr / (1 - b1**t) * m / (sqrt(v / (1 - b2**t)) + eps)`,
    for all variables at once with `torch._foreach_*` ops. Keras's own Adam adds epsilon to
    sqrt(v) before the bias correction, which in torch's terms is an epsilon of
    eps / sqrt(1 - b2**t): 30x larger at the first step, damping the steps of weights with small
    gradients until the correction settles (thousands of steps)."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        import torch

        with torch.no_grad():
            variables = [v.value for v in trainable_variables]
            dtype = variables[0].dtype
            step = ops.cast(self.iterations + 1, dtype)
            lr = ops.cast(learning_rate, dtype)
            bias_1 = 1 - ops.power(ops.cast(self.beta_1, dtype), step)
            bias_2_sqrt = ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), step))
            grads = [ops.cast(g, dtype) for g in grads]
            if self.coupled_weight_decay:
                grads = torch._foreach_add(grads, variables, alpha=self.coupled_weight_decay)
            m_list = [self._momentums[self._get_variable_index(v)].value for v in trainable_variables]
            v_list = [self._velocities[self._get_variable_index(v)].value for v in trainable_variables]
            torch._foreach_mul_(m_list, self.beta_1)
            torch._foreach_add_(m_list, grads, alpha=1 - self.beta_1)
            torch._foreach_mul_(v_list, self.beta_2)
            torch._foreach_addcmul_(v_list, grads, grads, value=1 - self.beta_2)
            denominators = torch._foreach_sqrt(v_list)
            torch._foreach_div_(denominators, bias_2_sqrt)
            torch._foreach_add_(denominators, self.epsilon)
            updates = torch._foreach_div(m_list, denominators)
            torch._foreach_mul_(updates, lr / bias_1)
            torch._foreach_sub_(variables, updates)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchAdam(_TorchAdamUpdate, keras.optimizers.Adam):
    """Adam that updates exactly as `torch.optim.Adam` (epsilon 1e-8 after the bias correction;
    weight decay as an L2 term added to the gradients, as torch's `weight_decay`)."""

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, weight_decay=None, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, **kwargs)
        self.coupled_weight_decay = weight_decay or 0.0

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.coupled_weight_decay or None
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TorchAdamW(_TorchAdamUpdate, keras.optimizers.AdamW):
    """AdamW that updates exactly as `torch.optim.AdamW` (decoupled weight decay, as Keras's
    AdamW, then torch's Adam step)."""

    coupled_weight_decay = 0.0

    def __init__(self, learning_rate=1e-3, epsilon=1e-8, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, weight_decay=weight_decay, **kwargs)


def build_optimizer(config, steps_per_epoch):
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return TorchAdam(learning_rate=lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return TorchAdamW(learning_rate=lr, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov,
                                weight_decay=decay)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels, with PyTorch's label
    smoothing: `(1 - s) * nll(label) + s * mean over classes of nll(class)`."""

    def __init__(self, label_smoothing=0.0, name="sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        labels = ops.expand_dims(ops.cast(ops.reshape(y_true, (-1,)), "int32"), -1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, labels, axis=-1), -1)
        if not self.label_smoothing:
            return nll
        return (1 - self.label_smoothing) * nll - self.label_smoothing * ops.mean(log_probs, axis=-1)

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config


def build_loss(config):
    return SparseCrossentropy(label_smoothing=config.label_smoothing)
