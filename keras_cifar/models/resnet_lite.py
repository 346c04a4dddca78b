"""`resnet_lite`: two plain residual blocks between convolutions (Task2RNbasic, SPEC section 3)."""

from keras import layers

from keras_cifar.models.blocks import ResidualBlock
from keras_cifar.models.classifier import ImageClassifier
from keras_cifar.models.conv import TorchConv2D, TorchDense
from keras_cifar.models.init import initialize
from keras_cifar.models.preprocessing import RAW_IMAGE_SHAPE, preprocess, raw_image_input, validate_common
from keras_cifar.models.registry import register_model


@register_model(
    "resnet_lite",
    input_size="32x32",
    experiment="Task2RNbasic",
    description="3 convolutions and 2 residual blocks, no batch norm",
    settings=("normalize",),
)
def build_resnet_lite(num_classes=10, data_format="channels_first", input_shape=RAW_IMAGE_SHAPE, init="torch",
                      normalize=False, name="resnet_lite"):
    validate_common(data_format, input_shape)
    inputs = raw_image_input(input_shape)
    x = preprocess(inputs, "standardize" if normalize else "unit", data_format)
    x = TorchConv2D(8, 3, activation="relu", data_format=data_format, name="conv1")(x)
    for index, filters in enumerate((16, 20), start=1):
        x = TorchConv2D(filters, 3, data_format=data_format, name=f"conv{index + 1}")(x)
        x = layers.MaxPooling2D(2, data_format=data_format, name=f"pool{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        x = ResidualBlock(filters, data_format=data_format, name=f"residual{index}")(x)
    # Flattening as stored (no transpose): CHW order when channels come first, as in PyTorch.
    x = layers.Flatten(data_format="channels_last", name="flatten")(x)
    # The head computes in float32 under mixed precision: logits and loss keep full precision.
    outputs = TorchDense(num_classes, dtype="float32", name="fc")(x)
    return initialize(ImageClassifier(inputs, outputs, name=name), init)
