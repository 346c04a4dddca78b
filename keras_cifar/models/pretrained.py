"""ImageNet weights for `resnet18`, from torchvision, converted to Keras."""

import os

from keras_cifar.errors import WeightsError
from keras_cifar.models.convert import copy_torch_weights

HEAD = "fc"


def torchvision_mismatch():
    """None when the installed torchvision is the release built for the installed torch (torch
    2.N pairs with torchvision 0.N+15), else why not, with the pip command that fixes it. Read
    from the installed packages' metadata: importing a mismatched torchvision fails on its
    compiled operators."""
    from importlib import metadata

    import torch

    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    wanted = f"pip install --no-deps 'torchvision==0.{minor + 15}.*'" if major == 2 else "the torchvision built for it"
    try:
        installed = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return f"torchvision is not installed (for torch {torch.__version__}: {wanted})"
    if major != 2 or installed.split(".")[:2] != ["0", str(minor + 15)]:
        return f"torchvision {installed} is not the release built for torch {torch.__version__} ({wanted})"
    return None


def _torchvision():
    """torchvision, which keras-cifar does not require: pip would replace the user's torch with the
    one the newest torchvision was built for."""
    import torch

    mismatch = torchvision_mismatch()
    if mismatch:
        raise WeightsError(
            f"Loading ResNet18's ImageNet or .pth weights needs torchvision: {mismatch}. keras-cifar does not "
            f"require it, so that pip keeps the torch you have ({torch.__version__}). Or start from random weights.")
    import torchvision

    return torchvision


def _how_to_supply(reason):
    import torch

    torchvision = _torchvision()
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return WeightsError(
        f"Cannot load the ImageNet weights of ResNet18: {reason} keras-cifar takes them from torchvision "
        "(ResNet18_Weights.DEFAULT), which downloads them once into the torch hub cache "
        f"({cached}) on a machine with internet access. Without "
        "internet, either copy that file into the same cache folder, or pass its path: "
        "`weights='path/to/resnet18.pth'`."
    )


def imagenet_state_dict():
    torchvision = _torchvision()
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # URLError, HTTPError, socket errors, hash mismatch
        raise _how_to_supply(f"the download failed ({type(error).__name__}: {error}).") from None


def local_state_dict(path):
    import torch

    if not os.path.isfile(path):
        raise _how_to_supply(f"the file {path!r} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"Cannot read {path!r} as a PyTorch state dict ({type(error).__name__}: {str(error)[:200]}). "
            "Pass the .pth file of a torchvision ResNet18 (its state_dict())."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path!r} holds a {type(state).__name__}, not a state dict of a torchvision ResNet18.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_torchvision_resnet18(model, weights):
    """Copies torchvision ResNet18 weights (all but the classification head) into `model`."""
    from keras_cifar._backend import require_torch

    require_torch("Loading torchvision's ResNet18 weights")  # torchvision after TensorFlow crashes the process
    torchvision = _torchvision()
    state = imagenet_state_dict() if weights == "imagenet" else local_state_dict(weights)
    backbone_state = {key: value for key, value in state.items() if not key.startswith(f"{HEAD}.")}
    reference = torchvision.models.resnet18()
    expected = {key: value.shape for key, value in reference.state_dict().items() if not key.startswith(f"{HEAD}.")}
    missing = sorted(set(expected) - set(backbone_state))
    unexpected = sorted(set(backbone_state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(backbone_state) if tuple(backbone_state[k].shape) != expected[k])
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"The weights {weights!r} are not those of a torchvision ResNet18: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} of "
            f"another shape (e.g. {mismatched[:3]})."
        )
    reference.load_state_dict(backbone_state, strict=False)
    copy_torch_weights(model, reference, skip=(HEAD,))
    return model
