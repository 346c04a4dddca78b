"""One shared routine for every layer and model: config round-trip, `.keras`
save and reload, and identical outputs (as keras-hub's TestCase does)."""

import keras
import numpy as np


def to_numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


def assert_config_round_trip(obj):
    config = obj.get_config()
    clone = obj.__class__.from_config(config)
    assert clone.get_config() == config
    return clone


def assert_saves_and_reloads(model, inputs, tmp_path, atol=1e-6):
    """Saves `model` to .keras, reloads it, and compares inference outputs."""
    expected = to_numpy(model(inputs, training=False))
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is type(model)
    np.testing.assert_allclose(to_numpy(reloaded(inputs, training=False)), expected, atol=atol, rtol=0)
    return reloaded


def run_layer_test(layer_cls, init_kwargs, input_shape, expected_output_shape, tmp_path,
                   expected_trainable_weights=None):
    """Builds `layer_cls(**init_kwargs)` in a functional model and checks shape,
    weight count, config round-trip and `.keras` saving."""
    layer = layer_cls(**init_kwargs)
    inputs = keras.Input(shape=input_shape[1:])
    model = keras.Model(inputs, layer(inputs))
    assert tuple(model.output_shape[1:]) == tuple(expected_output_shape[1:])
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(expected_output_shape)
    if expected_trainable_weights is not None:
        assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected_trainable_weights
    assert_config_round_trip(layer)
    data = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    output = to_numpy(model(data))
    assert output.shape == tuple(expected_output_shape)
    assert np.isfinite(output).all()
    assert_saves_and_reloads(model, data, tmp_path)
    return layer
