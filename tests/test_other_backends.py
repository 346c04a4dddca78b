"""Checkpoints saved on torch load and predict on Keras's other backends: every model of the zoo,
compiled and with its optimizer built as `fit` saves it, reloaded in a subprocess with
`KERAS_BACKEND=tensorflow` (and `jax` where it is installed), gives torch's logits; training
there is refused with a clear error."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_cifar as kc
from keras_cifar.keras_internals import all_layers
from keras_cifar.train.config import resolve_config
from keras_cifar.train.trainer import compile_model
from tests.conftest import REPO, random_images

BIG = {"googlenet", "resnet18"}

# Runs on the other backend: loads each checkpoint, predicts, and tries to train the first one.
LOAD_AND_PREDICT = r"""
import json, os, sys

imported = []


class ImportOrder:
    def find_spec(self, name, path=None, target=None):
        if name in ("keras", "tensorflow") and name not in imported:
            imported.append(name)


sys.meta_path.insert(0, ImportOrder())
import keras_cifar  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_cifar.errors import UsageError  # noqa: E402

folder = sys.argv[1]
cases = json.load(open(f"{folder}/cases.json"))
result = {"backend": keras.backend.backend(), "imported": imported, "logits": {}}
for name in cases:
    model = keras.saving.load_model(f"{folder}/{name}.keras")
    images = np.load(f"{folder}/{name}_images.npy")
    result["logits"][name] = model.predict(images, batch_size=len(images), verbose=0).tolist()
    if name == "cnn":
        labels = np.arange(len(images)) % 10
        result["evaluate"] = model.evaluate(images, labels, batch_size=len(images), verbose=0, return_dict=True)
        try:
            model.fit(images, labels, epochs=1, verbose=0)
            result["fit"] = "trained"
        except UsageError as error:
            result["fit"] = str(error)
        from keras_cifar.train.config import resolve_config  # noqa: E402
        from keras_cifar.train.trainer import fit  # noqa: E402

        try:
            fit(resolve_config(overrides={"model": "cnn", "data": folder, "log_dir": f"{folder}/logs"}), verbose=0)
            result["run"] = "trained"
        except UsageError as error:
            result["run"] = str(error)
        result["run_folders"] = os.listdir(f"{folder}/logs") if os.path.exists(f"{folder}/logs") else []
json.dump(result, open(f"{folder}/result.json", "w"))
"""


def randomize_batch_norm_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.uniform(-0.3, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Every model of the zoo saved as `fit` saves it (random weights, `weights=None`), with torch's
    logits on a few images (two for the 224x224 models) and its evaluation of the cnn."""
    folder = tmp_path_factory.mktemp("checkpoints")
    expected = {}
    for name in kc.list_models():
        config = resolve_config(overrides={"model": name})
        model = kc.create_model(name)
        randomize_batch_norm_statistics(model)
        compile_model(model, config, steps_per_epoch=10)
        model.optimizer.build(model.trainable_variables)
        images = random_images(2 if name in BIG else 8, seed=len(expected))
        np.save(folder / f"{name}_images.npy", images)
        expected[name] = keras.ops.convert_to_numpy(model.predict(images, batch_size=len(images), verbose=0))
        if name == "cnn":
            labels = np.arange(len(images)) % 10
            expected["evaluate"] = model.evaluate(images, labels, batch_size=len(images), verbose=0,
                                                  return_dict=True)
        model.save(folder / f"{name}.keras")
    (folder / "cases.json").write_text(json.dumps(kc.list_models()))
    return folder, expected


def run_on(backend, folder):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    completed = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(folder)], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((folder / "result.json").read_text())


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_checkpoints_load_and_predict_on_another_backend(backend, checkpoints):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed here (the project's extras do not install it)")
    folder, expected = checkpoints
    result = run_on(backend, folder)
    assert result["backend"] == backend
    assert result["imported"][0] == "keras"  # keras before any tensorflow, as on torch
    assert sorted(result["logits"]) == sorted(kc.list_models())
    for name in kc.list_models():
        logits = np.asarray(result["logits"][name])
        scale = np.abs(expected[name]).max()
        assert scale > 1e-3, name  # a real signal
        np.testing.assert_allclose(logits, expected[name], rtol=0, atol=1e-4 * scale, err_msg=name)
    for metric in ("loss", "accuracy"):
        np.testing.assert_allclose(result["evaluate"][metric], float(expected["evaluate"][metric]), rtol=1e-4)
    assert "torch backend" in result["fit"] and "KERAS_BACKEND=torch" in result["fit"]
    assert "torch backend" in result["run"] and result["run_folders"] == []  # refused before any run folder


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_loss_in_keras_ops_equals_torchs(label_smoothing):
    """What `evaluate` computes on another backend: the loss of torch's kernel, label smoothing included."""
    from keras_cifar.losses import SparseCrossentropy

    loss = SparseCrossentropy(label_smoothing=label_smoothing)
    rng = np.random.default_rng(0)
    logits = keras.ops.convert_to_tensor(rng.normal(size=(16, 10)).astype("float32") * 3)
    labels = keras.ops.convert_to_tensor(rng.integers(0, 10, (16, 1)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss._portable_call(labels, logits)),
                               keras.ops.convert_to_numpy(loss.call(labels, logits)), rtol=1e-6, atol=1e-6)
