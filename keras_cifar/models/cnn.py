"""`cnn`: the four-convolution network of Task2 / Task2TB (SPEC section 1)."""

from keras import layers

from keras_cifar.models.classifier import ImageClassifier
from keras_cifar.models.conv import TorchConv2D, TorchDense
from keras_cifar.models.init import initialize
from keras_cifar.models.preprocessing import RAW_IMAGE_SHAPE, preprocess, raw_image_input, validate_common
from keras_cifar.models.registry import register_model


@register_model(
    "cnn",
    input_size="32x32",
    experiment="Task2 / Task2TB",
    description="4 convolutions, 2 max pools, 1 dense layer",
    settings=("normalize",),
)
def build_cnn(num_classes=10, data_format="channels_first", input_shape=RAW_IMAGE_SHAPE, init="torch",
              normalize=False, name="cnn"):
    validate_common(data_format, input_shape)
    inputs = raw_image_input(input_shape)
    x = preprocess(inputs, "standardize" if normalize else "unit", data_format)
    conv = dict(activation="relu", data_format=data_format)
    x = TorchConv2D(10, 3, name="conv1", **conv)(x)
    x = TorchConv2D(15, 3, name="conv2", **conv)(x)
    x = TorchConv2D(20, 5, name="conv3", **conv)(x)
    x = layers.MaxPooling2D(2, data_format=data_format, name="pool1")(x)
    x = TorchConv2D(25, 5, name="conv4", **conv)(x)
    x = layers.MaxPooling2D(2, data_format=data_format, name="pool2")(x)
    # Flattening as stored (no transpose): CHW order when channels come first, as in PyTorch.
    x = layers.Flatten(data_format="channels_last", name="flatten")(x)
    # The head computes in float32 under mixed precision: logits and loss keep full precision.
    outputs = TorchDense(num_classes, dtype="float32", name="fc")(x)
    return initialize(ImageClassifier(inputs, outputs, name=name), init)
