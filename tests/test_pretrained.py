"""resnet18 weights from torchvision state dicts."""

import keras
import numpy as np
import pytest
import torch

import keras_cifar as kc
from pytorch_reference import originals as reference
from keras_cifar.errors import UsageError, WeightsError
from tests.conftest import import_torchvision, random_images

torchvision = import_torchvision()


def random_torchvision_resnet18(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()  # 1000-class head, as ImageNet checkpoints have
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_local_state_dict_converts_all_but_the_head(tmp_path):
    source = random_torchvision_resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    model = kc.create_model("resnet18", weights=str(path), resize_to=64)
    assert model.output_shape == (None, 10)
    # The backbone equals the torchvision model: compare pooled features.
    features = keras.Model(model.input, model.get_layer("avgpool").output)
    images = random_images(2)
    source.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = source(reference.preprocess_nchw(images, "resnet18", resize_to=64)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features(images, training=False)), expected, atol=1e-4)
    # The head is fresh: not a slice of the 1000-class head.
    fc = model.get_layer("fc").kernel.numpy()
    assert fc.shape == (512, 10)
    assert not np.allclose(fc, source_head_slice(path))


def source_head_slice(path):
    return torch.load(path)["fc.weight"][:10].T.numpy()


def test_data_parallel_prefix_is_accepted(tmp_path):
    state = {f"module.{k}": v for k, v in random_torchvision_resnet18(1).state_dict().items()}
    path = tmp_path / "ddp.pth"
    torch.save(state, path)
    kc.create_model("resnet18", weights=str(path), resize_to=32)


def test_missing_file_explains_both_ways(tmp_path):
    with pytest.raises(WeightsError) as error:
        kc.create_model("resnet18", weights=str(tmp_path / "nope.pth"))
    message = str(error.value)
    assert "does not exist" in message and "`weights='path/to/resnet18.pth'`" in message
    assert "torch hub cache" in message
    # The CLI names the flag instead of the parameter.
    from keras_cifar.cli import fit
    from keras_cifar.cli_errors import for_cli

    context = fit.make_context("fit", ["--model", "resnet18", "--weights", str(tmp_path / "nope.pth")])
    assert "pass its path: --weights path/to/resnet18.pth" in for_cli(error.value, context)


def test_wrong_state_dict_is_rejected(tmp_path):
    path = tmp_path / "cnn.pth"
    torch.save(reference.create_reference("cnn").state_dict(), path)
    with pytest.raises(WeightsError, match="not those of a torchvision ResNet18"):
        kc.create_model("resnet18", weights=str(path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="Cannot read"):
        kc.create_model("resnet18", weights=str(garbage))


def test_imagenet_without_internet_or_cache_says_how_to_supply(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(WeightsError) as error:
        kc.create_model("resnet18", weights="imagenet")
    message = str(error.value)
    assert "download failed" in message
    assert str(tmp_path) in message  # where the cached file would go
    assert "`weights='path/to/resnet18.pth'`" in message
    assert "\n" not in message  # one paragraph


def test_torchvision_weights_on_another_backend_are_a_clear_error(tmp_path, monkeypatch):
    """torchvision imported after TensorFlow's libraries crashes the process: on another Keras
    backend loading its weights is refused before it is imported."""
    from keras_cifar import _backend

    monkeypatch.setattr(_backend, "on_torch", lambda: False)
    with pytest.raises(UsageError) as error:
        kc.create_model("resnet18", weights=str(tmp_path / "resnet18.pth"), resize_to=32)
    assert "torch backend" in str(error.value) and "KERAS_BACKEND=torch" in str(error.value)
