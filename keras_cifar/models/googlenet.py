"""`googlenet`: GoogLeNet (Inception v1) with batch norm on 224x224 upscaled input (Task2GoogleNet, SPEC section 4)."""

from keras import layers

from keras_cifar.models.blocks import InceptionBlock, SymmetricMaxPooling2D
from keras_cifar.models.classifier import ImageClassifier
from keras_cifar.models.conv import TorchConv2D, TorchDense, torch_conv
from keras_cifar.models.init import initialize
from keras_cifar.models.preprocessing import RAW_IMAGE_SHAPE, preprocess, raw_image_input, validate_common
from keras_cifar.models.registry import register_model

# name: (filters_1x1, filters_3x3_reduce, filters_3x3, filters_5x5_reduce, filters_5x5, filters_pool_proj)
INCEPTION_STAGES = [
    {"inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64)},
    {
        "inception4a": (192, 96, 208, 16, 48, 64),
        "inception4b": (160, 112, 224, 24, 64, 64),
        "inception4c": (128, 128, 256, 24, 64, 64),
        "inception4d": (112, 144, 288, 32, 64, 64),
        "inception4e": (256, 160, 320, 32, 128, 128),
    },
    {"inception5a": (256, 160, 320, 32, 128, 128), "inception5b": (384, 192, 384, 48, 128, 128)},
]


@register_model(
    "googlenet",
    input_size="32x32 -> 224x224",
    experiment="Task2GoogleNet",
    description="GoogLeNet, 9 Inception blocks with batch norm, dropout 0.4",
    settings=("resize_to",),
)
def build_googlenet(num_classes=10, data_format="channels_first", input_shape=RAW_IMAGE_SHAPE, resize_to=224,
                    dropout=0.4, init="torch", name="googlenet"):
    """`resize_to=None` feeds the raw size to the network; the final pooling is
    global, so any input of 32x32 or more works (224 is the original)."""
    validate_common(data_format, input_shape)
    if resize_to is not None and (not isinstance(resize_to, int) or resize_to < 32):
        raise ValueError(f"`resize_to` must be an integer >= 32 or None. Received: resize_to={resize_to!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    inputs = raw_image_input(input_shape)
    x = preprocess(inputs, "symmetric", data_format, resize_to=resize_to)
    for layer in torch_conv(64, 7, strides=2, padding=3, data_format=data_format, name="block1_conv"):
        x = layer(x)
    x = SymmetricMaxPooling2D(3, 2, 1, data_format=data_format, name="block1_pool")(x)
    x = TorchConv2D(192, 3, padding="same", data_format=data_format, name="block2_conv1")(x)
    x = TorchConv2D(192, 3, padding="same", data_format=data_format, name="block2_conv2")(x)
    x = SymmetricMaxPooling2D(3, 2, 1, data_format=data_format, name="block2_pool")(x)
    for stage_index, stage in enumerate(INCEPTION_STAGES, start=3):
        for block_name, filters in stage.items():
            x = InceptionBlock(*filters, data_format=data_format, name=block_name)(x)
        if stage_index < 5:
            x = SymmetricMaxPooling2D(3, 2, 1, data_format=data_format, name=f"block{stage_index}_pool")(x)
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # The head computes in float32 under mixed precision: logits and loss keep full precision.
    outputs = TorchDense(num_classes, dtype="float32", name="fc")(x)
    return initialize(ImageClassifier(inputs, outputs, name=name), init)
