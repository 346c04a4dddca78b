"""The model zoo: exact parameter counts, numerical parity with the PyTorch
originals, saving, in-model preprocessing. Parametrized over the registry, so a
new model is tested for free (add its reference to pytorch_reference/originals.py)."""

import json
import pathlib

import cv2
import keras
import numpy as np
import pytest
import torch

import keras_cifar as kc
from pytorch_reference import originals as reference
from keras_cifar.models.convert import copy_torch_weights, keras_layers_by_name, keras_weighted_layer_names
from tests.conftest import random_images
from tests.helpers import assert_saves_and_reloads, to_numpy

SPEC_PARAMETERS = {
    "cnn": 25_700,
    "inception_lite": 138_154,
    "resnet_lite": 23_382,
    "googlenet": 6_318_570,
    "resnet18": 11_181_642,
    "airbench94": 1_971_352,  # airbench94's network: its trainable parameters (the frozen whitening kernel apart)
    "airbench94_muon": 1_971_352,  # the same network with airbench94_muon's head
    "airbench95": 4_604_440,  # airbench95's: the same network at widths 128-384-384
}
BIG = {"googlenet", "resnet18"}
MODELS = kc.list_models()


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_registry_names():
    assert MODELS == ["cnn", "inception_lite", "resnet_lite", "googlenet", "resnet18", "airbench94", "airbench94_muon",
                      "airbench95"]
    for name in MODELS:
        assert name in reference.REFERENCES, f"{name} has no PyTorch reference module"


@pytest.mark.parametrize("name", MODELS)
def test_trainable_parameters_match_spec(name):
    model = kc.create_model(name)
    assert isinstance(model, keras.Model)
    assert trainable_count(model) == SPEC_PARAMETERS[name]
    reference_module = reference.create_reference(name)
    assert sum(p.numel() for p in reference_module.parameters() if p.requires_grad) == SPEC_PARAMETERS[name]


@pytest.mark.parametrize("name", MODELS)
def test_built_from_input_with_named_layers(name):
    model = kc.create_model(name)
    assert model.inputs[0].name == "images"
    assert tuple(model.input_shape) == (None, 32, 32, 3)
    assert tuple(model.output_shape) == (None, 10)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert model.get_layer("fc").units == 10
    assert kc.create_model(name, num_classes=7).output_shape == (None, 7)


def randomize_batch_norm(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, torch.nn.BatchNorm2d):
            with torch.no_grad():
                sub.running_mean.copy_(torch.rand(sub.num_features, generator=generator) - 0.5)
                sub.running_var.copy_(torch.rand(sub.num_features, generator=generator) + 0.5)
                weight = torch.rand(sub.num_features, generator=generator) + 0.5
                if sub.weight.requires_grad:  # a frozen scale (airbench) stays 1, as in a model without one
                    sub.weight.copy_(weight)
                sub.bias.copy_(torch.rand(sub.num_features, generator=generator) - 0.5)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_pytorch_original(name, data_format):
    """Weights copied from the PyTorch module give the same logits to 1e-4 (inference mode)."""
    torch.manual_seed(0)
    torch_model = reference.create_reference(name).eval()
    randomize_batch_norm(torch_model)
    model = kc.create_model(name, data_format=data_format)
    copied = copy_torch_weights(model, torch_model)
    assert sorted(copied) == keras_weighted_layer_names(model)
    images = random_images(2 if name in BIG else 8)
    with torch.no_grad():
        expected = torch_model(reference.preprocess_nchw(images, name)).numpy()
    logits = to_numpy(model(images, training=False))
    logit_scale = 1 / 256 if name == "airbench94_muon" else 1  # its head divides by the last width, not 9
    assert np.abs(expected).max() > 1e-2 * logit_scale  # a real signal, not all zeros
    np.testing.assert_allclose(logits, expected, atol=1e-4 * logit_scale, rtol=0)


