"""The Keras internals of keras_cifar/keras_internals.py exist in the installed Keras, the list is
complete, and the pin in pyproject.toml is the release the list was checked against."""

import importlib
import inspect
import re
from importlib import metadata

import keras
import numpy as np
import pytest

from keras_cifar import keras_internals as ki
from tests.conftest import REPO


def sample_objects():
    """Instances on which Keras sets the instance attributes of the list."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="mse")
    adam = keras.optimizers.Adam(amsgrad=True)
    adam.build(model.trainable_variables)
    return {
        "keras.Model": model,
        "keras.optimizers.Adam": adam,
        "keras.optimizers.Optimizer": adam,
        "keras.random.SeedGenerator": keras.random.SeedGenerator(1),
        "keras.callbacks.CallbackList": keras.callbacks.CallbackList([]),
        "keras.Layer": model,
        "keras.optimizers.SGD": _built(keras.optimizers.SGD(momentum=0.9), model),
        "keras.metrics.Mean": keras.metrics.Mean(),
        "keras.Variable": keras.Variable(np.zeros(2)),
        "keras.layers.BatchNormalization": _built_layer(keras.layers.BatchNormalization(), (None, 4)),
    }


def _built_layer(layer, shape):
    layer.build(shape)
    return layer


def _built(optimizer, model):
    optimizer.build(model.trainable_variables)
    return optimizer


def resolve(name, samples):
    """The object `name` designates in the installed Keras; raises AttributeError/ImportError if gone."""
    parts = name.split(".")
    if parts[:2] == ["keras", "src"]:
        for end in range(len(parts), 1, -1):  # the longest importable module prefix
            try:
                obj = importlib.import_module(".".join(parts[:end]))
            except ImportError:
                continue
            for attribute in parts[end:]:
                obj = getattr(obj, attribute)
            return obj
        raise ImportError(name)
    owner_name, attribute = ".".join(parts[:-1]), parts[-1]
    owner = keras
    for part in parts[1:-1]:
        owner = getattr(owner, part)
    if attribute == "async_safe":  # a protocol: CallbackList reads it from each callback
        source = inspect.getsource(keras.callbacks.CallbackList)
        assert 'getattr(cbk, "async_safe", False)' in source, "CallbackList no longer reads `async_safe`"
        return True
    if hasattr(owner, attribute):
        return getattr(owner, attribute)
    return getattr(samples[owner_name], attribute)  # an instance attribute


def installed_keras():
    """(distribution, version): keras, or keras-nightly (the next release, as the module `keras`)."""
    for distribution in ("keras", "keras-nightly"):
        try:
            return distribution, metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    raise AssertionError("no keras distribution installed")


def minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def test_installed_keras_is_a_checked_release():
    distribution, version = installed_keras()
    assert keras.__version__ == version, (distribution, version, keras.__version__)
    assert minor(version) in {minor(checked) for checked in ki.KERAS_CHECKED}, (
        f"{distribution} {version} is installed; keras_cifar/keras_internals.py was checked against "
        f"{', '.join(ki.KERAS_CHECKED)}. Check every entry, then add the release to KERAS_CHECKED.")
    assert minor(ki.KERAS_REQUIREMENT.split(">=")[1]) == min(minor(checked) for checked in ki.KERAS_CHECKED)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.findall(r'"keras[<>=~!][^"]*"', pyproject) == [f'"{ki.KERAS_REQUIREMENT}"']


@pytest.mark.parametrize("internal", ki.INTERNALS, ids=[i.name for i in ki.INTERNALS])
def test_every_listed_internal_exists(internal):
    installed = minor(keras.__version__)
    if (internal.since and installed < minor(internal.since)) or (internal.until and installed >= minor(internal.until)):
        with pytest.raises((AttributeError, ImportError)):  # not in this release: the code takes the other path
            resolve(internal.name, sample_objects())
    else:
        resolve(internal.name, sample_objects())  # AttributeError or ImportError when Keras dropped it
    assert internal.purpose and internal.public_alternative, "say what it is for and whether Keras has a public way"
    for path in internal.used_by:
        assert (REPO / path).is_file(), path


def _code_files():
    for folder in ("keras_cifar", "bench", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name not in ("keras_internals.py", "test_keras_internals.py"):
                yield path


def _keras_private_names():
    """Private attribute names that Keras defines on the classes (and sample instances) this project touches."""
    names = set()
    objects = list(sample_objects().values()) + [keras.Model, keras.Layer, keras.optimizers.Adam,
                                                 keras.optimizers.SGD, keras.callbacks.Callback,
                                                 keras.callbacks.ProgbarLogger, keras.optimizers.LossScaleOptimizer,
                                                 keras.callbacks.TensorBoard, keras.callbacks.CallbackList,
                                                 keras.random.SeedGenerator, keras.Variable]
    for obj in objects:
        names.update(n for n in dir(obj) if n.startswith("_") and not n.startswith("__"))
        names.update(n for n in getattr(obj, "__dict__", {}) if n.startswith("_") and not n.startswith("__"))
    return names


def test_every_use_of_keras_internals_is_listed():
    """`keras.src` imports and accesses to Keras's private attributes anywhere in the code must be in
    the list, with the file that uses them: the list is where an upgrade starts."""
    listed = {i.name.rsplit(".", 1)[-1]: i for i in ki.INTERNALS}
    listed_src = [i.name for i in ki.INTERNALS if i.name.startswith("keras.src")]
    private = _keras_private_names()
    problems = []
    for path in _code_files():
        relative = path.relative_to(REPO).as_posix()
        text = path.read_text()
        for match in re.finditer(r"keras\.src(?:\.\w+)+", text):
            used = match.group(0)
            if not any(name == used or name.startswith(used + ".") for name in listed_src):
                problems.append(f"{relative}: {used} is not listed")
        # `obj._name` and methods `def _name` (overrides) whose name is private to Keras.
        for attribute in set(re.findall(r"(?:\.|^[ \t]+def )(_[a-z]\w*)\b", text, re.M)) & private:
            if attribute not in listed:
                problems.append(f"{relative}: Keras's private `{attribute}` is not listed")
            elif relative not in listed[attribute].used_by:
                problems.append(f"{relative}: uses `{attribute}` but is not in its used_by")
    assert not problems, "\n".join(problems)


def test_wrappers_do_what_they_say():
    callback_list = keras.callbacks.CallbackList([], add_history=True)
    assert callback_list._async_train  # what Keras does by default (a thread pool per fit)
    ki.disable_async_dispatch(callback_list)
    callback_list.on_train_begin()
    assert callback_list._executor is None
    callback_list.on_train_end()

    mean = keras.metrics.Mean()
    total, count = ki.mean_metric_state(mean)
    total.add_(6.0)
    count.add_(3.0)
    assert float(keras.ops.convert_to_numpy(mean.result())) == 2.0

    inputs = keras.Input((4,))
    block = keras.Sequential([keras.layers.Dense(3, name="inner"), keras.layers.Dropout(0.5, seed=1)])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(block(inputs)))
    names = [layer.name for layer in ki.all_layers(model)]
    assert "inner" in names and "head" in names and model.name not in names
    assert [ki.has_fixed_seed(layer) for layer in ki.all_layers(model) if layer.name.startswith("dropout")] == [True]
    assert not ki.has_fixed_seed(keras.layers.Dropout(0.5))

    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((2, 4), "float32"), np.zeros((2, 2), "float32")
    y_pred = model(x)
    loss = model.compute_loss(x, y, y_pred, training=True)  # public, used in place of `_compute_loss`
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(float(np.mean(keras.ops.convert_to_numpy(y_pred) ** 2)), rel=1e-6)

    weights = model.trainable_variables
    own = {id(v) for v in weights}
    for optimizer, roles in ((keras.optimizers.Adam(), {"momentum", "velocity"}),
                             (keras.optimizers.Adam(amsgrad=True), {"momentum", "velocity", "velocity_hat"}),
                             (keras.optimizers.AdamW(), {"momentum", "velocity"}),
                             (keras.optimizers.SGD(momentum=0.9), {"momentum"}),
                             (keras.optimizers.SGD(), set())):
        optimizer.build(weights)
        state = {id(v) for v in optimizer.variables}
        for weight in weights:
            slots = ki.slot_variables(optimizer, weight)
            assert set(slots) == roles, optimizer
            assert all(tuple(s.shape) == tuple(weight.shape) and id(s) in state and id(s) not in own
                       for s in slots.values())
        assert [id(v) for v in ki.optimizer_variables(optimizer)] == [id(v) for v in weights]
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    assert ki.optimizer_learning_rate(keras.optimizers.SGD(learning_rate=schedule)) is schedule
    constant = ki.optimizer_learning_rate(keras.optimizers.SGD(learning_rate=0.25))
    assert float(keras.ops.convert_to_numpy(constant.value)) == 0.25

    assert ki.unpack_x_y_sample_weight((1, 2)) == (1, 2, None)
    norm = _built_layer(keras.layers.BatchNormalization(axis=1), (None, 3, 5, 5))
    assert ki.is_batch_norm(norm) and ki.batch_norm_reduction_axes(norm) == [0, 2, 3]
    ki.set_batch_norm_moments(norm, lambda inputs, mask: (keras.ops.zeros((3,)), keras.ops.ones((3,))))
    out = norm(np.full((2, 3, 5, 5), 7.0, "float32"), training=True)  # normalised with mean 0, variance 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), 7.0 / np.sqrt(1 + norm.epsilon), rtol=1e-6)
    with keras.device("cpu"):
        assert ki.current_device().type == "cpu"


@pytest.mark.parametrize("internal", ki.TORCH_INTERNALS, ids=[i.name for i in ki.TORCH_INTERNALS])
def test_every_listed_torch_internal_exists(internal):
    import torch

    owner, attribute = internal.name.rsplit(".", 1)
    if attribute == "found_inf":  # a protocol: the fused update reads it from the optimizer
        source = inspect.getsource(torch.optim.Adam.step) + inspect.getsource(torch.optim.SGD.step)
        assert source.count('getattr(self, "found_inf", None)') == 2
    else:
        assert callable(getattr(torch, attribute))
    for path in internal.used_by:
        assert (REPO / path).is_file(), path
