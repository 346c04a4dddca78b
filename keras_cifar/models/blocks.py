"""The blocks of the model zoo, exact to their PyTorch originals: Inception, residual, and
max pooling padded as PyTorch pads."""

import keras
from keras import layers, ops

from keras_cifar._backend import PACKAGE
from keras_cifar.models.batch_norm import BatchNormalization
from keras_cifar.models.conv import TorchConv2D, torch_conv
from keras_cifar.models.data_format import channel_axis, standardize_data_format


def apply_all(layer_list, x, training=None):
    for layer in layer_list:
        if isinstance(layer, layers.BatchNormalization):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


def build_all(layer_list, input_shape):
    shape = tuple(input_shape)
    for layer in layer_list:
        layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


def follow_dtype_policy(layer):
    """Gives the sub-layers of a custom layer its dtype policy. Sub-layers made in `__init__` take
    the global policy of the moment, which differs from the saved one when a mixed-precision
    checkpoint is loaded under another global policy (`evaluate`, `predict`)."""
    from keras_cifar.keras_internals import all_layers

    for sublayer in all_layers(layer):
        sublayer.dtype_policy = layer.dtype_policy


class _SymmetricPooling2D(layers.Layer):
    """PyTorch's pooling with `padding` pixels on every side: inside torch's kernel on the torch
    backend (channels-first), explicit padding then Keras's pooling elsewhere."""

    keras_pooling = None  # the Keras layer of the same pooling without padding
    pad_value = 0.0

    def __init__(self, pool_size=3, strides=2, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size
        self.strides = strides
        self.padding = padding
        self.data_format = standardize_data_format(data_format)
        self._pool = self.keras_pooling(pool_size, strides, padding="valid", data_format=self.data_format)

    def build(self, input_shape):
        follow_dtype_policy(self)
        self._pool.build(self._padded_shape(input_shape))

    def _padded_shape(self, input_shape):
        shape = list(input_shape)
        for axis in self._spatial_axes():
            if shape[axis] is not None:
                shape[axis] += 2 * self.padding
        return tuple(shape)

    def _spatial_axes(self):
        return (2, 3) if self.data_format == "channels_first" else (1, 2)

    def torch_pooling(self, x):
        raise NotImplementedError

    def call(self, x):
        if keras.backend.backend() == "torch" and self.data_format == "channels_first":
            return self.torch_pooling(x)
        if self.padding:
            pad = [[0, 0]] * 4
            for axis in self._spatial_axes():
                pad[axis] = [self.padding, self.padding]
            x = ops.pad(x, pad, constant_values=self.pad_value)
        return self._pool(x)

    def compute_output_shape(self, input_shape):
        return self._pool.compute_output_shape(self._padded_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            pool_size=self.pool_size, strides=self.strides, padding=self.padding, data_format=self.data_format
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SymmetricMaxPooling2D(_SymmetricPooling2D):
    """`nn.MaxPool2d(pool_size, strides, padding)`: max pooling with `padding`
    pixels of -inf on every side, as PyTorch pads."""

    keras_pooling = layers.MaxPooling2D
    pad_value = float("-inf")

    def torch_pooling(self, x):
        import torch.nn.functional as F

        return F.max_pool2d(x, self.pool_size, self.strides, self.padding)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SymmetricAveragePooling2D(_SymmetricPooling2D):
    """`nn.AvgPool2d(pool_size, strides, padding)`: average pooling over `padding` pixels of
    zeros on every side, the zeros counted (`count_include_pad`), as PyTorch does."""

    keras_pooling = layers.AveragePooling2D

    def torch_pooling(self, x):
        import torch.nn.functional as F

        return F.avg_pool2d(x, self.pool_size, self.strides, self.padding, count_include_pad=True)


@keras.saving.register_keras_serializable(package=PACKAGE)
class InceptionBlock(layers.Layer):
    """Inception block: parallel 1x1, 3x3, 5x5 and pooling branches, concatenated.

    One layer serves both originals:
    - GoogLeNet (SPEC section 4), the defaults: every convolution is conv
      (no bias) -> batch norm -> ReLU; the pooling branch is a 3x3 max pool;
      branches are concatenated as [1x1, 3x3, 5x5, pool].
    - The lite block of `inception_lite` (SPEC section 2): `pool="avg"`,
      `double_3x3=True`, `batch_norm=False`, `activation=None`,
      `branch_order=("pool", "1x1", "5x5", "3x3")`; convolutions carry biases.

    Args:
        filters_1x1: filters of the 1x1 branch.
        filters_3x3_reduce: filters of the 1x1 convolution before the 3x3.
        filters_3x3: filters of the 3x3 convolution(s).
        filters_5x5_reduce: filters of the 1x1 convolution before the 5x5.
        filters_5x5: filters of the 5x5 convolution.
        filters_pool_proj: filters of the 1x1 convolution after the pooling.
        pool: `"max"` or `"avg"`: the 3x3, stride-1 pooling of the pool branch.
            `"avg"` counts the zero padding, as PyTorch's `avg_pool2d` does.
        double_3x3: if True the 3x3 branch has two 3x3 convolutions.
        batch_norm: if True each convolution is followed by batch norm and has no bias.
        activation: activation after each convolution (after batch norm), or None.
        bn_epsilon: batch-norm epsilon.
        branch_order: order of concatenation of "1x1", "3x3", "5x5", "pool".
        data_format: `"channels_last"` or `"channels_first"`.
    """

    BRANCHES = ("1x1", "3x3", "5x5", "pool")

    def __init__(
        self,
        filters_1x1=64,
        filters_3x3_reduce=96,
        filters_3x3=128,
        filters_5x5_reduce=16,
        filters_5x5=32,
        filters_pool_proj=32,
        pool="max",
        double_3x3=False,
        batch_norm=True,
        activation="relu",
        bn_epsilon=1e-3,
        branch_order=("1x1", "3x3", "5x5", "pool"),
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for arg_name, value in [
            ("filters_1x1", filters_1x1),
            ("filters_3x3_reduce", filters_3x3_reduce),
            ("filters_3x3", filters_3x3),
            ("filters_5x5_reduce", filters_5x5_reduce),
            ("filters_5x5", filters_5x5),
            ("filters_pool_proj", filters_pool_proj),
        ]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg_name}` must be a positive integer. Received: {arg_name}={value!r}")
        if pool not in ("max", "avg"):
            raise ValueError(f"`pool` must be 'max' or 'avg'. Received: pool={pool!r}")
        if sorted(branch_order) != sorted(self.BRANCHES):
            raise ValueError(
                f"`branch_order` must order the branches {self.BRANCHES}. Received: branch_order={branch_order!r}"
            )
        self.filters_1x1 = filters_1x1
        self.filters_3x3_reduce = filters_3x3_reduce
        self.filters_3x3 = filters_3x3
        self.filters_5x5_reduce = filters_5x5_reduce
        self.filters_5x5 = filters_5x5
        self.filters_pool_proj = filters_pool_proj
        self.pool = pool
        self.double_3x3 = double_3x3
        self.batch_norm = batch_norm
        self.activation = keras.activations.serialize(keras.activations.get(activation)) if activation else None
        self.bn_epsilon = bn_epsilon
        self.branch_order = tuple(branch_order)
        self.data_format = standardize_data_format(data_format)

        units_3x3 = [("b3x3_reduce", filters_3x3_reduce, 1), ("b3x3", filters_3x3, 3)]
        if double_3x3:
            units_3x3.append(("b3x3_2", filters_3x3, 3))
        pooling = SymmetricMaxPooling2D if pool == "max" else SymmetricAveragePooling2D
        pool_layers = [pooling(3, 1, 1, data_format=self.data_format)]
        self._branches = {
            "1x1": self._conv_unit("b1x1", filters_1x1, 1),
            "3x3": [layer for unit in units_3x3 for layer in self._conv_unit(*unit)],
            "5x5": self._conv_unit("b5x5_reduce", filters_5x5_reduce, 1) + self._conv_unit("b5x5", filters_5x5, 5),
            "pool": pool_layers + self._conv_unit("pool_proj", filters_pool_proj, 1),
        }
        self._concat = layers.Concatenate(axis=channel_axis(self.data_format))

    def _conv_unit(self, key, filters, kernel_size):
        name = f"{self.name}_{key}"
        if not self.batch_norm:
            unit = torch_conv(filters, kernel_size, padding=kernel_size // 2, data_format=self.data_format, name=name)
        else:
            unit = torch_conv(
                filters,
                kernel_size,
                padding=kernel_size // 2,
                use_bias=False,
                data_format=self.data_format,
                name=f"{name}_conv",
            )
            unit.append(
                BatchNormalization(
                    axis=channel_axis(self.data_format), epsilon=self.bn_epsilon, momentum=0.9, name=f"{name}_bn"
                )
            )
        if self.activation:
            unit.append(layers.Activation(self.activation))
        return unit

    @property
    def output_channels(self):
        return self.filters_1x1 + self.filters_3x3 + self.filters_5x5 + self.filters_pool_proj

    def build(self, input_shape):
        follow_dtype_policy(self)
        shapes = [build_all(self._branches[key], input_shape) for key in self.branch_order]
        self._concat.build(shapes)

    def call(self, x, training=None):
        return self._concat([apply_all(self._branches[key], x, training) for key in self.branch_order])

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[channel_axis(self.data_format)] = self.output_channels
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters_1x1=self.filters_1x1,
            filters_3x3_reduce=self.filters_3x3_reduce,
            filters_3x3=self.filters_3x3,
            filters_5x5_reduce=self.filters_5x5_reduce,
            filters_5x5=self.filters_5x5,
            filters_pool_proj=self.filters_pool_proj,
            pool=self.pool,
            double_3x3=self.double_3x3,
            batch_norm=self.batch_norm,
            activation=self.activation,
            bn_epsilon=self.bn_epsilon,
            branch_order=list(self.branch_order),
            data_format=self.data_format,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """Basic residual block: `relu(shortcut(x) + f(x))`, f = two 3x3 convolutions.

    With `batch_norm=False` (the block of `resnet_lite`, SPEC section 3):
    `f(x) = conv(relu(conv(x)))`, convolutions with biases. With
    `batch_norm=True` it is torchvision's `BasicBlock`: `f(x) =
    bn(conv(relu(bn(conv(x)))))` without biases, and, when the stride is above
    1 or the channel count changes, a 1x1 convolution and batch norm as the
    shortcut (`downsample`).

    Args:
        filters: output channels.
        strides: stride of the first convolution and of the shortcut.
        batch_norm: torchvision `BasicBlock` (True) or the plain block (False).
        bn_epsilon: batch-norm epsilon.
        data_format: `"channels_last"` or `"channels_first"`.
    """

    def __init__(self, filters, strides=1, batch_norm=False, bn_epsilon=1e-5, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"`filters` must be a positive integer. Received: filters={filters!r}")
        if strides not in (1, 2):
            raise ValueError(f"`strides` must be 1 or 2. Received: strides={strides!r}")
        self.filters = filters
        self.strides = strides
        self.batch_norm = batch_norm
        self.bn_epsilon = bn_epsilon
        self.data_format = standardize_data_format(data_format)
        axis = channel_axis(self.data_format)
        use_bias = not batch_norm

        def bn(suffix):
            return [BatchNormalization(axis=axis, epsilon=bn_epsilon, momentum=0.9, name=f"{self.name}_{suffix}")]

        conv1 = torch_conv(
            filters, 3, strides=strides, padding=1, use_bias=use_bias, data_format=self.data_format,
            name=f"{self.name}_conv1",
        )
        conv2 = torch_conv(filters, 3, padding=1, use_bias=use_bias, data_format=self.data_format,
                           name=f"{self.name}_conv2")
        self._residual = (
            conv1 + (bn("bn1") if batch_norm else []) + [layers.ReLU()] + conv2 + (bn("bn2") if batch_norm else [])
        )
        self._shortcut = []
        self._add = layers.Add()
        self._relu = layers.ReLU()

    def build(self, input_shape):
        in_channels = input_shape[channel_axis(self.data_format)]
        if self.strides != 1 or in_channels != self.filters:
            if not self.batch_norm:
                raise ValueError(
                    "A ResidualBlock without batch norm keeps its input shape: it needs strides=1 and "
                    f"filters equal to the input channels. Received: strides={self.strides}, "
                    f"filters={self.filters}, input channels={in_channels}"
                )
            self._shortcut = [
                TorchConv2D(
                    self.filters, 1, strides=self.strides, use_bias=False, data_format=self.data_format,
                    name=f"{self.name}_downsample_0",
                ),
                BatchNormalization(
                    axis=channel_axis(self.data_format), epsilon=self.bn_epsilon, momentum=0.9,
                    name=f"{self.name}_downsample_1",
                ),
            ]
        follow_dtype_policy(self)
        out_shape = build_all(self._residual, input_shape)
        build_all(self._shortcut, input_shape)
        self._add.build([out_shape, out_shape])
        self._relu.build(out_shape)

    def call(self, x, training=None):
        shortcut = apply_all(self._shortcut, x, training)
        return self._relu(self._add([shortcut, apply_all(self._residual, x, training)]))

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[channel_axis(self.data_format)] = self.filters
        for axis in (2, 3) if self.data_format == "channels_first" else (1, 2):
            if shape[axis] is not None:
                shape[axis] = (shape[axis] - 1) // self.strides + 1
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            strides=self.strides,
            batch_norm=self.batch_norm,
            bn_epsilon=self.bn_epsilon,
            data_format=self.data_format,
        )
        return config
