"""`inception_lite`: two lite Inception blocks between convolutions (Task2GNbasic, SPEC section 2)."""

from keras import layers

from keras_cifar.models.blocks import InceptionBlock
from keras_cifar.models.classifier import ImageClassifier
from keras_cifar.models.conv import TorchConv2D, TorchDense
from keras_cifar.models.init import initialize
from keras_cifar.models.preprocessing import RAW_IMAGE_SHAPE, preprocess, raw_image_input, validate_common
from keras_cifar.models.registry import register_model

LITE_BLOCK = dict(
    filters_1x1=16,
    filters_3x3_reduce=16,
    filters_3x3=24,
    filters_5x5_reduce=16,
    filters_5x5=24,
    filters_pool_proj=24,
    pool="avg",
    double_3x3=True,
    batch_norm=False,
    activation=None,
    branch_order=("pool", "1x1", "5x5", "3x3"),
)


@register_model(
    "inception_lite",
    input_size="32x32",
    experiment="Task2GNbasic",
    description="3 convolutions and 2 lite Inception blocks (88 channels each)",
    settings=("normalize",),
)
def build_inception_lite(num_classes=10, data_format="channels_first", input_shape=RAW_IMAGE_SHAPE, init="torch",
                         normalize=False, name="inception_lite"):
    validate_common(data_format, input_shape)
    inputs = raw_image_input(input_shape)
    x = preprocess(inputs, "standardize" if normalize else "unit", data_format)
    x = TorchConv2D(16, 3, activation="relu", data_format=data_format, name="conv1")(x)
    for index, filters in enumerate((64, 64), start=1):
        x = TorchConv2D(filters, 3, data_format=data_format, name=f"conv{index + 1}")(x)
        x = layers.MaxPooling2D(2, data_format=data_format, name=f"pool{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        x = InceptionBlock(**LITE_BLOCK, data_format=data_format, name=f"inception{index}")(x)
    x = layers.ReLU(name="relu3")(x)
    # Flattening as stored (no transpose): CHW order when channels come first, as in PyTorch.
    x = layers.Flatten(data_format="channels_last", name="flatten")(x)
    # The head computes in float32 under mixed precision: logits and loss keep full precision.
    outputs = TorchDense(num_classes, dtype="float32", name="fc")(x)
    return initialize(ImageClassifier(inputs, outputs, name=name), init)
