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


# torch.optim.Adam's epsilon. Keras adds epsilon to sqrt(v) before the bias correction of v where
# torch adds it after; the two agree once sqrt(1 - beta_2**step) is ~1 (a few thousand steps).
# Keras's own default, 1e-7, damps the steps of weights with small gradients noticeably.
ADAM_EPSILON = 1e-8


def build_optimizer(config, steps_per_epoch):
    lr = learning_rate(config, steps_per_epoch)
    decay = config.weight_decay or None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, weight_decay=decay, epsilon=ADAM_EPSILON)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay, epsilon=ADAM_EPSILON)
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
