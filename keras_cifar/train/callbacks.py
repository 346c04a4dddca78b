"""The Keras callbacks of a training run (besides Keras's own TensorBoard)."""

import csv
import io
import math
import os
import time

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar.data.loader import stream_seed
from keras_cifar.tensorflow_cpu import import_tensorflow
from keras_cifar.train import run_dir as rd
from keras_cifar.train import storage
from keras_cifar.train.signals import deferred_sigint


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


METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time_s",
                  "elapsed_s", "wall_s")


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


class Checkpointer(keras.callbacks.Callback):
    """Commits each completed epoch to the run folder so that nothing is lost
    and a killed run resumes exactly.

    Order of a commit: the model with its optimizer state goes to
    `resume/epoch-NNNN.keras` (written under a temporary name, then renamed);
    then `state.json` is replaced, which is the commit point; then
    `finish_commit` rewrites `metrics.csv` and links `last.keras` (and `best.keras`
    when validation accuracy improved) to the new file. A crash at any moment
    leaves the previous commit intact. A write the disk refuses (full, a file-size
    limit, read-only) raises `storage.WriteFailed` after removing the partial and
    uncommitted files; a resumed run redoes `finish_commit`.
    """

    def __init__(self, run_path, state, nan_guard, monitor="val_accuracy"):
        super().__init__()
        self.run_path = run_path
        self.state = state  # completed_epochs, checkpoint, best, history
        self.nan_guard = nan_guard
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.nan_guard.bad_step is not None or not math.isfinite(logs.get("loss", 0.0)):
            return  # never commit weights trained into a NaN
        row = {"epoch": epoch + 1, **{k: logs[k] for k in METRIC_COLUMNS[1:] if k in logs}}
        with deferred_sigint():
            self.commit(epoch + 1, row, logs.get(self.monitor))

    def commit(self, completed_epochs, row, monitored):
        resume_dir = os.path.join(self.run_path, rd.RESUME_DIR)
        relative = os.path.join(rd.RESUME_DIR, f"epoch-{completed_epochs:04d}.keras")
        path = os.path.join(self.run_path, relative)
        tmp = os.path.join(resume_dir, f".tmp-epoch-{completed_epochs:04d}.keras")
        history = [r for r in self.state["history"] if r["epoch"] < completed_epochs] + [row]
        best = self.state.get("best")
        if monitored is not None and (best is None or monitored > best["value"]):
            best = {"metric": self.monitor, "value": monitored, "epoch": completed_epochs}
        new_state = dict(self.state, completed_epochs=completed_epochs, checkpoint=relative, history=history,
                         best=best)
        with storage.writing(f"the checkpoint of epoch {completed_epochs}", self.run_path, cleanup=(tmp, path)):
            os.makedirs(resume_dir, exist_ok=True)
            self.model.save(tmp)
            os.replace(tmp, path)
            rd.write_json(os.path.join(self.run_path, rd.STATE), new_state)
        self.state.clear()
        self.state.update(new_state)
        finish_commit(self.run_path, self.state)


def finish_commit(run_path, state):
    """What follows the commit point of `state`'s epoch, which a resumed run redoes: `last.keras`
    (and `best.keras` when this epoch is the best, or there is none) linked to the committed
    checkpoint, metrics.csv from the committed history, older checkpoints and partial files removed."""
    links = [os.path.join(run_path, name) for name in (rd.LAST, rd.BEST)]
    path = os.path.join(run_path, state["checkpoint"]) if state.get("checkpoint") else None
    if path is not None:
        with storage.writing("the links to the last checkpoint", run_path, cleanup=[f"{link}.tmp" for link in links]):
            _replace_with_link(path, links[0])
            best = state.get("best")
            if (best is not None and best["epoch"] == state["completed_epochs"]) or not os.path.exists(links[1]):
                _replace_with_link(path, links[1])
    with storage.writing("metrics.csv", run_path):
        write_metrics_csv(os.path.join(run_path, rd.METRICS), state["history"])
    if path is None:
        return
    resume_dir = os.path.dirname(path)
    for name in os.listdir(resume_dir):
        if name != os.path.basename(path):
            os.remove(os.path.join(resume_dir, name))


def write_metrics_csv(path, history):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in METRIC_COLUMNS})
    rd.atomic_write_text(path, buffer.getvalue())


def _replace_with_link(source, target):
    if os.path.exists(target) and os.path.samefile(source, target):
        return  # renaming a link onto another link of the same file would do nothing and keep the temporary one
    tmp = f"{target}.tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    try:
        os.link(source, tmp)
    except OSError:  # file systems without hard links
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, logging per epoch. With `update_freq="epoch"` its batch hooks
    write nothing; they only count steps, so the training step hands them no logs. The hooks that
    open, write or close event files raise `storage.WriteFailed` when the disk refuses the write."""

    def __init__(self, log_dir):
        super().__init__(log_dir=log_dir, write_graph=False, update_freq="epoch")

    def _writing(self):
        return storage.writing("the TensorBoard events", self.log_dir)

    def on_train_begin(self, logs=None):
        with self._writing():
            super().on_train_begin(logs)

    def on_test_begin(self, logs=None):
        with self._writing():
            super().on_test_begin(logs)

    def on_test_end(self, logs=None):
        with self._writing():
            super().on_test_end(logs)

    def on_epoch_end(self, epoch, logs=None):
        with self._writing():
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        with self._writing():
            super().on_train_end(logs)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, None)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, None)


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


class OriginalTags(keras.callbacks.Callback):
    """The original scripts' TensorBoard tags, in the run folder itself:
    `loss/epoch` (sum of the batch losses), `accuracy/epoch` (train, percent)
    and `Test_accuracy/epoch` (percent; only when the test split is the one
    evaluated every epoch, as in the originals)."""

    def __init__(self, run_path, steps_per_epoch, eval_is_test):
        super().__init__()
        self.run_path = run_path
        self.steps_per_epoch = steps_per_epoch
        self.eval_is_test = eval_is_test
        self._writer = None

    def on_train_begin(self, logs=None):
        tf = import_tensorflow()
        with storage.writing("the TensorBoard events", self.run_path):
            self._writer = tf.summary.create_file_writer(self.run_path)

    def on_epoch_end(self, epoch, logs=None):
        tf = import_tensorflow()
        logs = logs or {}
        if not math.isfinite(logs.get("loss", 0.0)):
            return
        with storage.writing("the TensorBoard events", self.run_path), self._writer.as_default(step=epoch):
            tf.summary.scalar("loss/epoch", logs["loss"] * self.steps_per_epoch)
            tf.summary.scalar("accuracy/epoch", 100.0 * logs["accuracy"])
            if self.eval_is_test and "val_accuracy" in logs:
                tf.summary.scalar("Test_accuracy/epoch", 100.0 * logs["val_accuracy"])
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            with storage.writing("the TensorBoard events", self.run_path):
                self._writer.close()
