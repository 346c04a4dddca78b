"""Crash safety: kill -9, a kill while a checkpoint is written, Ctrl-C, NaN losses,
runs started at the same moment. Each test really kills or breaks the process."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import keras_cifar  # noqa: F401
from keras_cifar.train import run_dir as rd
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import REPO, optional_import

EventAccumulator = optional_import("tensorboard.backend.event_processing.event_accumulator", "EventAccumulator")


def fit_args(data, root, *extra):
    return ["fit", "--model", "cnn", "--epochs", 3, "--batch-size", 10, "--train-images", 1000, "--seed", 3,
            "--data", data, "--data-dir", root / "tfds", "--log-dir", root / "logs", *extra]


def start_cli(*args):
    return subprocess.Popen([sys.executable, str(REPO / "cli.py"), *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(log_dir, epoch, process, timeout=600):
    """Waits until some run under `log_dir` has committed `epoch` epochs; returns its folder."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        for run in rd.list_runs(str(log_dir)):
            try:
                if rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"] >= epoch:
                    return run
            except (OSError, ValueError):
                pass
        time.sleep(0.02)
    raise AssertionError(f"epoch {epoch} never completed")


def final_weights(run):
    return keras.saving.load_model(os.path.join(run, rd.LAST)).get_weights()


def tensorboard_steps(folder, tag):
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Tensors(tag)]