@pytest.mark.parametrize("name", sorted(BIG))
def test_batch_norm_is_torchs_in_training_and_inference(name):
    """The 224x224 models' batch norms compute as nn.BatchNorm2d (torch's fused kernel): a training
    forward normalises with the batch statistics and updates every running mean and variance as
    torch does (momentum 0.1, the unbiased batch variance); inference then uses them."""
    torch.manual_seed(0)
    torch_model = reference.create_reference(name).train()
    randomize_batch_norm(torch_model)
    model = kc.create_model(name, resize_to=64)  # 2x2 maps in the last stage: 8 values a channel
    copy_torch_weights(model, torch_model)
    images = random_images(2)
    with torch.no_grad():
        expected = torch_model(reference.preprocess_nchw(images, name, resize_to=64)).numpy()
    logits = to_numpy(model(images, training=True))
    if name == "resnet18":  # googlenet's dropout draws its own masks
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    by_name = keras_layers_by_name(model)
    batch_norms = [(path, module) for path, module in torch_model.named_modules()
                   if isinstance(module, torch.nn.BatchNorm2d)]
    for path, module in batch_norms:
        layer = by_name[path.replace(".", "_")]
        for keras_state, torch_state in ((layer.moving_mean, module.running_mean),
                                         (layer.moving_variance, module.running_var)):
            np.testing.assert_allclose(to_numpy(keras_state), torch_state.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=path)
    with torch.no_grad():
        expected = torch_model.eval()(reference.preprocess_nchw(images, name, resize_to=64)).numpy()
    np.testing.assert_allclose(to_numpy(model(images, training=False)), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_saves_to_keras_and_reloads(name, tmp_path):
    options = {"resize_to": 64} if name in BIG else {}
    model = kc.create_model(name, **options)
    reloaded = assert_saves_and_reloads(model, random_images(3), tmp_path)
    assert json.dumps(reloaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("name", MODELS)
def test_graph_capture_equals_eager(name):
    """The captured forward replays the same ops: same outputs for other batch sizes, and
    in training mode the same gradients."""
    options = {"resize_to": 64} if name in BIG else {}
    keras.utils.set_random_seed(1)
    model = kc.create_model(name, **options)
    images = torch.as_tensor(random_images(4))
    model.set_graph_capture(True)
    captured = model.forward_step(images, training=False)
    eager = model(images, training=False)
    torch.testing.assert_close(captured, eager, rtol=0, atol=1e-6)
    for count in (1, 5):
        other = torch.as_tensor(random_images(count, seed=count))
        torch.testing.assert_close(model.forward_step(other, training=False), model(other, training=False),
                                   rtol=0, atol=1e-6)
    # one graph served every batch size but 1, which export cannot keep symbolic
    assert len(model.step_runtime.graphs.graphs) == 2

    if name == "googlenet":
        return  # dropout draws different masks in every call; its statistics are checked below
    model.zero_grad()
    model.forward_step(images, training=True).square().sum().backward()
    captured_grads = [v.value.grad.clone() for v in model.trainable_variables]
    model.zero_grad()
    model(images, training=True).square().sum().backward()
    for captured_grad, variable in zip(captured_grads, model.trainable_variables):
        torch.testing.assert_close(captured_grad, variable.value.grad, rtol=1e-5, atol=1e-6)


def test_graph_capture_keeps_dropout_random_and_batch_norm_updating():
    model = kc.create_model("googlenet", resize_to=None)
    model.set_graph_capture(True)
    images = torch.as_tensor(random_images(4))
    batch_norm = model.get_layer("inception3a")._branches["1x1"][1]
    before = batch_norm.moving_mean.numpy().copy()
    first = model.forward_step(images, training=True)
    second = model.forward_step(images, training=True)
    assert not np.allclose(batch_norm.moving_mean.numpy(), before)
    assert not torch.allclose(first, second)  # dropout masks differ between steps
    torch.testing.assert_close(model.forward_step(images, training=False), model(images, training=False))


def test_unknown_model_lists_names_and_suggests():
    with pytest.raises(ValueError) as error:
        kc.create_model("resnet_lit")
    message = str(error.value)
    for name in MODELS:
        assert name in message
    assert "Did you mean 'resnet_lite'?" in message


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        kc.create_model("cnn", num_classes=1)
    with pytest.raises(ValueError, match="data_format"):
        kc.create_model("cnn", data_format="nchw")
    with pytest.raises(ValueError, match="resize_to"):
        kc.create_model("googlenet", resize_to=8)
    with pytest.raises(TypeError):
        kc.create_model("cnn", resize_to=64)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_googlenet_accepts_small_inputs(size):
    """The final pooling is global average pooling, so any size from 32 up works."""
    model = kc.create_model("googlenet", resize_to=size if size > 32 else None)
    logits = to_numpy(model(random_images(2), training=False))
    assert logits.shape == (2, 10) and np.isfinite(logits).all()
    assert model.get_layer("avgpool").__class__.__name__ == "GlobalAveragePooling2D"


def test_googlenet_at_224_pools_7x7():
    model = kc.create_model("googlenet")
    assert tuple(model.get_layer("inception5b").output.shape[1:]) == (1024, 7, 7)


@pytest.mark.parametrize("name", ["cnn", "inception_lite", "resnet_lite"])
def test_small_nets_scale_to_unit_range(name, real_images):
    model = kc.create_model(name, data_format="channels_last")
    scaled = keras.Model(model.input, model.get_layer("preprocess_scale").output)(real_images)
    np.testing.assert_allclose(to_numpy(scaled), real_images / 255.0, atol=1e-6)


@pytest.mark.parametrize("name", ["googlenet", "resnet18"])
def test_in_model_upscale_matches_cv2(name, real_images):
    """(x/255 - 0.5)/0.5 and the bilinear upscale to 224, inside the model, match what the
    originals did with cv2.resize(INTER_LINEAR), to within 1/255 per pixel on average."""
    model = kc.create_model(name, data_format="channels_last")
    upscaled = to_numpy(keras.Model(model.input, model.get_layer("preprocess_resize").output)(real_images))
    assert upscaled.shape == (len(real_images), 224, 224, 3)
    expected = np.stack([
        cv2.resize((image / 255.0 - 0.5) / 0.5, (224, 224), interpolation=cv2.INTER_LINEAR)
        for image in real_images.astype(np.float32)
    ])
    error_in_unit_range = np.abs(upscaled - expected).mean() * 0.5  # [-1, 1] spans 2 units of [0, 1]
    assert error_in_unit_range <= 1 / 255
    assert np.abs(upscaled - expected).max() * 0.5 < 4 / 255
    # the original order (cv2 on uint8 images, then scaling) agrees as well
    expected_uint8 = np.stack([cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR) for image in real_images])
    assert np.abs((upscaled + 1) * 127.5 - expected_uint8).mean() <= 1.0


def test_torch_init_follows_pytorch_bounds():
    model = kc.create_model("cnn", init="torch")
    conv3 = model.get_layer("conv3")
    bound = 1 / np.sqrt(15 * 5 * 5)
    # 7,500 kernel weights reach 0.9 of the bound for sure; 20 biases reach half of it (1 - 2**-20)
    for weights, reach in ((conv3.kernel.numpy(), 0.9), (conv3.bias.numpy(), 0.5)):
        assert np.abs(weights).max() <= bound
        assert np.abs(weights).max() > reach * bound
    keras_init = kc.create_model("cnn", init="keras").get_layer("conv3")
    assert np.all(keras_init.bias.numpy() == 0)


def test_seeded_models_are_identical():
    keras.utils.set_random_seed(3)
    first = kc.create_model("resnet_lite").get_weights()
    keras.utils.set_random_seed(3)
    second = kc.create_model("resnet_lite").get_weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model_name", ["cnn", "inception_lite"])
def test_checkpoints_of_an_earlier_release_load_predict_and_train(model_name):
    """Checkpoints saved by e8a655f (before the layers that launch fewer kernels: TorchDense, the
    kernel's torch layout, padding inside torch's pooling and convolution kernels) load with the
    layers they were saved with, give the logits they gave then, and train on (tests/data/e8a655f:
    one training step from the registry's model, then the logits of 8 random images)."""
    folder = pathlib.Path(__file__).parent / "data" / "e8a655f"
    model = keras.saving.load_model(folder / f"{model_name}.keras")
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.predict(images, verbose=0), np.load(folder / "logits.npz")[model_name],
                               rtol=0, atol=1e-5)
    model.set_graph_capture(True)
    first = model.train_on_batch(images, np.arange(8) % 10, return_dict=True)["loss"]
    assert np.isfinite(first)
