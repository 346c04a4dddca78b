"""Learning-rate schedules, Python functions of a host-side step count (no device reads)."""

import math

import keras
from keras import ops

from keras_cifar._backend import PACKAGE


class PythonSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule whose value is a Python function of the step (`value_at`): the training step
    reads it from a host-side step counter without touching the device."""

    def value_at(self, step):
        raise NotImplementedError

    def __call__(self, step):
        return ops.convert_to_tensor(self.value_at(int(ops.convert_to_numpy(step))), "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class WarmupCosine(PythonSchedule):
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
class OneCycle(PythonSchedule):
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
class Triangle(PythonSchedule):
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
class Linear(PythonSchedule):
    """airbench94_muon's schedule: linear from `peak` at the first step down to 0 at `total_steps`."""

    def __init__(self, peak, total_steps):
        self.peak = peak
        self.total_steps = total_steps

    def value_at(self, step):
        return self.peak * max(1.0 - step / max(self.total_steps, 1), 0.0)

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
