"""The commit of each completed epoch to the run folder: the checkpoint, state.json (the commit
point), then the links to it and metrics.csv."""

import csv
import io
import math
import os

import keras

from keras_cifar.train import run_dir as rd
from keras_cifar.train import storage
from keras_cifar.train.callbacks import RunTimes
from keras_cifar.train.signals import deferred_sigint

METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time_s",
                  "elapsed_s", "wall_s")


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

    time_part = "checkpoint"  # RunTimes' part for this callback's hooks

    def __init__(self, run_path, state, nan_guard, monitor="val_accuracy", times=None):
        super().__init__()
        self.run_path = run_path
        self.state = state  # completed_epochs, checkpoint, best, history
        self.nan_guard = nan_guard
        self.monitor = monitor
        self.times = times if times is not None else RunTimes()  # where the details of a commit are timed

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
            with self.times.timed("checkpoint.save"):
                os.makedirs(resume_dir, exist_ok=True)
                self.model.save(tmp)
                os.replace(tmp, path)
            with self.times.timed("checkpoint.state"):
                rd.write_json(os.path.join(self.run_path, rd.STATE), new_state)
        self.state.clear()
        self.state.update(new_state)
        finish_commit(self.run_path, self.state, self.times)


def finish_commit(run_path, state, times=None):
    """What follows the commit point of `state`'s epoch, which a resumed run redoes: `last.keras`
    (and `best.keras` when this epoch is the best, or there is none) linked to the committed
    checkpoint, metrics.csv from the committed history, older checkpoints and partial files removed.
    `times`: a RunTimes that times the links (with the removals) and metrics.csv."""
    times = times if times is not None else RunTimes()
    links = [os.path.join(run_path, name) for name in (rd.LAST, rd.BEST)]
    path = os.path.join(run_path, state["checkpoint"]) if state.get("checkpoint") else None
    if path is not None:
        with times.timed("checkpoint.links"), storage.writing("the links to the last checkpoint", run_path,
                                                              cleanup=[f"{link}.tmp" for link in links]):
            _replace_with_link(path, links[0])
            best = state.get("best")
            if (best is not None and best["epoch"] == state["completed_epochs"]) or not os.path.exists(links[1]):
                _replace_with_link(path, links[1])
    with times.timed("checkpoint.metrics_csv"), storage.writing("metrics.csv", run_path):
        write_metrics_csv(os.path.join(run_path, rd.METRICS), state["history"])
    if path is None:
        return
    with times.timed("checkpoint.links"):
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
