"""The callbacks that act during a training run's steps and epochs, the callback list that
dispatches them, and `RunTimes`, where the list records what each part of an epoch takes. The
epoch commit is in `commit.py`, the TensorBoard summaries in `tensorboard_callbacks.py`."""

import contextlib
import math
import time

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar.data.loader import stream_seed
from keras_cifar.models.step_runtime import RunningMeans


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

    The loss never leaves the device for this. The logs' loss is the epoch's running mean, which is
    finite until a step's loss is not and never again after: each step adds 1 on the device when
    it is finite (three kernels), so that the count is the index of the first bad step. The host
    reads it at most every `check_seconds` and at the end of each epoch. A diverging run stops
    within seconds, and no step waits for the device.

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
        self._finite_steps = None  # this epoch's count of steps with a finite loss, on the device
        self._steps = 0  # this epoch's steps
        self._last_check = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._finite_steps = None
        self._steps = 0
        self._last_check = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not torch.is_tensor(loss):
            loss = torch.tensor(float(loss))
        if self._finite_steps is None:
            self._finite_steps = torch.zeros((), dtype=torch.int64, device=loss.device)
        self._finite_steps += (loss - loss) == 0  # 0 for a finite loss, NaN otherwise
        self._steps += 1
        if self.check_steps:
            if (batch + 1) % self.check_steps == 0:
                self._check()
        elif time.monotonic() - self._last_check >= self.check_seconds:
            self._check()

    def _check(self):
        self._last_check = time.monotonic()
        if self._finite_steps is not None and self.bad_step is None:
            first_bad = torch.where(self._finite_steps < self._steps, self._finite_steps, -1)  # the batch index, or -1
            first_bad = first_bad if self.all_ranks is None else self.all_ranks(first_bad)
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


class RunTimes:
    """Where a run's wall time goes, as the run's own hooks time it (summary.json's `time_parts_s`).

    Per epoch (`epochs`, a dict per epoch): `train` (from the end of the epoch-begin hooks to the
    start of the evaluation: the steps with their batch hooks), `evaluation` (the test set's steps),
    the epoch, test and train hooks of the callbacks grouped by their `time_part` (`checkpoint`,
    `tensorboard`, `callbacks` for the others), and `rest`: what Keras's loop does between them
    (reading the metrics, setting up the evaluation). These add up to `cycle`, the epoch's start to the
    next epoch's start (the last: to the start of the train-end hooks). Keys with a dot are details of
    a part, inside it and not added again (`checkpoint.save`: the .keras file).

    Per run (`run`): the phases of `fit` outside the epochs, each timed by the trainer."""

    def __init__(self):
        self.run = {}
        self.epochs = []
        self.marks = {}  # name -> time.perf_counter() when it happened: the edges of the run's phases
        self._epoch = None  # the current epoch's dict, while one runs

    def mark(self, name, first=False):
        """Records now as `name` (`first`: unless already recorded)."""
        if not (first and name in self.marks):
            self.marks[name] = time.perf_counter()

    def between(self, start, end):
        """Seconds from mark `start` to mark `end`; None where one is missing."""
        if start in self.marks and end in self.marks:
            return self.marks[end] - self.marks[start]
        return None

    @property
    def in_epoch(self):
        return self._epoch is not None

    def begin_epoch(self, epoch):
        """`epoch`: Keras's 0-based index; recorded 1-based, as in metrics.csv."""
        self._epoch = {"epoch": epoch + 1}
        self.epochs.append(self._epoch)

    def end_epoch(self, cycle_s):
        parts = sum(value for key, value in self._epoch.items() if key not in ("epoch", "rest") and "." not in key)
        self._epoch["rest"] = self._epoch.get("rest", 0.0) + cycle_s - parts
        self._epoch["cycle"] = cycle_s
        self._epoch = None

    def add(self, part, seconds):
        """Adds `seconds` to `part` of the current epoch (of the run, outside the epochs)."""
        target = self._epoch if self._epoch is not None else self.run
        target[part] = target.get(part, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, part):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - start)

    def as_dict(self):
        return {"run": dict(self.run), "epochs": [dict(epoch) for epoch in self.epochs]}


BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
               "on_predict_batch_begin", "on_predict_batch_end")


EPOCH_HOOKS = ("on_epoch_begin", "on_epoch_end", "on_test_begin", "on_test_end")


