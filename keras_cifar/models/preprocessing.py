"""In-model preprocessing: every model takes raw RGB images (0..255, HWC)."""

import keras
from keras import layers

from keras_cifar._backend import PACKAGE
from keras_cifar.models.data_format import standardize_data_format

RAW_IMAGE_SHAPE = (32, 32, 3)

# How the originals scaled pixels before the network.
SCALINGS = {
    "unit": dict(scale=1 / 255.0, offset=0.0),  # ToTensor(): [0, 1]
    "symmetric": dict(scale=1 / 127.5, offset=-1.0),  # (x/255 - 0.5) / 0.5: [-1, 1]
}

# Per-channel mean and standard deviation of the CIFAR-10 training images, on [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LeanRescaling(layers.Rescaling):
    """Keras's `Rescaling` without the addition of a zero offset (`x / 255` is one kernel, not two)."""

    def call(self, inputs):
        if isinstance(self.offset, (int, float)) and self.offset == 0:
            scale = self.backend.cast(self.scale, self.compute_dtype)
            if len(self.backend.core.shape(scale)) == 0:
                return self.backend.cast(inputs, self.compute_dtype) * scale
        return super().call(inputs)


def validate_common(data_format, input_shape):
    standardize_data_format(data_format)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (height, width, 3). Received: input_shape={input_shape!r}")


def raw_image_input(input_shape=RAW_IMAGE_SHAPE):
    return keras.Input(shape=tuple(input_shape), name="images")


def preprocess(inputs, scaling, data_format, resize_to=None):
    """Scales raw pixels (`scaling`: "unit", "symmetric", or "standardize": per-channel
    CIFAR-10 mean and std), moves channels first if asked, and optionally resizes
    bilinearly (half-pixel centres, no antialiasing: what `cv2.resize` with
    `INTER_LINEAR` does when upscaling)."""
    data_format = standardize_data_format(data_format)
    if scaling == "standardize":
        x = layers.Rescaling(
            scale=[1 / (255.0 * s) for s in CIFAR10_STD],
            offset=[-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)],
            name="preprocess_scale",
        )(inputs)
    else:
        x = LeanRescaling(name="preprocess_scale", **SCALINGS[scaling])(inputs)
    if data_format == "channels_first":
        x = layers.Permute((3, 1, 2), name="preprocess_to_channels_first")(x)
    if resize_to and tuple(inputs.shape[1:3]) != (resize_to, resize_to):  # resizing to the same size: identity
        x = layers.Resizing(
            resize_to, resize_to, interpolation="bilinear", data_format=data_format, name="preprocess_resize"
        )(x)
    return x
