"""The callbacks that act during a training run's steps and epochs, and the callback list that
dispatches them. The epoch commit is in `commit.py`, the TensorBoard summaries in
`tensorboard_callbacks.py`."""

import math
import time

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar.data.loader import stream_seed


class EpochSeeder(keras.callbacks.Callback):
    """Makes epoch k's randomness a function of (seed, k) alone: data order and
    augmentation (through the loaders' `set_epoch`) and dropout (torch's global
    generator). A resumed run then repeats exactly what an uninterrupted one does."""

    def __init__(self, seed, *loaders, rank=0):
        super().__init__()
        self.seed = seed
        self.loaders = loaders
        self.rank = rank

    def on_epoch_begin(self, epoch, logs=None):
        for loader in self.loaders:
            loader.set_epoch(epoch)
        torch.manual_seed(stream_seed(self.seed, epoch, "dropout", self.rank))


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` (at the end of the epoch) and `epoch_time_s` to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["epoch_time_s"] = time.perf_counter() - self._start


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite.

    The loss never leaves the device for this: each step records there the first step whose
    running loss is not finite (the running mean is finite until a step's loss is not), and the
    host reads that record at most every `check_seconds` and at the end of each epoch. A
    diverging run stops within seconds, and no step waits for the device.

    In a data-parallel run (`all_ranks`: a function giving the earliest bad step over the ranks,
    a collective) the record is read every `check_steps` steps instead, the same steps on every
    rank, and reduced over the ranks: every rank stops at the same step, none is left waiting in
    a collective that the others skipped."""

    def __init__(self, check_seconds=5.0, check_steps=None, all_ranks=None):
        super().__init__()
        self.check_seconds = check_seconds
        self.check_steps = check_steps
        self.all_ranks = all_ranks
        self.epoch = 0
        self.bad_step = None  # (epoch, step), 1-based, of the first non-finite loss
        self._first_bad = None
        self._last_check = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._first_bad = None
        self._last_check = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not torch.is_tensor(loss):
            loss = torch.tensor(float(loss))
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
        self._first_bad = torch.where((self._first_bad < 0) & ~torch.isfinite(loss), batch, self._first_bad)
        if self.check_steps:
            if (batch + 1) % self.check_steps == 0:
                self._check()
        elif time.monotonic() - self._last_check >= self.check_seconds:
            self._check()

    def _check(self):
        self._last_check = time.monotonic()
        if self._first_bad is not None and self.bad_step is None:
            first_bad = self._first_bad if self.all_ranks is None else self.all_ranks(self._first_bad)
            step = int(first_bad)  # the one host synchronisation, every check_seconds (or check_steps)
            if step >= 0:
                self.bad_step = (self.epoch + 1, step + 1)
                self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._check()
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss) and self.bad_step is None:
            self.bad_step = (epoch + 1, None)
            self.model.stop_training = True


class TrainingClock(keras.callbacks.Callback):
    """The time-to-accuracy clock, as airbench's timer counts: `elapsed_s` in the epoch logs is the
    time of training and evaluation since the first training step began; what runs between the end
    of an epoch's evaluation and the start of the next epoch (this callback's `on_epoch_end` to its
    `on_epoch_begin`: the checkpoint, metrics.csv, TensorBoard events) is not counted. `wall_s` is the
    wall time since the first step, everything included. A resumed run continues both from its
    last committed epoch. Keeps `first_step_s` (the first step, which captures the graph) apart,
    and records in `state["target"]` the first epoch whose `monitor` reached `target` and its
    `elapsed_s`; with `stop`, training ends there."""

    def __init__(self, state, target=None, stop=False, monitor="val_accuracy"):
        super().__init__()
        last = (state.get("history") or [{}])[-1]
        self.offset = last.get("elapsed_s", 0.0)
        self.wall_offset = last.get("wall_s", self.offset)
        self.state = state
        self.target = target
        self.stop = stop
        self.monitor = monitor
        self.started = None
        self.first_step_s = None
        self.paused_s = 0.0
        self._paused_at = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._paused_at is not None:
            self.paused_s += time.perf_counter() - self._paused_at
            self._paused_at = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.started is None:
            self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.started

    def _since_first_step(self):
        return time.perf_counter() - self.started if self.started is not None else 0.0

    def wall(self):
        return self.wall_offset + self._since_first_step()

    def elapsed(self):
        return self.offset + self._since_first_step() - self.paused_s

    def on_epoch_end(self, epoch, logs=None):
        try:
            self._record(epoch, logs)
        finally:
            self._paused_at = time.perf_counter()

    def _record(self, epoch, logs):
        if logs is None:
            return
        logs["elapsed_s"] = self.elapsed()
        logs["wall_s"] = self.wall()
        value = logs.get(self.monitor)
        if self.target is None or value is None or self.state.get("target"):
            return
        if float(value) >= self.target:
            self.state["target"] = {"accuracy": self.target, "epoch": epoch + 1, "elapsed_s": logs["elapsed_s"],
                                    "value": float(value), "with_tta": False}
            if self.stop:
                self.model.stop_training = True


class ProgressBar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar (`verbose=1`: live, `2`: a line per epoch) that reads the step's
    logs, a host synchronisation on a GPU, only when it redraws: at most every `interval` s."""

    def __init__(self, interval=0.5):
        super().__init__()
        self.interval = interval
        self._drawn = 0.0

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._readable(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._readable(logs))

    def _readable(self, logs):
        """The logs as numbers when the bar redraws, else none (the bar then only counts the step)."""
        if self.verbose != 1 or not logs or time.monotonic() - self._drawn < self.interval:
            return None
        self._drawn = time.monotonic()
        return {key: float(value) for key, value in logs.items()}


BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
               "on_predict_batch_begin", "on_predict_batch_end")


class RunCallbacks(keras.callbacks.CallbackList):
    """Keras's CallbackList without its per-step costs: the batch hooks go, in the training thread,
    only to the callbacks that define them, with the step's logs as the step returned them
    (device tensors, not converted to Python numbers: no host synchronisation). Epoch, train and
    test hooks are Keras's own, with Python numbers.

    `fit` takes it as it is; give it what `fit` would: `model`, `epochs`, `steps`, `verbose`."""

    def __init__(self, callbacks, *, model, epochs, steps, verbose):
        callbacks = list(callbacks)
        if verbose:
            callbacks.append(ProgressBar())
        super().__init__(callbacks, add_history=True, add_progbar=False, model=model, epochs=epochs, steps=steps,
                         verbose=verbose)
        keras_internals.disable_async_dispatch(self)
        self._hooks = {name: [getattr(callback, name) for callback in self.callbacks
                              if getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name)]
                       for name in BATCH_HOOKS}

    def _dispatch(self, name, batch, logs):
        for hook in self._hooks[name]:
            hook(batch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._dispatch("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._dispatch("on_train_batch_end", batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._dispatch("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._dispatch("on_test_batch_end", batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._dispatch("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._dispatch("on_predict_batch_end", batch, logs)
