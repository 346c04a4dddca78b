"""A full disk, a file-size limit or a read-only log folder ends the run with one clear message, the
last committed epoch stays loadable and resuming continues once the folder takes writes again; and
these writes stay off the time-to-accuracy clock. The refusals are real: a small tmpfs (needs root
and `mount`; skipped without), or a file-size limit (RLIMIT_FSIZE, anywhere)."""

import contextlib
import os
import resource
import signal
import subprocess
import time

import keras
import pytest

import keras_cifar
from keras_cifar.errors import StorageError
from keras_cifar.train import callbacks, commit, tensorboard_callbacks, trainer
from keras_cifar.train import run_dir as rd
from keras_cifar.train.config import resolve_config
from keras_cifar.train.storage import size_text
from keras_cifar.train.trainer import fit, resumed_config
from tests.cli_runner import assert_clean_error, run_cli

QUIET = dict(verbose=0, echo=lambda message: None)


def tiny_config(data, root, log_dir, **settings):
    return resolve_config(None, dict(dict(model="cnn", epochs=2, batch_size=30, train_images=60, eval_images=30,
                                          data=str(data), data_dir=str(root / "tfds"), log_dir=str(log_dir)),
                                     **settings))


def resume(run):
    return fit(resumed_config(run, {}), resume_path=run, **QUIET)


