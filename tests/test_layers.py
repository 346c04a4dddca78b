"""Custom layers: shapes, weights, config round-trips and saving."""

import keras
import numpy as np
import pytest

from keras_cifar import InceptionBlock, ResidualBlock
from keras_cifar.keras_internals import all_layers
from keras_cifar.models.inception_lite import LITE_BLOCK
from keras_cifar.models.batch_norm import TorchBatchNorm
from keras_cifar.models.blocks import SymmetricMaxPooling2D
from tests.helpers import run_layer_test, to_numpy


@pytest.mark.parametrize("data_format,shape,out", [
    ("channels_last", (2, 14, 14, 64), (2, 14, 14, 88)),
    ("channels_first", (2, 64, 14, 14), (2, 88, 14, 14)),
])
def test_inception_lite_block(data_format, shape, out, tmp_path):
    # pool 24*(64+1), 1x1 16*65, 5x5 16*65 + 24*(16*25+1), 3x3 16*65 + 24*(16*9+1) + 24*(24*9+1)
    run_layer_test(InceptionBlock, dict(LITE_BLOCK, data_format=data_format), shape, out, tmp_path,
                   expected_trainable_weights=22_992)


def test_googlenet_inception_block(tmp_path):
    # inception(192, 64, 96, 128, 16, 32, 32) of GoogLeNet: conv weights + batch-norm gamma and beta
    layer = run_layer_test(InceptionBlock, dict(data_format="channels_last"), (2, 8, 8, 192), (2, 8, 8, 256),
                           tmp_path)
    convs = 192 * 64 + 192 * 96 + 96 * 9 * 128 + 192 * 16 + 16 * 25 * 32 + 192 * 32
    batch_norm = 2 * (64 + 96 + 128 + 16 + 32 + 32)
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == convs + batch_norm
    assert len(layer.non_trainable_weights) == 2 * 6  # moving mean and variance of 6 batch norms


def test_inception_block_rejects_bad_arguments():
    with pytest.raises(ValueError, match="filters_1x1"):
        InceptionBlock(filters_1x1=0)
    with pytest.raises(ValueError, match="pool"):
        InceptionBlock(pool="min")
    with pytest.raises(ValueError, match="branch_order"):
        InceptionBlock(branch_order=("1x1", "3x3"))


@pytest.mark.parametrize("data_format,shape", [("channels_last", (2, 6, 6, 20)), ("channels_first", (2, 20, 6, 6))])
def test_plain_residual_block(data_format, shape, tmp_path):
    run_layer_test(ResidualBlock, dict(filters=20, data_format=data_format), shape, shape, tmp_path,
                   expected_trainable_weights=2 * (20 * 20 * 9 + 20))


def test_basic_block_with_downsample(tmp_path):
    layer = run_layer_test(ResidualBlock, dict(filters=128, strides=2, batch_norm=True, data_format="channels_last"),
                           (2, 16, 16, 64), (2, 8, 8, 128), tmp_path)
    weights = 64 * 128 * 9 + 128 * 128 * 9 + 64 * 128 + 3 * 2 * 128
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == weights


def test_plain_residual_block_needs_matching_shapes(tmp_path):
    with pytest.raises(ValueError, match="keeps its input shape"):
        run_layer_test(ResidualBlock, dict(filters=8), (1, 6, 6, 4), (1, 6, 6, 8), tmp_path)
    with pytest.raises(ValueError, match="filters"):
        ResidualBlock(filters=-1)


def test_symmetric_max_pooling_pads_like_pytorch(tmp_path):
    import torch

    layer = run_layer_test(SymmetricMaxPooling2D, dict(pool_size=3, strides=2, padding=1,
                                                       data_format="channels_first"),
                           (2, 3, 8, 8), (2, 3, 4, 4), tmp_path)
    x = torch.randn(2, 3, 8, 8) - 3  # negative values: padding must behave as -inf
    expected = torch.nn.functional.max_pool2d(x, 3, 2, 1)
    torch.testing.assert_close(layer(x), expected)


def test_blocks_saved_with_keras_batch_norm_load_into_the_fused_one(tmp_path, monkeypatch):
    """A checkpoint saved when the GoogLeNet and ResNet18 blocks' batch norms were Keras's own
    loads into today's fused ones, weights unchanged: Keras finds a block's sub-layer weights by
    class name, and the fused layer keeps Keras's."""
    from keras_cifar.models import blocks as blocks_module

    def blocks():
        inputs = keras.Input((16, 8, 8))
        x = InceptionBlock(8, 8, 8, 4, 8, 8, data_format="channels_first")(inputs)
        return keras.Model(inputs, ResidualBlock(16, strides=2, batch_norm=True, data_format="channels_first")(x))

    with monkeypatch.context() as patch:
        patch.setattr(blocks_module, "BatchNormalization", keras.layers.BatchNormalization)
        old = blocks()
    rng = np.random.default_rng(0)
    for layer in all_layers(old):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not isinstance(layer, TorchBatchNorm)
            layer.moving_mean.assign(rng.uniform(-0.5, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    old.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    batch_norms = [layer for layer in all_layers(loaded) if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 9 and all(isinstance(layer, TorchBatchNorm) for layer in batch_norms)
    for saved, reloaded in zip(old.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(saved, reloaded)
    x = rng.normal(size=(2, 16, 8, 8)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), to_numpy(old(x, training=False)),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("block,args", [
    (SymmetricMaxPooling2D, dict(pool_size=2, strides=1, padding=0, data_format="channels_first")),
    (InceptionBlock, dict(LITE_BLOCK, data_format="channels_first", bn_epsilon=1e-4)),
    (InceptionBlock, dict(filters_1x1=4, filters_3x3_reduce=4, filters_3x3=4, filters_5x5_reduce=2, filters_5x5=4,
                          filters_pool_proj=4, activation=None)),
    (ResidualBlock, dict(filters=8, strides=2, batch_norm=True, bn_epsilon=1e-3, data_format="channels_last")),
])
def test_block_configs_mirror_their_constructors(block, args):
    """get_config holds exactly the constructor's arguments, and a block rebuilt from it is the same block."""
    import inspect

    layer = block(**args, name="block")
    config = layer.get_config()
    own = set(config) - set(keras.layers.Layer(name="block").get_config())
    arguments = set(inspect.signature(block.__init__).parameters) - {"self", "kwargs"}
    assert own == arguments
    for name, value in args.items():
        assert config[name] == (list(value) if isinstance(value, tuple) else value), name
    assert block.from_config(config).get_config() == config
