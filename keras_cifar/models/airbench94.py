"""`airbench94`, `airbench94_muon` and `airbench95`: the network of KellerJordan's airbench94 (94% on CIFAR-10 in seconds on a GPU),
written as a Keras functional model of this zoo.

A frozen 2x2 patch-whitening convolution initialised from the training data (its bias trains
for the first epochs only), then three conv groups (conv, max-pool, batch norm, GELU, conv, batch
norm, GELU) of 64, 256 and 256 channels, a 3x3 max-pool, a bias-free linear head and a fixed
1/9 scale on the logits. Batch norms learn only their bias (no scale), with momentum 0.6 and
epsilon 1e-12; the 3x3 convolutions start as identity on their first input channels (Dirac).
`whitening="learned"` (an ablation) trains the first 2x2 convolution like the others instead.
`head="muon"` is airbench94_muon's head: the same bias-free linear layer with its initial weights
scaled to unit standard deviation and the logits divided by the last block's width (256).
`whiten_bias_init="uniform"` is airbench94_muon's whitening bias: PyTorch's `nn.Conv2d` default,
U(-1/sqrt(12), 1/sqrt(12)), where airbench94 starts it at zero.

The rest of the recipe is run settings (configs/airbench94.yaml): Nesterov SGD at batch 1024 with a
triangular schedule, batch-norm biases at 64x the learning rate, lookahead, label smoothing,
alternating flips with 2-pixel reflected translations, and test-time augmentation.
configs/airbench94_muon.yaml is airbench94_muon's: the muon head, the uniform whitening bias, Muon for
the 3x3 kernels (`optimizer: muon`), batch 2000, 8 epochs.

`airbench95` is airbench95's network (legacy/airbench95.py: 95.01% in 10.4 s on an A100): the same
layers, wider (128, 384 and 384 channels), 3.9x airbench94's training FLOPs over its 15 epochs
(configs/airbench95.yaml).
"""

import functools

import keras
import numpy as np
from keras import layers, ops

from keras_cifar import keras_internals
from keras_cifar._backend import PACKAGE
from keras_cifar.models.batch_norm import TorchBatchNorm
from keras_cifar.models.classifier import ImageClassifier
from keras_cifar.models.conv import KERNEL_MEMORY_ORDER, TorchConv2D, channels_last_conv2d, torch_conv2d
from keras_cifar.models.data_format import channel_axis
from keras_cifar.models.init import initialize
from keras_cifar.models.preprocessing import (LeanRescaling, RAW_IMAGE_SHAPE, preprocess, raw_image_input,
                                             validate_common)
from keras_cifar.models.registry import register_model

WHITENINGS = ("data", "learned")
HEADS = ("airbench94", "muon")
WHITEN_BIAS_INITS = ("zeros", "uniform")
AIRBENCH_SETTINGS = ("whitening", "head", "whiten_bias_init")  # the model-specific run settings of the airbench models
WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues before scaling by 1/sqrt


@keras.saving.register_keras_serializable(package=PACKAGE)
class GELU(layers.Layer):
    """Exact GELU (erf), as `torch.nn.GELU()` (`keras.ops.gelu` defaults to the tanh approximation)."""

    def call(self, x):
        return keras.activations.gelu(x, approximate=False)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchWhitening(layers.Layer):
    """A `kernel_size` convolution whose kernel is frozen (set from the data by
    `init_whitening`) and whose bias trains for the first `bias_epochs` epochs only (the
    optimizer reads `bias_epochs`). Output channels: 2 x 3 x kernel_size^2, the whitened patch
    and its negation."""

    def __init__(self, kernel_size=2, bias_epochs=3, data_format="channels_first", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"`kernel_size` must be a positive integer. Received: kernel_size={kernel_size!r}")
        if not isinstance(bias_epochs, int) or bias_epochs < 0:
            raise ValueError(f"`bias_epochs` must be an integer >= 0. Received: bias_epochs={bias_epochs!r}")
        self.kernel_size = kernel_size
        self.bias_epochs = bias_epochs
        self.data_format = data_format
        self.filters = 2 * 3 * kernel_size ** 2

    def build(self, input_shape):
        channels = input_shape[channel_axis(self.data_format)]
        size = self.kernel_size
        self.kernel = self.add_weight(shape=(size, size, channels, self.filters), initializer="glorot_uniform",
                                      trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        if keras.backend.backend() == "torch":
            keras_internals.lay_out(self.kernel, KERNEL_MEMORY_ORDER)  # as TorchConv2D's: read as a view

    def call(self, x):
        if self.data_format == "channels_first":
            if keras.backend.backend() == "torch":
                return torch_conv2d(x, self.kernel, self.bias)
            return channels_last_conv2d(x, self.kernel, self.bias)
        y = ops.conv(x, self.kernel, strides=1, padding="valid", data_format=self.data_format)
        shape = (1, -1, 1, 1) if self.data_format == "channels_first" else (1, 1, 1, -1)
        return y + ops.reshape(self.bias, shape)

    def compute_output_shape(self, input_shape):
        size = self.kernel_size
        if self.data_format == "channels_first":
            batch, _, height, width = input_shape
            return (batch, self.filters, height - size + 1, width - size + 1)
        batch, height, width, _ = input_shape
        return (batch, height - size + 1, width - size + 1, self.filters)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "bias_epochs": self.bias_epochs,
                "data_format": self.data_format}