def mount(*args):
    return subprocess.run(["mount", *map(str, args)], capture_output=True, text=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 700 KB disk: room for a cnn run's files and one checkpoint, not two."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=700k", "tmpfs", disk):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def loadable_commit(run, epochs):
    """The state's checkpoint is `epochs`, loads, and last.keras is that same file; no partial file is left."""
    state = rd.read_json(os.path.join(run, rd.STATE))
    assert state["completed_epochs"] == epochs
    checkpoint = os.path.join(run, state["checkpoint"])
    assert keras.saving.load_model(checkpoint).output_shape == (None, 10)
    assert os.path.samefile(checkpoint, os.path.join(run, rd.LAST))
    partial = [name for _, _, names in os.walk(run) for name in names if ".tmp" in name]
    assert not partial, partial


def test_full_disk_names_the_folder_and_space_and_resume_continues(real_folder_small, small_disk, tmp_path,
                                                                   monkeypatch):
    result = run_cli("fit", "--model", "cnn", "--epochs", 2, "--batch-size", 30, "--train-images", 60,
                     "--eval-images", 30, "--data", real_folder_small, "--data-dir", tmp_path / "tfds",
                     "--log-dir", small_disk / "logs")
    (run,) = rd.list_runs(str(small_disk / "logs"))
    checkpoint_size = size_text(os.path.getsize(os.path.join(run, rd.LAST)))
    assert_clean_error(result, 1, f"Error: Cannot write the checkpoint of epoch 2 in '{run}': No space left on "
                                  f"device (", f"a checkpoint of this run takes about {checkpoint_size})",
                       "the last committed epoch (1 of 2) is kept there",
                       f"Make at least {checkpoint_size} free there, then resume with: python cli.py fit "
                       f"--resume {run}")
    loadable_commit(run, 1)
    assert os.listdir(os.path.join(run, rd.RESUME_DIR)) == ["epoch-0001.keras"]

    with monkeypatch.context() as patch, pytest.raises(StorageError) as error:  # still full: said before training
        patch.setattr(trainer, "_train", lambda *args: pytest.fail("training started"))
        resume(run)
    assert str(error.value).startswith(f"Cannot write a checkpoint in '{run}': No space left on device (")
    assert f"takes about {checkpoint_size}). Nothing was trained; the last committed epoch (1 of 2)" in str(error.value)

    assert mount("-o", "remount,size=4m", small_disk)
    assert resume(run).summary["epochs"] == 2
    loadable_commit(run, 2)
    metrics = open(os.path.join(run, rd.METRICS)).read().splitlines()
    assert [int(line.split(",")[0]) for line in metrics[1:]] == [1, 2]


@contextlib.contextmanager
def no_file_may_grow():
    """RLIMIT_FSIZE 0: every write that extends a file fails with EFBIG (SIGXFSZ ignored)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


# where the writes start to fail (from epoch 2's commit on): what the message names, the epochs committed by
# then, and what it says is kept
KEPT = "the last committed epoch ({} of 2) is kept there"
REFUSED = {
    "checkpoint": ("the checkpoint of epoch 2", 1, KEPT),
    "state.json": ("the checkpoint of epoch 2", 1, KEPT),
    "metrics.csv": ("metrics.csv", 2, KEPT),
    "TensorBoard events": ("the TensorBoard events", 2, KEPT),
    "summary.json": ("the final summary", 2, "All {} epochs are saved there; only the summary is missing"),
}


@pytest.mark.parametrize("where", list(REFUSED))
def test_a_refused_write_keeps_the_last_commit_and_resume_finishes(where, real_folder_small, tmp_path,
                                                                   monkeypatch):
    refusing = contextlib.ExitStack()
    saves = {"n": 0}

    def refuse_from_epoch_2(original, first_arg_ends=None):
        def patched(*args, **kwargs):
            if saves["n"] == 2 and (first_arg_ends is None or str(args[0]).endswith(first_arg_ends)):
                refusing.enter_context(no_file_may_grow())
            return original(*args, **kwargs)
        return patched

    save = keras_cifar.models.classifier.ImageClassifier.save

    def counted_save(self, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2 and where == "checkpoint":
            refusing.enter_context(no_file_may_grow())
        return save(self, *args, **kwargs)

    monkeypatch.setattr(keras_cifar.models.classifier.ImageClassifier, "save", counted_save)
    if where == "state.json":
        monkeypatch.setattr(rd, "write_json", refuse_from_epoch_2(rd.write_json, rd.STATE))
    if where == "summary.json":
        monkeypatch.setattr(rd, "write_json", refuse_from_epoch_2(rd.write_json, rd.SUMMARY))
    if where == "metrics.csv":
        monkeypatch.setattr(commit, "write_metrics_csv", refuse_from_epoch_2(commit.write_metrics_csv))
    if where == "TensorBoard events":
        on_epoch_end = tensorboard_callbacks.OriginalTags.on_epoch_end
        monkeypatch.setattr(tensorboard_callbacks.OriginalTags, "on_epoch_end",
                            lambda self, *args: refuse_from_epoch_2(on_epoch_end)(self, *args))

    what, committed, kept = REFUSED[where]
    with refusing, pytest.raises(StorageError) as error:
        fit(tiny_config(real_folder_small, tmp_path, tmp_path / "logs"), **QUIET)
    (run,) = rd.list_runs(str(tmp_path / "logs"))
    assert f"Cannot write {what} in '{run}': File too large (a limit on the size of a file" in str(error.value)
    assert kept.format(committed) in str(error.value)
    loadable_commit(run, committed)

    monkeypatch.undo()
    assert resume(run).summary["epochs"] == 2
    loadable_commit(run, 2)
    metrics = open(os.path.join(run, rd.METRICS)).read().splitlines()
    assert [int(line.split(",")[0]) for line in metrics[1:]] == [1, 2]
    assert os.listdir(os.path.join(run, rd.RESUME_DIR)) == ["epoch-0002.keras"]


@pytest.fixture
def read_only_later(tmp_path):
    """A folder and a function that makes it read-only: a read-only tmpfs for root (who writes through
    permission bits), or no write permission for anyone else. Yields the folder and the cause."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        yield folder, lambda: [os.chmod(path, 0o555) for path, _, _ in os.walk(folder)], "Permission denied"
        for path, _, _ in os.walk(folder):
            os.chmod(path, 0o755)
        return
    if not mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", folder):
        pytest.skip("a read-only folder for root needs a mount: mounting a tmpfs needs mount(8) and the privilege")
    yield folder, lambda: mount("-o", "remount,ro", folder), "Read-only file system"
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_read_only_log_folder_stops_before_training(real_folder_small, read_only_later, tmp_path, monkeypatch):
    folder, make_read_only, cause = read_only_later
    run = fit(tiny_config(real_folder_small, tmp_path, folder / "logs", epochs=1), **QUIET).run_path
    assert make_read_only()
    monkeypatch.setattr(trainer, "_train", lambda *args: pytest.fail("training started"))
    with pytest.raises(StorageError) as error:
        fit(resumed_config(run, {"epochs": 2}), resume_path=run, **QUIET)
    assert f"in '{run}': {cause}. Nothing was trained; the last committed epoch (1 of 2)" in str(error.value)
    with pytest.raises(StorageError) as error:
        fit(tiny_config(real_folder_small, tmp_path, folder / "logs"), **QUIET)
    assert str(error.value).startswith(f"Cannot write a run folder in '{folder / 'logs'}': {cause}. Nothing was "
                                       "trained. Make the folder writable")
    assert rd.list_runs(str(folder / "logs")) == [run]


def test_checkpoint_writes_are_off_the_time_to_target_clock(real_folder_small, tmp_path, monkeypatch):
    pause = 1.5
    original_commit = commit.Checkpointer.commit
    monkeypatch.setattr(commit.Checkpointer, "commit",
                        lambda self, *args: (time.sleep(pause), original_commit(self, *args)))
    stats = callbacks.EpochStats.on_epoch_end

    def accuracy(self, epoch, logs=None):  # the target is reached at epoch 2, after epoch 1's slow commit
        stats(self, epoch, logs)
        logs["val_accuracy"] = float(epoch)

    monkeypatch.setattr(callbacks.EpochStats, "on_epoch_end", accuracy)
    result = fit(tiny_config(real_folder_small, tmp_path, tmp_path / "logs", target_accuracy=0.5), **QUIET)
    target, history = result.summary["target"], result.history
    assert target["reached"] and target["epoch"] == 2 and target["elapsed_s"] == history[1]["elapsed_s"]
    # the clock counts each epoch's training and evaluation (epoch_time_s), not the commit between them
    assert target["elapsed_s"] < history[0]["epoch_time_s"] + history[1]["epoch_time_s"] + pause / 2
    assert history[1]["wall_s"] - history[1]["elapsed_s"] >= pause  # the wall clock does count it
