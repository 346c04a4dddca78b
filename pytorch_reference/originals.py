"""The original experiments' networks as plain PyTorch modules, written from SPEC.md.

They are the references that the parity tests, the benchmarks and the
reproduction runs compare the Keras models against. They take preprocessed
NCHW float input, as the original scripts fed them. Module names follow the
Keras layer names (a dot here is an underscore there), so weights can be
copied by name (`keras_cifar.models.convert`).
"""

import torch
import torch.nn.functional as F
from torch import nn


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.conv2 = nn.Conv2d(10, 15, 3)
        self.conv3 = nn.Conv2d(15, 20, 5)
        self.conv4 = nn.Conv2d(20, 25, 5)
        self.fc = nn.Linear(400, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        return self.fc(x.flatten(1))


class InceptionLite(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.pool_proj = nn.Conv2d(in_channels, 24, 1)
        self.b1x1 = nn.Conv2d(in_channels, 16, 1)
        self.b5x5_reduce = nn.Conv2d(in_channels, 16, 1)
        self.b5x5 = nn.Conv2d(16, 24, 5, padding=2)
        self.b3x3_reduce = nn.Conv2d(in_channels, 16, 1)
        self.b3x3 = nn.Conv2d(16, 24, 3, padding=1)
        self.b3x3_2 = nn.Conv2d(24, 24, 3, padding=1)

    def forward(self, x):
        pool = self.pool_proj(F.avg_pool2d(x, 3, stride=1, padding=1))
        b5x5 = self.b5x5(self.b5x5_reduce(x))
        b3x3 = self.b3x3_2(self.b3x3(self.b3x3_reduce(x)))
        return torch.cat([pool, self.b1x1(x), b5x5, b3x3], dim=1)


class InceptionLiteNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.conv2 = nn.Conv2d(16, 64, 3)
        self.inception1 = InceptionLite(64)
        self.conv3 = nn.Conv2d(88, 64, 3)
        self.inception2 = InceptionLite(64)
        self.fc = nn.Linear(3168, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.inception1(F.relu(F.max_pool2d(self.conv2(x), 2)))
        x = self.inception2(F.relu(F.max_pool2d(self.conv3(x), 2)))
        return self.fc(F.relu(x).flatten(1))


class PlainResidual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ResNetLite(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.residual1 = PlainResidual(16)
        self.conv3 = nn.Conv2d(16, 20, 3)
        self.residual2 = PlainResidual(20)
        self.fc = nn.Linear(720, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.residual1(F.relu(F.max_pool2d(self.conv2(x), 2)))
        x = self.residual2(F.relu(F.max_pool2d(self.conv3(x), 2)))
        return self.fc(x.flatten(1))


class BasicConv(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, in_channels, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj):
        super().__init__()
        self.b1x1 = BasicConv(in_channels, n1x1, 1)
        self.b3x3_reduce = BasicConv(in_channels, n3x3red, 1)
        self.b3x3 = BasicConv(n3x3red, n3x3, 3, padding=1)
        self.b5x5_reduce = BasicConv(in_channels, n5x5red, 1)
        self.b5x5 = BasicConv(n5x5red, n5x5, 5, padding=2)
        self.pool_proj = BasicConv(in_channels, pool_proj, 1)

    def forward(self, x):
        return torch.cat(
            [
                self.b1x1(x),
                self.b3x3(self.b3x3_reduce(x)),
                self.b5x5(self.b5x5_reduce(x)),
                self.pool_proj(F.max_pool2d(x, 3, stride=1, padding=1)),
            ],
            dim=1,
        )


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.block1_conv = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.block2_conv1 = nn.Conv2d(64, 192, 3, padding=1)
        self.block2_conv2 = nn.Conv2d(192, 192, 3, padding=1)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        pool = lambda t: F.max_pool2d(t, 3, stride=2, padding=1)  # noqa: E731
        x = pool(self.block1_conv(x))
        x = pool(self.block2_conv2(self.block2_conv1(x)))
        x = pool(self.inception3b(self.inception3a(x)))
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = block(x)
        x = self.inception5b(self.inception5a(pool(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # = avgpool(7) at 224x224
        return self.fc(self.dropout(x))


def resnet18(num_classes=10):
    from keras_cifar.models.pretrained import torchvision_mismatch

    mismatch = torchvision_mismatch()
    if mismatch:  # the tests that need it skip, saying this (tests/conftest.py)
        raise ModuleNotFoundError(f"The original resnet18 needs torchvision: {mismatch}", name="torchvision")
    import torchvision

    return torchvision.models.resnet18(num_classes=num_classes)


class ConvGroup(nn.Module):
    """airbench94's conv group: conv, max-pool, batch norm, GELU, conv, batch norm, GELU."""

    def __init__(self, channels_in, channels_out, momentum=0.6):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(channels_out, eps=1e-12, momentum=1 - momentum)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out, eps=1e-12, momentum=1 - momentum)
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad = False  # airbench trains batch-norm biases only
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Airbench94(nn.Module):
    """The network of KellerJordan/cifar10-airbench's airbench94.py (MIT), with module names
    matching the Keras `airbench94` model's layers. Its whitening kernel is frozen."""

    def __init__(self, num_classes=10, widths=(64, 256, 256)):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.block1 = ConvGroup(24, widths[0])
        self.block2 = ConvGroup(widths[0], widths[1])
        self.block3 = ConvGroup(widths[1], widths[2])
        self.pool = nn.MaxPool2d(3)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x):
        x = F.gelu(self.whiten(x))
        x = self.pool(self.block3(self.block2(self.block1(x))))
        return self.fc(x.flatten(1)) * self.logit_scale

    logit_scale = 1 / 9


class Airbench94Muon(Airbench94):
    """airbench94_muon's CifarNet: airbench94's layers, the logits divided by the last width."""

    def __init__(self, num_classes=10, widths=(64, 256, 256)):
        super().__init__(num_classes, widths)
        self.logit_scale = 1 / widths[-1]


class Airbench95(Airbench94):
    """legacy/airbench95.py's network: airbench94's at widths 128-384-384."""

    def __init__(self, num_classes=10, widths=(128, 384, 384)):
        super().__init__(num_classes, widths)


# Keras model name -> (reference constructor, preprocessing of raw 0..255 pixels, resize target)
REFERENCES = {
    "cnn": (CNN, "unit", None),
    "inception_lite": (InceptionLiteNet, "unit", None),
    "resnet_lite": (ResNetLite, "unit", None),
    "googlenet": (GoogLeNet, "symmetric", 224),
    "resnet18": (resnet18, "symmetric", 224),
    "airbench94": (Airbench94, "standardize", None),
    "airbench94_muon": (Airbench94Muon, "standardize", None),
    "airbench95": (Airbench95, "standardize", None),
}

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def create_reference(name, num_classes=10):
    return REFERENCES[name][0](num_classes=num_classes)


def preprocess_nchw(images, name, resize_to="default"):
    """Raw uint8/float NHWC images (0..255) -> the reference's NCHW input, as the
    originals prepared it (ToTensor, normalisation, bilinear upscale)."""
    _, scaling, default_size = REFERENCES[name]
    x = torch.as_tensor(images).float().permute(0, 3, 1, 2) / 255.0
    if scaling == "symmetric":
        x = (x - 0.5) / 0.5
    elif scaling == "standardize":
        x = (x - torch.tensor(CIFAR10_MEAN)[:, None, None]) / torch.tensor(CIFAR10_STD)[:, None, None]
    size = default_size if resize_to == "default" else resize_to
    if size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous()