class RunCallbacks(keras.callbacks.CallbackList):
    """Keras's CallbackList without its per-step costs: the batch hooks go, in the training thread,
    only to the callbacks that define them, with the step's logs as the step returned them
    (device tensors, not converted to Python numbers: no host synchronisation). Epoch, train and
    test hooks are Keras's own, with Python numbers.

    It times each epoch into `times` (a `RunTimes`): the training and evaluation between the hooks,
    and each callback's epoch and test hooks under the callback's `time_part` ("callbacks" unless
    it names one). A dozen clock reads per epoch, none per step.

    `fit` takes it as it is; give it what `fit` would: `model`, `epochs`, `steps`, `verbose`."""

    def __init__(self, callbacks, *, model, epochs, steps, verbose, times=None):
        callbacks = list(callbacks)
        if verbose:
            callbacks.append(ProgressBar())
        super().__init__(callbacks, add_history=True, add_progbar=False, model=model, epochs=epochs, steps=steps,
                         verbose=verbose)
        keras_internals.disable_async_dispatch(self)
        self._hooks = {name: [getattr(callback, name) for callback in self.callbacks
                              if getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name)]
                       for name in BATCH_HOOKS}
        self.times = times if times is not None else RunTimes()
        for callback in self.callbacks:
            for name in EPOCH_HOOKS:
                if getattr(type(callback), name) is not getattr(keras.callbacks.Callback, name):
                    # The list's loops call `callback.<hook>`: the instance attribute, which times the class's.
                    setattr(callback, name, self._timed_hook(callback, name))
        self._epoch_start = self._train_start = self._test_start = None

    def _timed_hook(self, callback, name):
        part = getattr(callback, "time_part", "callbacks")

        def timed(*args, **kwargs):
            hook = getattr(type(callback), name)  # looked up at each call, as the list's own call would
            if not self.times.in_epoch:
                return hook(callback, *args, **kwargs)
            with self.times.timed(part):
                return hook(callback, *args, **kwargs)

        return timed

    def _end_epoch(self, now):
        if self.times.in_epoch:
            self.times.end_epoch(now - self._epoch_start)

    def on_epoch_begin(self, epoch, logs=None):
        now = time.perf_counter()
        self.times.mark("first_epoch_begin", first=True)
        self._end_epoch(now)
        self.times.begin_epoch(epoch)
        self._epoch_start = now
        super().on_epoch_begin(epoch, logs)
        self._train_start = time.perf_counter()

    def on_test_begin(self, logs=None):
        if self._train_start is not None and self.times.in_epoch:  # the evaluation of fit, not a later one
            self.times.add("train", time.perf_counter() - self._train_start)
            self._train_start = None
        super().on_test_begin(logs)
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self.times.in_epoch:
            self.times.add("evaluation", time.perf_counter() - self._test_start)
        super().on_test_end(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._train_start is not None:  # an epoch without evaluation
            self.times.add("train", time.perf_counter() - self._train_start)
            self._train_start = None
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.times.mark("train_end")
        self._end_epoch(self.times.marks["train_end"])
        super().on_train_end(logs)

    def _dispatch(self, name, batch, logs):
        for hook in self._hooks[name]:
            hook(batch, logs)

    def _logs_when_read(self):
        """Asks the coming step for its logs as trackers (an `ImageClassifier`'s), whose running
        means the batch hooks compute only if they read them: no division per step otherwise."""
        runtime = getattr(self.model, "step_runtime", None)
        if runtime is not None:
            runtime.logs_as_trackers = True

    def on_train_batch_begin(self, batch, logs=None):
        self._dispatch("on_train_batch_begin", batch, logs)
        self._logs_when_read()

    def on_train_batch_end(self, batch, logs=None):
        self._dispatch("on_train_batch_end", batch, RunningMeans(logs or {}))

    def on_test_batch_begin(self, batch, logs=None):
        self._dispatch("on_test_batch_begin", batch, logs)
        self._logs_when_read()

    def on_test_batch_end(self, batch, logs=None):
        self._dispatch("on_test_batch_end", batch, RunningMeans(logs or {}))

    def on_predict_batch_begin(self, batch, logs=None):
        self._dispatch("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._dispatch("on_predict_batch_end", batch, logs)
