"""TensorBoard output of a run, read back with TensorBoard's own event reader and
compared with the epoch logs that Keras's History recorded."""

import os

import numpy as np
import pytest

from keras_cifar.data import CIFAR10_CLASSES
from keras_cifar.train.config import resolve_config
from keras_cifar.train.trainer import fit

tf = pytest.importorskip("tensorflow")
EventAccumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator").EventAccumulator
plugin_data_pb2 = pytest.importorskip("tensorboard.plugins.hparams.plugin_data_pb2")


def read_scalars(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    values = {}
    for tag in accumulator.Tags()["tensors"]:
        values[tag] = [(event.step, tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]
    return values, accumulator


@pytest.fixture(scope="module")
def run(real_folder_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    config = resolve_config(None, dict(model="cnn", epochs=3, batch_size=30, data=str(real_folder_small),
                                       data_dir=str(root / "tfds"), log_dir=str(root / "logs"), seed=1))
    result = fit(config, verbose=0, echo=lambda message: None)
    return result


def test_keras_tensorboard_scalars_equal_history(run):
    keras_history = run.history  # the epoch logs Keras handed to its History callback
    assert [row["epoch"] for row in keras_history] == [1, 2, 3]
    train, _ = read_scalars(os.path.join(run.run_path, "train"))
    validation, _ = read_scalars(os.path.join(run.run_path, "validation"))
    for tag, folder_values, key in (("epoch_loss", train, "loss"), ("epoch_accuracy", train, "accuracy"),
                                    ("epoch_learning_rate", train, "learning_rate"),
                                    ("epoch_loss", validation, "val_loss"),
                                    ("epoch_accuracy", validation, "val_accuracy")):
        steps = [step for step, _ in folder_values[tag]]
        values = [float(value) for _, value in folder_values[tag]]
        assert steps == [0, 1, 2], tag
        assert values == pytest.approx([row[key] for row in keras_history], rel=1e-6), (tag, key)


def test_original_tags_side_by_side(run):
    scalars, _ = read_scalars(run.run_path)
    steps_per_epoch = 10  # 300 images in batches of 30
    history = run.history
    assert [float(v) for _, v in scalars["loss/epoch"]] == pytest.approx(
        [row["loss"] * steps_per_epoch for row in history], rel=1e-6)
    assert [float(v) for _, v in scalars["accuracy/epoch"]] == pytest.approx(
        [100 * row["accuracy"] for row in history], rel=1e-6)
    assert [float(v) for _, v in scalars["Test_accuracy/epoch"]] == pytest.approx(
        [100 * row["val_accuracy"] for row in history], rel=1e-6)
    assert [step for step, _ in scalars["Test_accuracy/epoch"]] == [0, 1, 2]


def test_final_confusion_matrix_per_class_and_hparams(run):
    scalars, accumulator = read_scalars(run.run_path)
    summary = run.summary
    image = scalars["confusion_matrix"][0][1]  # [width, height, encoded PNG]
    assert image[2][:8] == b"\x89PNG\r\n\x1a\n"
    assert tf.io.decode_png(image[2]).shape[:2] == (600, 700)
    per_class = {name: float(scalars[f"per_class_accuracy/{name}"][0][1]) for name in CIFAR10_CLASSES}
    assert per_class == pytest.approx({k: 100 * v for k, v in summary["per_class_accuracy"].items()}, rel=1e-6)
    assert np.mean(list(per_class.values())) == pytest.approx(100 * summary["final_accuracy"], rel=1e-6)  # balanced
    assert float(scalars["hparams/final_accuracy"][0][1]) == pytest.approx(summary["final_accuracy"], rel=1e-6)
    content = accumulator.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model"].string_value == "cnn"
    assert hparams["batch_size"].number_value == 30
    assert hparams["augment"].bool_value is False
    assert os.path.isfile(os.path.join(run.run_path, "confusion_matrix.png"))
