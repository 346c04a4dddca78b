"""keras-cifar on a machine without TensorFlow (a GPU image with torch alone): a local copy is
read straight from its files into the arrays the TFDS path gives, `fit --no-tensorboard` trains
and writes everything but the TensorBoard events, and what needs TensorFlow says so."""

import json
import os

import numpy as np
import pytest

from keras_cifar import tensorflow_cpu
from keras_cifar.data import dataset, load_cifar
from tests.cli_runner import assert_clean_error, run_cli
from tests.test_data import arrays, layouts  # noqa: F401  (the module fixture)


def test_local_copies_read_without_tfds_give_the_tfds_arrays(arrays, tmp_path, monkeypatch):  # noqa: F811
    sources = layouts(str(tmp_path / "src"), arrays)
    with_tfds = {name: load_cifar(path, data_dir=str(tmp_path / "tfds"), log=lambda m: None)
                 for name, path in sources.items()}

    def no_builder(*args, **kwargs):
        raise AssertionError("TFDS was used")

    monkeypatch.setattr(tensorflow_cpu, "installed", lambda name="tensorflow": False)
    monkeypatch.setattr(dataset, "_make_builder", no_builder)
    for name, path in sources.items():
        messages = []
        direct = load_cifar(path, data_dir=str(tmp_path / "direct"), log=messages.append)
        assert any("without TFDS" in m for m in messages), name
        expected = with_tfds[name]
        assert direct.class_names == expected.class_names, name
        for split in ("train", "test"):  # the same images in the same order
            np.testing.assert_array_equal(getattr(direct, split).images, getattr(expected, split).images, name)
            np.testing.assert_array_equal(getattr(direct, split).labels, getattr(expected, split).labels, name)
            assert getattr(direct, split).labels.dtype == np.int64
        messages.clear()
        again = load_cifar(path, data_dir=str(tmp_path / "direct"), log=messages.append)
        assert not messages  # from the cache
        np.testing.assert_array_equal(again.train.images, expected.train.images)


def test_tfds_dataset_without_tfds_is_a_clear_error(tmp_path, monkeypatch):
    from keras_cifar.errors import DataError

    monkeypatch.setattr(tensorflow_cpu, "installed", lambda name="tensorflow": False)
    with pytest.raises(DataError, match="needs TensorFlow and tensorflow-datasets"):
        load_cifar("cifar10", data_dir=str(tmp_path))


def test_fit_without_tensorflow(real_folder_small, tmp_path, without_tensorflow):
    logs = tmp_path / "logs"
    common = ("fit", "--model", "cnn", "--epochs", "1", "--data", real_folder_small, "--data-dir",
              tmp_path / "data", "--log-dir", logs, "--device", "cpu")
    refused = run_cli(*common, env=without_tensorflow)
    assert_clean_error(refused, 2, "TensorFlow", "--no-tensorboard")
    assert not logs.exists() or not any(logs.iterdir())

    result = run_cli(*common, "--no-tensorboard", env=without_tensorflow)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "without TFDS" in result.stderr + result.stdout
    (run,) = logs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["tensorboard"] is False and summary["epochs"] == 1
    assert (run / "metrics.csv").is_file()
    assert not [f for _, _, files in os.walk(run) for f in files if "tfevents" in f]

    evaluated = run_cli("evaluate", "--checkpoint", run, env=without_tensorflow)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