def whitening_kernel(images_nchw, kernel_size, eps=WHITEN_EPS):
    """The kernel (Keras layout: kh, kw, in, out) that whitens `kernel_size` patches of
    `images_nchw` (float, already preprocessed): eigenvectors of the patch covariance scaled by
    1/sqrt(eigenvalue + eps), largest first, then their negations."""
    import torch

    x = torch.as_tensor(images_nchw, dtype=torch.float32)
    channels = x.shape[1]
    patches = x.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1).transpose(1, 3)
    patches = patches.reshape(-1, channels * kernel_size * kernel_size).double()
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
    torch_kernel = torch.cat([scaled, -scaled]).reshape(-1, channels, kernel_size, kernel_size)
    return torch_kernel.permute(2, 3, 1, 0).float().numpy()  # (out, in, kh, kw) -> (kh, kw, in, out)


def init_whitening(model, images, count=5000):
    """Sets every PatchWhitening kernel of `model` from `count` of `images` (raw uint8 NHWC, as the
    model takes them; evenly spaced, so that a split sorted by class gives every class), passed
    through the layers before it."""
    images = np.asarray(images)[::max(len(images) // count, 1)][:count]
    for layer in model.layers:
        if isinstance(layer, PatchWhitening):
            features = keras.Model(model.inputs, layer.input)
            x = ops.cast(features(ops.convert_to_tensor(images), training=False), "float32")
            if layer.data_format == "channels_last":
                x = ops.transpose(x, (0, 3, 1, 2))
            x = ops.convert_to_numpy(x)
            layer.kernel.assign(whitening_kernel(x, layer.kernel_size))


def dirac_init(conv):
    """`torch.nn.init.dirac_(w[:in_channels])`: the first `in` filters pass their input channel
    through (the rest keep their initialisation)."""
    kernel = ops.convert_to_numpy(conv.kernel).copy()
    size, _, channels_in, channels_out = kernel.shape
    for channel in range(min(channels_in, channels_out)):
        kernel[:, :, :, channel] = 0.0
        kernel[size // 2, size // 2, channel, channel] = 1.0
    conv.kernel.assign(kernel)


def apply_conv_group(x, filters, data_format, bn_momentum, name):
    axis = channel_axis(data_format)
    x = TorchConv2D(filters, 3, padding="same", use_bias=False, data_format=data_format, name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, data_format=data_format, name=f"{name}_pool")(x)
    x = TorchBatchNorm(axis=axis, momentum=bn_momentum, epsilon=1e-12, scale=False,
                                  name=f"{name}_norm1")(x)
    x = GELU(name=f"{name}_gelu1")(x)
    x = TorchConv2D(filters, 3, padding="same", use_bias=False, data_format=data_format, name=f"{name}_conv2")(x)
    x = TorchBatchNorm(axis=axis, momentum=bn_momentum, epsilon=1e-12, scale=False,
                                  name=f"{name}_norm2")(x)
    return GELU(name=f"{name}_gelu2")(x)


@register_model(
    "airbench94",
    input_size="32x32",
    experiment="airbench94 (KellerJordan/cifar10-airbench), not one of the originals",
    description="airbench94's network: patch whitening, 3 conv groups (64-256-256), 94% recipe",
    settings=AIRBENCH_SETTINGS,
    data_init=init_whitening,
)
def build_airbench94(num_classes=10, data_format="channels_first", input_shape=RAW_IMAGE_SHAPE, init="torch",
               widths=(64, 256, 256), bn_momentum=0.6, whiten_bias_epochs=3, logit_scale=None, whitening="data",
               head="airbench94", whiten_bias_init="zeros", name="airbench94"):
    """`whitening`: "data" (airbench's frozen PatchWhitening, set by `init_whitening`) or "learned"
    (the same 2x2 convolution trained like the others, from airbench's initialisation). `head`:
    "airbench94" (logits x 1/9) or "muon" (unit-std initial weights, logits / the last width).
    `logit_scale`, where given, replaces the head's scale. `whiten_bias_init` (with `init="torch"`):
    "zeros" (airbench94) or "uniform" (airbench94_muon: U(+-1/sqrt(fan_in)), `nn.Conv2d`'s default)."""
    validate_common(data_format, input_shape)
    if whitening not in WHITENINGS:
        raise ValueError(f"`whitening` must be one of {WHITENINGS}. Received: whitening={whitening!r}")
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS}. Received: head={head!r}")
    if whiten_bias_init not in WHITEN_BIAS_INITS:
        raise ValueError(f"`whiten_bias_init` must be one of {WHITEN_BIAS_INITS}. "
                         f"Received: whiten_bias_init={whiten_bias_init!r}")
    if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"`widths` must be 3 positive integers. Received: widths={widths!r}")
    if not 0 <= bn_momentum < 1:
        raise ValueError(f"`bn_momentum` must be in [0, 1). Received: bn_momentum={bn_momentum!r}")
    if logit_scale is None:
        logit_scale = 1 / 9 if head == "airbench94" else 1 / widths[-1]
    inputs = raw_image_input(input_shape)
    x = preprocess(inputs, "standardize", data_format)
    if whitening == "data":
        x = PatchWhitening(2, bias_epochs=whiten_bias_epochs, data_format=data_format, name="whiten")(x)
    else:
        x = TorchConv2D(2 * 3 * 2 ** 2, 2, data_format=data_format, name="whiten")(x)
    x = GELU(name="whiten_gelu")(x)
    for index, filters in enumerate(widths, start=1):
        x = apply_conv_group(x, filters, data_format, bn_momentum, name=f"block{index}")
    x = layers.MaxPooling2D(3, data_format=data_format, name="pool")(x)
    x = layers.Flatten(data_format="channels_last", name="flatten")(x)
    # The head computes in float32 under mixed precision: logits and loss keep full precision.
    x = layers.Dense(num_classes, use_bias=False, dtype="float32", name="fc")(x)
    outputs = LeanRescaling(logit_scale, dtype="float32", name="logit_scale")(x)
    model = initialize(ImageClassifier(inputs, outputs, name=name), init)
    if init == "torch":
        for layer in model.layers:
            if isinstance(layer, layers.Conv2D):
                dirac_init(layer)
        if head == "muon":  # airbench94_muon: `w *= 1 / w.std()` after PyTorch's init
            fc = model.get_layer("fc")
            kernel = ops.convert_to_numpy(fc.kernel)
            fc.kernel.assign(kernel / kernel.std(ddof=1))
        whiten = model.get_layer("whiten")
        if whiten_bias_init == "uniform":  # airbench94_muon's whiten is a plain nn.Conv2d
            bound = 1 / np.sqrt(np.prod(whiten.kernel.shape[:-1]))
            whiten.bias.assign(keras.random.uniform(tuple(whiten.bias.shape), -bound, bound))
        else:  # airbench94's Conv zeroes its bias
            whiten.bias.assign(ops.zeros_like(whiten.bias))
    return model


# airbench94_muon: airbench94's network with the muon head and nn.Conv2d's whitening bias.
register_model(
    "airbench94_muon",
    input_size="32x32",
    experiment="airbench94_muon (KellerJordan/cifar10-airbench), not one of the originals",
    description="airbench94's network with airbench94_muon's head, for the Muon recipe",
    settings=AIRBENCH_SETTINGS,
    data_init=init_whitening,
)(functools.partial(build_airbench94, head="muon", whiten_bias_init="uniform", name="airbench94_muon"))

# airbench95: airbench94's network at other widths; every other argument as `build_airbench94`'s.
register_model(
    "airbench95",
    input_size="32x32",
    experiment="airbench95 (KellerJordan/cifar10-airbench), not one of the originals",
    description="airbench95's network: airbench94 widened to 128-384-384, 95% recipe",
    settings=AIRBENCH_SETTINGS,
    data_init=init_whitening,
)(functools.partial(build_airbench94, widths=(128, 384, 384), name="airbench95"))
