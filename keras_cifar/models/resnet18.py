"""`resnet18`: torchvision's ResNet18 on 224x224 upscaled input, optionally ImageNet-pretrained (Task2ResNet18)."""

from keras import layers

from keras_cifar.models.batch_norm import BatchNormalization
from keras_cifar.models.blocks import ResidualBlock, SymmetricMaxPooling2D
from keras_cifar.models.classifier import ImageClassifier
from keras_cifar.models.conv import TorchDense, torch_conv
from keras_cifar.models.data_format import channel_axis
from keras_cifar.models.init import initialize
from keras_cifar.models.preprocessing import RAW_IMAGE_SHAPE, preprocess, raw_image_input, validate_common
from keras_cifar.models.registry import register_model

STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]  # (filters, stride of the first block)


@register_model(
    "resnet18",
    input_size="32x32 -> 224x224",
    experiment="Task2ResNet18",
    description="torchvision ResNet18 with a 10-class head; weights='imagenet' for pretrained",
    settings=("resize_to", "weights"),
)
def build_resnet18(num_classes=10, data_format="channels_first", input_shape=RAW_IMAGE_SHAPE, resize_to=224,
                   weights=None, init="torch", name="resnet18"):
    """`weights`: None (random), `"imagenet"` (torchvision's `ResNet18_Weights.DEFAULT`,
    downloaded once into the torch hub cache) or the path of a torchvision
    ResNet18 state dict (`.pth`). The 1000-class head is always dropped."""
    validate_common(data_format, input_shape)
    if resize_to is not None and (not isinstance(resize_to, int) or resize_to < 32):
        raise ValueError(f"`resize_to` must be an integer >= 32 or None. Received: resize_to={resize_to!r}")
    inputs = raw_image_input(input_shape)
    x = preprocess(inputs, "symmetric", data_format, resize_to=resize_to)
    for layer in torch_conv(64, 7, strides=2, padding=3, use_bias=False, data_format=data_format, name="conv1"):
        x = layer(x)
    x = BatchNormalization(axis=channel_axis(data_format), epsilon=1e-5, momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu")(x)
    x = SymmetricMaxPooling2D(3, 2, 1, data_format=data_format, name="maxpool")(x)
    for stage_index, (filters, strides) in enumerate(STAGES, start=1):
        for block_index in range(2):
            x = ResidualBlock(
                filters,
                strides=strides if block_index == 0 else 1,
                batch_norm=True,
                data_format=data_format,
                name=f"layer{stage_index}_{block_index}",
            )(x)
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
    # The head computes in float32 under mixed precision: logits and loss keep full precision.
    outputs = TorchDense(num_classes, dtype="float32", name="fc")(x)
    model = initialize(ImageClassifier(inputs, outputs, name=name), init)
    if weights is not None:
        from keras_cifar.models.pretrained import load_torchvision_resnet18

        load_torchvision_resnet18(model, weights)
    return model
