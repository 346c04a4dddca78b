"""Run folders: `logs/<model>-<YYYYmmdd-HHMMSS>[-N]`, one per training run.

A run folder holds `config.yaml` (the resolved configuration), TensorBoard
event files (the folder itself, `train/` and `validation/`), `best.keras`,
`last.keras`, `metrics.csv`, `state.json` (what resuming needs) and, once
training ends, `summary.json`.
"""

import json
import os
import re
import tempfile
import time

import yaml

from keras_cifar.errors import CheckpointError, KerasCifarError
from keras_cifar.train import storage

CONFIG = "config.yaml"
STATE = "state.json"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
BEST = "best.keras"
LAST = "last.keras"
RESUME_DIR = "resume"


def create_run_dir(log_dir, model):
    """Creates a new, unique run folder. `os.mkdir` fails if the folder exists,
    so two runs started in the same second get different folders. A log folder that refuses
    the write (read-only, full) raises `storage.WriteFailed`."""
    try:
        os.makedirs(log_dir, exist_ok=True)
    except OSError as error:
        raise (storage.refused(error, "a run folder", log_dir)
               or KerasCifarError(f"Cannot create the log directory {log_dir!r}: {error.strerror}.")) from None
    base = os.path.join(log_dir, f"{model}-{time.strftime('%Y%m%d-%H%M%S')}")
    for attempt in range(1000):
        path = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise (storage.refused(error, "a run folder", log_dir)
                   or KerasCifarError(f"Cannot create a run folder in {log_dir!r}: {error.strerror}.")) from None
    raise KerasCifarError(f"Could not find a free run folder name under {base!r}.")


def is_run_dir(path):
    return os.path.isfile(os.path.join(path, CONFIG))


def run_model(path):
    try:
        with open(os.path.join(path, CONFIG), encoding="utf-8") as handle:
            return (yaml.safe_load(handle) or {}).get("model")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


NAME_TIME = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


def _started(path):
    """When a run started: the time in its folder name (then its number), else its config's mtime."""
    match = NAME_TIME.search(os.path.basename(os.path.normpath(path)))
    if match:
        return (match.group(1), int(match.group(2) or 0), path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.stat(os.path.join(path, CONFIG)).st_mtime))
    return (stamp, 0, path)


def list_runs(log_dir, model=None):
    """Run folders under `log_dir`, oldest first (by the start time in their names)."""
    if not os.path.isdir(log_dir):
        return []
    runs = []
    for name in os.listdir(log_dir):
        path = os.path.join(log_dir, name)
        if is_run_dir(path) and (model is None or run_model(path) == model):
            runs.append(path)
    return sorted(runs, key=_started)


def latest_run(log_dir, model=None, require_checkpoint=True):
    runs = [r for r in list_runs(log_dir, model) if not require_checkpoint or os.path.exists(os.path.join(r, BEST))]
    if not runs:
        what = f"run of {model!r}" if model else "run"
        raise CheckpointError(
            f"No finished {what} with a checkpoint under {log_dir!r}. Train one with `fit()`, "
            "or pass `checkpoint` (a run folder or a .keras file)."
        )
    return runs[-1]


def resolve_checkpoint(checkpoint, log_dir):
    """A run folder (its best checkpoint), a .keras file, or None (latest run under log_dir)."""
    if checkpoint is None:
        checkpoint = latest_run(log_dir)
    if os.path.isdir(checkpoint):
        path = os.path.join(checkpoint, BEST)
        if not os.path.isfile(path):
            raise CheckpointError(f"The run folder {checkpoint!r} has no {BEST} (did its first epoch finish?).")
        return path
    if not os.path.exists(checkpoint):
        raise CheckpointError(f"The checkpoint {checkpoint!r} does not exist.")
    return checkpoint


class RunLock:
    """An exclusive lock on a run folder for as long as a process trains in it."""

    def __init__(self, path):
        self.path = path
        self._handle = None

    def __enter__(self):
        import fcntl

        # Opened for reading: a lock needs no write, so a read-only run folder is reported by its first write.
        self._handle = os.fdopen(os.open(os.path.join(self.path, ".lock"), os.O_RDONLY | os.O_CREAT, 0o644))
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise KerasCifarError(
                f"Another process is training in {self.path}. Wait for it to finish (or stop it) before "
                "resuming this run."
            ) from None
        return self

    def __exit__(self, *exc):
        self._handle.close()  # closing releases the lock


def atomic_write_text(path, text):
    folder = os.path.dirname(path) or "."
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