@pytest.fixture(scope="module")
def uninterrupted(real_folder_2k, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(*fit_args(real_folder_2k, root))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = rd.list_runs(str(root / "logs"))
    return run


def test_kill_9_then_resume_equals_an_uninterrupted_run(real_folder_2k, uninterrupted, tmp_path):
    process = start_cli(*fit_args(real_folder_2k, tmp_path))
    run = wait_for_epoch(tmp_path / "logs", 2, process)
    time.sleep(0.3)  # into epoch 3
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = rd.read_json(os.path.join(run, rd.STATE))
    assert state["completed_epochs"] == 2, "the kill must land inside epoch 3"
    assert len((tmp_path / "logs" / os.path.basename(run) / "metrics.csv").read_text().splitlines()) == 3

    result = run_cli(*fit_args(real_folder_2k, tmp_path, "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming {run} after epoch 2 of 3" in result.stdout
    assert "Epoch 3/3" in result.stdout and "Epoch 1/3" not in result.stdout
    assert rd.list_runs(str(tmp_path / "logs")) == [run]  # no second run folder

    metrics = [line.split(",") for line in open(os.path.join(run, rd.METRICS)).read().splitlines()[1:]]
    assert [int(row[0]) for row in metrics] == [1, 2, 3]
    reference = [line.split(",") for line in open(os.path.join(uninterrupted, rd.METRICS)).read().splitlines()[1:]]
    for resumed_row, reference_row in zip(metrics, reference):
        assert resumed_row[1:5] == pytest.approx(reference_row[1:5]) or np.allclose(
            np.array(resumed_row[1:5], float), np.array(reference_row[1:5], float), atol=1e-6)
    # Same seed, same data order, restored optimizer state and schedule position: on one CPU the
    # arithmetic is the same sequence of float32 operations, so the weights agree to rounding.
    for resumed, expected in zip(final_weights(run), final_weights(uninterrupted)):
        np.testing.assert_allclose(resumed, expected, rtol=0, atol=1e-6)
    assert tensorboard_steps(os.path.join(run, "train"), "epoch_loss") == [0, 1, 2]
    assert tensorboard_steps(run, "Test_accuracy/epoch") == [0, 1, 2]
    summary = json.loads(open(os.path.join(run, rd.SUMMARY)).read())
    assert summary["epochs"] == 3


def test_kill_9_then_resume_equals_an_uninterrupted_run_with_dropout(real_folder_2k, tmp_path):
    """The same for a model with dropout (googlenet, at 32x32), on the default graph capture: the
    resumed run captures its graph again at the start of epoch 3, which must not move the random
    generator (before it did, the final weights differed by 0.94 of their largest value)."""
    def googlenet_args(root, *extra):
        return ["fit", "--model", "googlenet", "--resize-to", 32, "--epochs", 3, "--batch-size", 16,
                "--train-images", 640, "--eval-images", 100, "--seed", 5, "--no-tensorboard",
                "--data", real_folder_2k, "--data-dir", root / "tfds", "--log-dir", root / "logs", *extra]

    reference = run_cli(*googlenet_args(tmp_path / "straight"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    (uninterrupted,) = rd.list_runs(str(tmp_path / "straight" / "logs"))
    process = start_cli(*googlenet_args(tmp_path / "killed"))
    run = wait_for_epoch(tmp_path / "killed" / "logs", 2, process)
    time.sleep(0.3)  # into epoch 3
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"] == 2, "the kill must land inside epoch 3"
    result = run_cli(*googlenet_args(tmp_path / "killed", "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    for resumed, expected in zip(final_weights(run), final_weights(uninterrupted)):
        np.testing.assert_allclose(resumed, expected, rtol=0, atol=1e-6)


KILL_DURING_COMMIT = textwrap.dedent("""
    import os, signal, sys
    import keras_cifar
    from keras_cifar.train import commit
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.trainer import fit

    data, root, where = sys.argv[1], sys.argv[2], sys.argv[3]
    original_save = keras_cifar.models.classifier.ImageClassifier.save
    original_link = commit._replace_with_link
    commits = {"n": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def save(self, path, *args, **kwargs):  # epoch 2's model file: half written, then killed
        commits["n"] += 1
        if commits["n"] == 2 and where == "model file":
            original_save(self, path, *args, **kwargs)
            with open(path, "r+b") as handle:
                handle.truncate(os.path.getsize(path) // 2)
            die()
        return original_save(self, path, *args, **kwargs)

    original_replace = os.replace

    def replace(source, target):  # the new state.json is fully written under a temporary name
        if commits["n"] == 2 and where == "state" and str(target).endswith("state.json"):
            die()
        return original_replace(source, target)

    def link(source, target):
        if commits["n"] == 2 and where == "links":
            die()
        return original_link(source, target)

    keras_cifar.models.classifier.ImageClassifier.save = save
    os.replace = replace
    commit._replace_with_link = link
    config = resolve_config(None, dict(model="cnn", epochs=3, batch_size=30, data=data,
                                       data_dir=os.path.join(root, "tfds"), log_dir=os.path.join(root, "logs")))
    fit(config, verbose=0)
""")


@pytest.mark.parametrize("where", ["model file", "state", "links"])
def test_killed_while_writing_a_checkpoint(where, real_folder_small, tmp_path):
    script = tmp_path / "kill_during_commit.py"
    script.write_text(KILL_DURING_COMMIT)
    process = subprocess.run([sys.executable, str(script), str(real_folder_small), str(tmp_path), where],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    (run,) = rd.list_runs(str(tmp_path / "logs"))
    state = rd.read_json(os.path.join(run, rd.STATE))
    assert state["completed_epochs"] == (2 if where == "links" else 1)
    for name in (rd.BEST, rd.LAST):  # always complete, loadable files
        model = keras.saving.load_model(os.path.join(run, name))
        assert model.output_shape == (None, 10)
    result = run_cli("fit", "--resume", run)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = open(os.path.join(run, rd.METRICS)).read().splitlines()
    assert [int(line.split(",")[0]) for line in metrics[1:]] == [1, 2, 3]
    assert sorted(os.listdir(os.path.join(run, rd.RESUME_DIR))) == ["epoch-0003.keras"]


def test_ctrl_c_saves_and_says_how_to_resume(real_folder_2k, tmp_path):
    process = start_cli(*fit_args(real_folder_2k, tmp_path))
    run = wait_for_epoch(tmp_path / "logs", 1, process)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"Resume with: python cli.py fit --resume {run}" in stderr
    completed = rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"]
    assert completed >= 1
    keras.saving.load_model(os.path.join(run, rd.LAST))
    result = run_cli("fit", "--resume", run, "--log-dir", tmp_path / "logs")
    assert result.returncode == 0, result.stderr[-3000:]
    assert rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"] == 3


def test_nan_loss_stops_names_epoch_and_step_keeps_last_good_checkpoint(real_folder_small, tmp_path, monkeypatch):
    import torch

    from keras_cifar.errors import TrainingError
    from keras_cifar import losses
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.trainer import fit

    original = losses.SparseCrossentropy.batch_mean  # the training step's loss
    training_steps = {"n": 0}

    def diverging(self, y_true, y_pred):  # fault injection: the loss turns NaN at epoch 2, step 4
        loss = original(self, y_true, y_pred)
        if torch.is_grad_enabled():
            training_steps["n"] += 1
            if training_steps["n"] >= 14:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(losses.SparseCrossentropy, "batch_mean", diverging)
    config = resolve_config(None, dict(model="cnn", epochs=3, batch_size=30, data=str(real_folder_small),
                                       data_dir=str(tmp_path / "tfds"), log_dir=str(tmp_path / "logs")))
    with pytest.raises(TrainingError) as error:
        fit(config, verbose=0, echo=lambda message: None)
    message = str(error.value)
    assert "NaN or infinite at epoch 2, step 4" in message
    assert "last good checkpoint (epoch 1)" in message
    (run,) = rd.list_runs(str(tmp_path / "logs"))
    assert rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"] == 1
    weights = keras.saving.load_model(os.path.join(run, rd.LAST)).get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert len(open(os.path.join(run, rd.METRICS)).read().splitlines()) == 2


def test_diverging_run_exits_non_zero_from_the_cli(real_folder_small, tmp_path):
    result = run_cli("fit", "--model", "cnn", "--epochs", 2, "--optimizer", "sgd", "--lr", "1e8", "--data",
                     real_folder_small, "--data-dir", tmp_path / "tfds", "--log-dir", tmp_path / "logs")
    assert_clean_error(result, 1, "became NaN or infinite at epoch 1, step", "holds no checkpoint")


def _make_run_dir(log_dir, barrier, queue):
    barrier.wait()
    queue.put(rd.create_run_dir(log_dir, "cnn"))


def test_simultaneous_runs_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")  # all in the same second
    folders = [rd.create_run_dir(str(tmp_path), "cnn") for _ in range(3)]
    assert [os.path.basename(f) for f in folders] == ["cnn-20260101-000000", "cnn-20260101-000000-1",
                                                      "cnn-20260101-000000-2"]
    monkeypatch.undo()
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(6), context.Queue()
    workers = [context.Process(target=_make_run_dir, args=(str(tmp_path / "race"), barrier, queue))
               for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    created = [queue.get(timeout=10) for _ in workers]
    assert len(set(created)) == 6 and all(os.path.isdir(path) for path in created)


def test_a_run_being_trained_cannot_be_resumed_twice(real_folder_small, tmp_path):
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.trainer import fit

    config = resolve_config(None, dict(model="cnn", epochs=1, batch_size=30, data=str(real_folder_small),
                                       data_dir=str(tmp_path / "tfds"), log_dir=str(tmp_path / "logs")))
    run = fit(config, verbose=0, echo=lambda message: None).run_path
    with rd.RunLock(run):  # as if another process were training in it
        result = run_cli("fit", "--resume", run, "--epochs", 2)
    assert_clean_error(result, 1, f"Another process is training in {run}")
    assert rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"] == 1
