"""The fast recipe (`airbench94` model, configs/airbench94.yaml): airbench94's update, schedule, lookahead,
whitening, augmentation and test-time augmentation, each against a plain PyTorch reference
written from airbench94.py; time to a target accuracy in `fit`."""

import contextlib
import copy
import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import keras_cifar as kc
from pytorch_reference import originals as reference
from pytorch_reference.torch_loop import nudge_weights
from keras_cifar.data import Split, TensorLoader
from keras_cifar.data.augment import Augmentation, random_crop_flip
from keras_cifar.errors import CheckpointError, ConfigError
from keras_cifar.models.convert import copy_torch_weights
from keras_cifar.models.airbench94 import PatchWhitening, init_whitening, whitening_kernel
from keras_cifar.train.config import model_options, resolve_config
from keras_cifar.train.evaluation import predict_logits, predict_logits_tta, tta_views
from keras_cifar.losses import build_loss
from keras_cifar.optim import Triangle, build_optimizer
from keras_cifar.train.freeze import WhiteningBiasFreeze
from keras_cifar.train.trainer import fit
from tests.cli_runner import run_cli
from tests.conftest import random_images

# airbench94.py's hyperparameters, in its own (decoupled, summed-loss) terms
AIRBENCH = dict(lr=11.5, momentum=0.85, weight_decay=0.0153, bias_scaler=64.0, label_smoothing=0.2)


def airbench94_config(**overrides):
    """configs/airbench94.yaml with `overrides`."""
    return resolve_config(None, {"model": "airbench94", **overrides})


def airbench_lr_schedule(step, total):
    warmup = int(total * 0.23)
    if step < warmup:
        frac = step / warmup
        return 0.2 * (1 - frac) + 1.0 * frac
    frac = (step - warmup) / (total - warmup)
    return 1.0 * (1 - frac) + 0.07 * frac


def test_triangle_schedule_is_airbenchs():
    total = 490
    schedule = Triangle(1.5, total, int(0.23 * total))
    for step in range(total + 1):
        assert schedule.value_at(step) == pytest.approx(1.5 * airbench_lr_schedule(step, total), rel=1e-12)


@pytest.mark.parametrize("model, airbench_lr", [("airbench94", AIRBENCH["lr"]), ("airbench95", 10.0)])
def test_fast_yaml_is_airbench_converted_to_the_mean_loss(model, airbench_lr):
    """configs/airbench94.yaml is airbench94's hyp, configs/airbench95.yaml airbench95's (its lr 10.0)."""
    config = airbench94_config(model=model)
    kilostep = 1024 * (1 + 1 / (1 - AIRBENCH["momentum"]))
    # airbench sums the loss over the batch: its torch lr per image times the batch is ours
    assert config.lr == pytest.approx(airbench_lr / kilostep * config.batch_size, rel=1e-4)
    assert config.weight_decay == pytest.approx(AIRBENCH["weight_decay"] / airbench_lr, rel=1e-4)
    assert (config.batch_size, config.momentum, config.label_smoothing) == (1024, 0.85, 0.2)
    assert (config.bn_bias_lr_scale, config.lookahead, config.schedule) == (64, 5, "triangle")
    assert (config.crop_padding, config.crop_fill, config.flip) == (2, "reflect", "alternate")
    assert config.drop_last  # airbench's loader: 48 full steps per epoch
    assert config.epochs == {"airbench94": 10, "airbench95": 15}[model]


def test_airbench95_yaml_differs_from_airbench94_yaml_where_airbench95_differs_from_airbench94():
    """legacy/airbench95.py changes airbench94's widths (the model), lr (and so the decay per unit
    of lr) and epochs, nothing else."""
    fast, airbench95 = (dataclasses.asdict(airbench94_config(model=name)) for name in ("airbench94", "airbench95"))
    assert {key for key in fast if fast[key] != airbench95[key]} == {"model", "lr", "weight_decay", "epochs"}


def airbench_reference_run(module, batches, epochs, steps_per_epoch, whiten_bias_epochs):
    """airbench94.py's training loop (its param groups, summed loss, LambdaLR, lookahead)."""
    batch_size = len(batches[0][1])
    momentum = AIRBENCH["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = AIRBENCH["lr"] / kilostep_scale
    wd = AIRBENCH["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * AIRBENCH["bias_scaler"]
    norm_biases = [p for k, p in module.named_parameters() if "norm" in k and p.requires_grad]
    other = [p for k, p in module.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                                 dict(params=other, lr=lr, weight_decay=wd / lr)], momentum=momentum, nesterov=True)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: airbench_lr_schedule(step, total))
    alpha = 0.95 ** 5 * (torch.arange(total + 1) / total) ** 3
    ema = {k: v.clone() for k, v in module.state_dict().items()}

    def lookahead(decay):  # every float tensor of the state dict: weights and batch-norm statistics
        for average, value in zip(ema.values(), module.state_dict().values()):
            if value.dtype in (torch.half, torch.float):
                average.lerp_(value, 1 - decay)
                value.copy_(average)

    step = 0
    module.train()
    for epoch in range(epochs):
        module.whiten.bias.requires_grad = epoch < whiten_bias_epochs
        for images, labels in batches[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]:
            loss = F.cross_entropy(module(images), labels, label_smoothing=AIRBENCH["label_smoothing"],
                                   reduction="none").sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 5 == 0:
                lookahead(alpha[step].item())
            if step >= total:
                lookahead(1.0)


def test_fast_training_equals_airbench_loop():
    """12 steps (3 epochs of 4) of `fit`'s optimizer on the `airbench94` model against airbench's loop:
    batch-norm biases at 64x, the whitening bias frozen after epoch 1, lookahead every 5 steps
    and at the end, the triangle schedule, label smoothing; the same weights after every epoch.

    How close is "the same" depends on the CPU's kernels: the Keras model rounds differently from
    the reference at every convolution (another memory layout, another oneDNN path), and airbench's
    learning rates carry a rounding difference from 1e-7 to about 5e-6 of a weight in 12 steps. So
    the tolerance is measured here, on this CPU: the reference against itself started one float32
    ulp apart (`nudge_weights`), three times; the median of those spreads, times 10, bounds the
    Keras run. A wrong update (a missed 64x, a step of lookahead too many) moves weights by 1e-2.
    The batches are chosen free of near-ties: with other random batches a one-ulp change can flip
    a max-pool near-tie and move a whole kernel by 2e-3 of its scale, for the reference against
    itself as for Keras (measured on two oneDNN kernel paths: docs/TESTING.md)."""
    torch.manual_seed(0)
    widths, batch, epochs, steps = (8, 16, 16), 16, 3, 4
    start = reference.Airbench94(widths=widths)
    with torch.no_grad():
        start.whiten.weight.normal_(0, 0.3)
    model = kc.create_model("airbench94", widths=widths, whiten_bias_epochs=1)
    copy_torch_weights(model, start)
    config = airbench94_config(batch_size=batch, epochs=epochs, lr=airbench94_config().lr * batch / 1024, mixed_precision="none")
    model.compile(optimizer=build_optimizer(config, steps, model), loss=build_loss(config), metrics=["accuracy"])
    model.set_graph_capture(True)

    images = random_images(batch * steps * epochs, seed=1)
    labels = np.random.default_rng(1).integers(0, 10, len(images))
    batches = [(reference.preprocess_nchw(images[i:i + batch], "airbench94"), torch.as_tensor(labels[i:i + batch]))
               for i in range(0, len(images), batch)]

    def reference_weights(module):
        airbench_reference_run(module, batches, epochs, steps, whiten_bias_epochs=1)
        return airbench_weights(module, with_statistics=True)

    expected = reference_weights(copy.deepcopy(start))
    freeze = freeze_callback(model)
    for step, i in enumerate(range(0, len(images), batch)):
        if step % steps == 0:
            freeze.on_epoch_begin(step // steps)
        model.train_on_batch(torch.as_tensor(images[i:i + batch]), torch.as_tensor(labels[i:i + batch]))
    ours = {variable.path: keras.ops.convert_to_numpy(variable) for variable in model.weights}

    def deviations(weights):  # per weight and batch-norm statistic: largest difference / largest value
        return {path: float(np.abs(weights[path] - expected[path]).max() / np.abs(expected[path]).max())
                for path in ours}

    spreads = [max(deviations(reference_weights(nudge_weights(copy.deepcopy(start), seed=seed))).values())
               for seed in range(3)]
    tolerance = 10 * float(np.median(spreads))
    assert 0 < tolerance < 1e-3, f"the reference moves by {spreads} from one-ulp changes: not a stable comparison"
    worst = {path: deviation for path, deviation in deviations(ours).items() if deviation > tolerance}
    assert not worst, f"beyond {tolerance:.1e} (10x the reference's own one-ulp spread {spreads}): {worst}"
    assert_gradient_stopped(model)


def freeze_callback(model):
    """fit's whitening-bias freeze, for a loop of `train_on_batch` that calls its `on_epoch_begin`."""
    freeze = WhiteningBiasFreeze()
    freeze.set_model(model)
    return freeze


def test_lookahead_optimizer_recompiles_with_its_model_only():
    """A lookahead averages the state of the model it was made for: compiling that model again
    keeps its averages; training another model with it is refused."""
    from keras_cifar.optim import Lookahead

    config = airbench94_config(batch_size=8, epochs=1, mixed_precision="none")
    model = kc.create_model("airbench94", widths=(8, 8, 8))
    model.compile(optimizer=build_optimizer(config, 2, model), loss=build_loss(config), metrics=["accuracy"])
    assert isinstance(model.optimizer, Lookahead)
    model.train_on_batch(torch.as_tensor(random_images(8)), torch.zeros(8, dtype=torch.int64))
    averages = model.optimizer.model_state_averages()
    assert len(averages) == len([v for v in model.non_trainable_weights if "float" in str(v.dtype)]) > 0
    model.compile(optimizer=model.optimizer, loss=build_loss(config), metrics=["accuracy"])
    assert all(a is b for a, b in zip(model.optimizer.model_state_averages(), averages))
    other = kc.create_model("airbench94", widths=(8, 8, 8))
    other.compile(optimizer=model.optimizer, loss=build_loss(config))
    with pytest.raises(ValueError, match="another model's state"):
        other.train_on_batch(torch.as_tensor(random_images(8)), torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match="every"):
        Lookahead(model.optimizer.base_optimizer, every=0, total=10)


def assert_gradient_stopped(model):
    """After its freeze step the whitening bias takes no gradient: the backward pass skipped it."""
    bias = model.get_layer("whiten").bias.value
    assert not bias.requires_grad and bias.grad is None
    assert all(variable.value.requires_grad for variable in model.trainable_weights if variable.value is not bias)


def test_fit_stops_the_frozen_bias_gradient_and_restores_it_after_training(real_folder_small, tmp_path,
                                                                           monkeypatch):
    """Through `fit`: airbench94.yaml's whitening bias (3 epochs) stops requiring gradients for epoch 4,
    and every trainable weight requires them again once training ends."""
    seen = {}
    restore = WhiteningBiasFreeze.on_train_end

    def spy(self, logs=None):
        bias = self.model.get_layer("whiten").bias
        seen["during"] = (bias.value.requires_grad, any(v is bias for v in self.model.trainable_weights))
        restore(self, logs)
        seen["after"] = all(variable.value.requires_grad for variable in self.model.trainable_weights)
        seen["trainable"] = bias.trainable

    monkeypatch.setattr(WhiteningBiasFreeze, "on_train_end", spy)
    fit(airbench94_config(data=str(real_folder_small), epochs=4, batch_size=100, eval_batch_size=100,
                    mixed_precision="none", device="cpu", tta=False, log_dir=str(tmp_path)),
        verbose=0, echo=lambda message: None)
    assert seen == {"during": (False, False), "after": True, "trainable": True}


def airbench_weights(module, with_statistics=False):
    """The torch module's trainable weights by Keras variable path, in Keras layouts, and with
    `with_statistics` its batch-norm running statistics."""
    weights = {}
    for name, buffer in module.named_buffers() if with_statistics else ():
        layer, kind = name.rsplit(".", 1)
        if kind in ("running_mean", "running_var"):
            weights[f"{layer.replace('.', '_')}/{'moving_mean' if kind == 'running_mean' else 'moving_variance'}"] = (
                buffer.numpy())
    for name, parameter in module.named_parameters():
        layer, kind = name.rsplit(".", 1)
        layer = layer.replace(".", "_")
        value = parameter.detach().numpy()
        if kind == "weight" and value.ndim == 4:
            weights[f"{layer}/kernel"] = value.transpose(2, 3, 1, 0)
        elif kind == "weight" and value.ndim == 2:
            weights[f"{layer}/kernel"] = value.T
        elif "norm" in layer:
            weights[f"{layer}/{'beta' if kind == 'bias' else 'gamma'}"] = value
        else:
            weights[f"{layer}/bias"] = value
    return weights


def test_whitening_decorrelates_patches():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    patches = rng.normal(size=(4000, 12)) @ mixing  # strongly correlated 2x2x3 patches
    images = patches.reshape(4000, 2, 2, 3).transpose(0, 3, 1, 2)  # NCHW, one patch per image
    kernel = whitening_kernel(images, 2, eps=0.0)
    torch_kernel = torch.as_tensor(kernel).permute(3, 2, 0, 1)  # (out, in, kh, kw)
    whitened = F.conv2d(torch.as_tensor(images, dtype=torch.float32), torch_kernel).flatten(1)[:, :12]
    covariance = (whitened.T @ whitened / len(whitened)).numpy()
    np.testing.assert_allclose(covariance, np.eye(12), atol=0.02)
    torch.testing.assert_close(torch_kernel[12:], -torch_kernel[:12])


def test_init_whitening_sets_the_kernel_from_the_data():
    model = kc.create_model("airbench94", widths=(8, 8, 8))
    images = random_images(64)
    init_whitening(model, images)
    layer = model.get_layer("whiten")
    assert isinstance(layer, PatchWhitening) and not layer.kernel.trainable
    x = reference.preprocess_nchw(images, "airbench94").numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.kernel), whitening_kernel(x, 2), rtol=1e-4,
                               atol=1e-4)


def test_learned_whitening_is_airbenchs_first_conv_trained_like_the_others():
    """`whitening="learned"` (the ablation): the same 2x2 convolution, trainable from airbench's
    Conv initialisation (Dirac on the first 3 filters, zero bias), untouched by the data init and
    never frozen by the optimizer; the setting reaches the builder from the run config."""
    from keras_cifar.train.trainer import build_model

    data_model = kc.create_model("airbench94", widths=(8, 8, 8))
    model = kc.create_model("airbench94", widths=(8, 8, 8), whitening="learned")
    layer = model.get_layer("whiten")
    assert not isinstance(layer, PatchWhitening) and layer.kernel.trainable
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    identity = np.zeros((2, 2, 3, 3), "float32")
    identity[1, 1] = np.eye(3)  # torch.nn.init.dirac_ on a 2x2 kernel: the centre is (1, 1)
    np.testing.assert_array_equal(kernel[..., :3], identity)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), np.zeros(24, "float32"))
    trainable = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert trainable(model) == trainable(data_model) + 2 * 2 * 3 * 24
    init_whitening(model, random_images(64))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), kernel)
    from keras_cifar.optim.param_groups import frozen_bias

    assert frozen_bias(model) is None
    assert frozen_bias(data_model) == (data_model.get_layer("whiten").bias, 3)

    config = airbench94_config(whitening="learned")
    assert model_options(config) == {"whitening": "learned"}
    assert not isinstance(build_model(config, 10).get_layer("whiten"), PatchWhitening)
    with pytest.raises(ConfigError, match="whitening.*applies to airbench94, airbench94_muon and airbench95 only"):
        resolve_config(None, {"model": "cnn", "whitening": "learned"})
    with pytest.raises(ConfigError, match="whitening.*data, learned"):
        airbench94_config(whitening="random")
    with pytest.raises(ValueError, match="whitening=None"):
        kc.create_model("airbench94", whitening=None)


def test_dirac_init():
    model = kc.create_model("airbench94", widths=(8, 16, 16))
    kernel = keras.ops.convert_to_numpy(model.get_layer("block2_conv1").kernel)  # 8 in, 16 out
    identity = np.zeros((3, 3, 8, 8), "float32")
    identity[1, 1] = np.eye(8)
    np.testing.assert_array_equal(kernel[..., :8], identity)
    assert np.abs(kernel[..., 8:]).max() > 0  # the other filters keep PyTorch's default initialisation


def test_alternating_flips_and_reflected_translation():
    count = 64
    split = Split(random_images(count), np.arange(count))
    loader = TensorLoader(split, count, augment=Augmentation(padding=0, fill="reflect", flip="alternate"), seed=5)
    original = torch.as_tensor(split.images)
    flipped = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        images, labels = next(iter(loader))
        assert torch.equal(labels, torch.arange(count))
        mirrored = torch.tensor([torch.equal(a, b.flip(1)) for a, b in zip(images, original)])
        kept = torch.tensor([torch.equal(a, b) for a, b in zip(images, original)])
        assert bool((mirrored | kept).all())
        flipped.append(mirrored)
    assert torch.equal(flipped[0], ~flipped[1]) and torch.equal(flipped[0], flipped[2])  # every image, every other epoch
    assert 16 < int(flipped[0].sum()) < 48

    images = torch.as_tensor(random_images(32))
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=2, flip=False, fill="reflect")
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (2, 2, 2, 2), mode="reflect").permute(0, 2, 3, 1)
    for image, source in zip(out, padded):  # every output is a 32x32 window of the reflect-padded image
        assert any(torch.equal(image.float(), source[dy:dy + 32, dx:dx + 32]) for dy in range(5) for dx in range(5))


def test_tta_equals_airbench_infer_mirror_translate():
    model = kc.create_model("airbench94", widths=(8, 8, 8))
    images = random_images(20)
    split = Split(images, np.zeros(20, "int64"))
    ours = predict_logits_tta(model, split, batch_size=7)
    net = lambda x: torch.as_tensor(predict_logits(model, Split(x.numpy(), split.labels), 7))  # noqa: E731
    x = torch.as_tensor(images)  # NHWC: airbench's flip(-1) is a flip of W, axis 2 here

    def mirror(inputs):
        return 0.5 * net(inputs) + 0.5 * net(inputs.flip(2))

    padded = F.pad(x.permute(0, 3, 1, 2).float(), (1, 1, 1, 1), mode="reflect").permute(0, 2, 3, 1).to(torch.uint8)
    translated = torch.stack([mirror(padded[:, 0:32, 0:32].contiguous()), mirror(padded[:, 2:34, 2:34].contiguous())])
    expected = 0.5 * mirror(x) + 0.5 * translated.mean(0)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-5)
    assert sum(weight for weight, _ in tta_views(images)) == pytest.approx(1.0)
    both, plain = predict_logits_tta(model, split, batch_size=7, with_plain=True)  # fit's final evaluation
    np.testing.assert_array_equal(both, ours)
    np.testing.assert_allclose(plain, predict_logits(model, split, 7), rtol=1e-6, atol=1e-6)


def test_recipe_settings_are_checked():
    with pytest.raises(ConfigError, match="lookahead.*sgd"):
        resolve_config(None, {"model": "cnn", "optimizer": "adam", "lookahead": 5})
    with pytest.raises(ConfigError, match="stop_at_target"):
        resolve_config(None, {"model": "cnn", "stop_at_target": True})
    with pytest.raises(ConfigError, match="target_accuracy"):
        resolve_config(None, {"model": "cnn", "target_accuracy": 1.5})
    with pytest.raises(ConfigError, match="crop_fill"):
        resolve_config(None, {"model": "cnn", "crop_fill": "wrap"})
    with pytest.raises(ConfigError, match="muon_lr.*optimizer muon only.*optimizer='sgd'"):
        resolve_config(None, {"model": "airbench94", "optimizer": "sgd", "muon_lr": 0.1})
    with pytest.raises(ConfigError, match="lookahead.*sgd only.*optimizer='muon'"):
        resolve_config(None, {"model": "airbench94", "optimizer": "muon", "lookahead": 5})
    with pytest.raises(ConfigError, match="head_lr_scale.*sgd and muon only"):
        resolve_config(None, {"model": "cnn", "optimizer": "adam", "head_lr_scale": 2.0})
    with pytest.raises(ConfigError, match="fp16"):
        resolve_config(None, {"model": "airbench94", "optimizer": "muon", "lookahead": 0, "mixed_precision": "fp16"})
    with pytest.raises(ConfigError, match="`head` applies to airbench94, airbench94_muon and airbench95 only"):
        resolve_config(None, {"model": "cnn", "head": "muon"})
    with pytest.raises(ConfigError, match="`whiten_bias_init` applies to airbench94, airbench94_muon and airbench95 only"):
        resolve_config(None, {"model": "cnn", "whiten_bias_init": "uniform"})
    with pytest.raises(ConfigError, match="whiten_bias_init.*zeros, uniform"):
        resolve_config(None, {"model": "airbench94", "whiten_bias_init": "normal"})
    with pytest.raises(ConfigError, match="schedule"):
        resolve_config(None, {"model": "cnn", "schedule": "step"})


def test_linear_schedule_and_muon_optimizer_round_trip():
    from keras_cifar import keras_internals
    from keras_cifar.optim import Linear, TorchMuon
    from keras_cifar.optim.torch_update import param_group

    schedule = Linear(106.0, 200)
    assert [schedule.value_at(step) for step in (0, 100, 200, 250)] == [106.0, 53.0, 0.0, 0.0]
    groups = [param_group(["fc/kernel"], 12.6), param_group(["whiten/bias"], 1.0, Linear(106.0, 75))]
    optimizer = TorchMuon(learning_rate=schedule, muon_lr_scale=0.24 / 106, muon_momentum=0.6, momentum=0.85,
                          nesterov=True, weight_decay=3.7736e-5, param_groups=groups)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(again) is TorchMuon and again.get_config() == optimizer.get_config()
    restored = keras_internals.optimizer_learning_rate(again)
    assert isinstance(restored, Linear) and restored.get_config() == schedule.get_config()
    own = again.param_groups[1]["learning_rate"]
    assert isinstance(own, Linear) and own.get_config() == {"peak": 106.0, "total_steps": 75}
    for bad in (dict(muon_lr_scale=0), dict(muon_momentum=1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TorchMuon(learning_rate=0.1, **bad)
    with pytest.raises(ValueError, match="lr_scale"):
        TorchMuon(learning_rate=0.1, param_groups=[param_group(["fc/kernel"], 0)])


def test_fit_reports_time_to_target_and_stops(real_folder_small, tmp_path):
    """A tiny fast run: the whitening layer set from the data, time to target in summary.json,
    the run stopped at the epoch that reached it, TTA in the final evaluation; the checkpoint
    evaluates with `evaluate --tta` to the same accuracy."""
    config = airbench94_config(data=str(real_folder_small), epochs=3, batch_size=64, eval_batch_size=50, mixed_precision="none",
                         target_accuracy=0.01, stop_at_target=True, log_dir=str(tmp_path), device="cpu")
    result = fit(config, verbose=0, echo=lambda message: None)
    summary = result.summary
    assert summary["epochs"] == 1  # stopped at the first epoch, which reached 1%
    # drop_last (airbench94.yaml): 300 images make 4 full steps of 64, and the schedule counts those
    assert (summary["steps_per_epoch"], summary["train_images_per_epoch"]) == (4, 256)
    assert result.history[0]["learning_rate"] == pytest.approx(
        1.5 * airbench_lr_schedule(4, 3 * 4), rel=1e-6)
    target = summary["target"]
    assert target["reached"] and target["epoch"] == 1 and not target["with_tta"]
    assert 0 < summary["first_step_s"] <= target["elapsed_s"] == pytest.approx(result.history[0]["elapsed_s"])
    assert summary["prepare_s"] > 0 and summary["tta"] and summary["tta_time_s"] > 0
    assert 0 <= summary["final_accuracy_without_tta"] <= 1
    with open(os.path.join(result.run_path, "summary.json")) as handle:
        assert json.load(handle)["target"] == target
    kernel = keras.saving.load_model(os.path.join(result.run_path, "last.keras")).get_layer("whiten").kernel
    assert math.isfinite(float(np.abs(keras.ops.convert_to_numpy(kernel)).sum()))
    assert not np.allclose(keras.ops.convert_to_numpy(kernel)[..., :12], 0)

    evaluated = run_cli("evaluate", "--checkpoint", os.path.join(result.run_path, "last.keras"), "--tta", "--json",
                        "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["tta"] and report["accuracy"] == pytest.approx(summary["final_accuracy"], abs=1e-9)


@pytest.mark.parametrize("recipe", ["airbench94", "airbench94_muon"])
def test_resume_mid_lookahead_equals_an_uninterrupted_run(recipe, real_folder_small, tmp_path):
    """Lookahead's running average (airbench94.yaml) and Muon's momentum buffers (airbench94_muon.yaml) are
    optimizer state in the checkpoint: stopping after epoch 1 (fast: step 6, one step after a
    lookahead pull) and resuming gives the uninterrupted run's weights."""
    from keras_cifar.train.trainer import resumed_config

    make_config = airbench94_config if recipe == "airbench94" else muon_config
    common = dict(data=str(real_folder_small), epochs=2, batch_size=50, eval_batch_size=100, mixed_precision="none",
                  device="cpu", tta=False)
    quiet = dict(verbose=0, echo=lambda message: None)
    whole = fit(make_config(**common, log_dir=str(tmp_path / "whole")), **quiet)
    stopped = fit(make_config(**common, log_dir=str(tmp_path / "stopped"), target_accuracy=0.01,
                              stop_at_target=True), **quiet)
    assert stopped.summary["epochs"] == 1
    resumed = fit(resumed_config(stopped.run_path, {"stop_at_target": False}), resume_path=stopped.run_path, **quiet)
    assert resumed.summary["epochs"] == 2
    models = [keras.saving.load_model(os.path.join(run.run_path, "last.keras")) for run in (whole, resumed)]
    for expected, actual in zip(models[0].weights, models[1].weights):
        # batch-norm moving statistics (sums over a batch) differ in float32 rounding between processes
        rtol = 1e-4 if "moving" in actual.path else 0
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=rtol, atol=1e-6, err_msg=actual.path)
    assert resumed.history[-1]["elapsed_s"] > resumed.history[0]["elapsed_s"]  # the clock continued


def test_resume_refuses_an_optimizer_state_that_does_not_load(real_folder_small, tmp_path, monkeypatch):
    """A checkpoint of the version whose lookahead averaged the weights only holds fewer optimizer
    variables; Keras would skip them all and the resumed run restart its schedule at step 0:
    resuming refuses it instead."""
    from keras_cifar.optim import factory
    from keras_cifar.train.trainer import resumed_config

    config = airbench94_config(data=str(real_folder_small), epochs=2, batch_size=50, eval_batch_size=100,
                         mixed_precision="none", device="cpu", tta=False, log_dir=str(tmp_path),
                         target_accuracy=0.01, stop_at_target=True)
    quiet = dict(verbose=0, echo=lambda message: None)
    with monkeypatch.context() as earlier_version:
        earlier_version.setattr(factory, "model_state", lambda model: model.trainable_weights)
        stopped = fit(config, **quiet)
    assert stopped.summary["epochs"] == 1
    with pytest.raises(CheckpointError, match="optimizer state.*restart the learning-rate schedule"):
        fit(resumed_config(stopped.run_path, {"stop_at_target": False}), resume_path=stopped.run_path, **quiet)


# airbench94_muon.py's hyperparameters, in its own (summed-loss) terms
MUON = dict(batch_size=2000, bias_lr=0.053, head_lr=0.67, wd_per_image=2e-6, muon_lr=0.24, muon_momentum=0.6,
            momentum=0.85, epochs=8, whiten_bias_epochs=3, label_smoothing=0.2)


def muon_config(**overrides):
    """configs/airbench94_muon.yaml with `overrides`."""
    return resolve_config(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "airbench94_muon.yaml"),
                          overrides)


def test_airbench94_muon_yaml_is_airbench94_muon_converted_to_the_mean_loss():
    config = muon_config()
    batch = MUON["batch_size"]
    assert (config.model, config.head, config.optimizer, config.batch_size, config.epochs) == (
        "airbench94_muon", "muon", "muon", batch, MUON["epochs"])
    # summed loss over the batch: its SGD learning rates times the batch are ours
    assert config.lr == pytest.approx(MUON["bias_lr"] * batch, rel=1e-6)
    assert config.lr * config.head_lr_scale == pytest.approx(MUON["head_lr"] * batch, rel=1e-6)
    # torch's L2 term: the decay per step, lr x weight_decay, is airbench's wd in every SGD group
    assert config.lr * config.weight_decay == pytest.approx(MUON["wd_per_image"] * batch, rel=1e-4)
    assert (config.muon_lr, config.muon_momentum, config.momentum, config.nesterov) == (
        MUON["muon_lr"], MUON["muon_momentum"], MUON["momentum"], True)
    assert (config.schedule, config.label_smoothing, config.bn_bias_lr_scale, config.lookahead) == (
        "linear", MUON["label_smoothing"], 1.0, 0)
    assert (config.crop_padding, config.crop_fill, config.flip, config.drop_last, config.tta) == (
        2, "reflect", "alternate", True, True)
    assert model_options(config) == {"head": "muon", "whiten_bias_init": "uniform"}
    model = kc.create_model("airbench94", **model_options(config))
    assert model.get_layer("whiten").bias_epochs == MUON["whiten_bias_epochs"]


def test_whitening_bias_starts_as_airbench94_muons_or_at_zero():
    """airbench94_muon's whitening layer is a plain nn.Conv2d: its bias starts in U(+-1/sqrt(fan_in))
    (`whiten_bias_init="uniform"`); airbench94's Conv zeroes it (the default)."""
    from pytorch_reference import airbench_muon_torch as muon_ref

    torch.manual_seed(0)
    reference = muon_ref.CifarNet(widths=(8, 8, 8))
    reference.reset()
    bound = 1 / math.sqrt(reference.whiten.weight[0].numel())
    assert 0 < reference.whiten.bias.abs().max() <= bound
    keras.utils.set_random_seed(0)
    biases = np.concatenate([
        keras.ops.convert_to_numpy(kc.create_model("airbench94", widths=(8, 8, 8), whiten_bias_init="uniform")
                                   .get_layer("whiten").bias) for _ in range(4)])
    assert biases.shape == (4 * reference.whiten.out_channels,)
    assert 0.9 * bound < np.abs(biases).max() <= bound and np.all(biases != 0)
    assert abs(biases.mean()) < 0.25 * bound  # centred, as U(-bound, bound)
    for options in ({}, {"head": "muon"}, {"whitening": "learned"}):
        zeros = kc.create_model("airbench94", widths=(8, 8, 8), **options).get_layer("whiten").bias
        assert not np.any(keras.ops.convert_to_numpy(zeros)), options
    with pytest.raises(ValueError, match="whiten_bias_init='normal'"):
        kc.create_model("airbench94", widths=(8, 8, 8), whiten_bias_init="normal")


def muon_reference_as_fast(module):
    """airbench94_muon's CifarNet renamed as the `airbench94` model's layers (reference.Airbench94's names)."""
    names = {"layers.1.": "block1.", "layers.2.": "block2.", "layers.3.": "block3.", "head.": "fc."}
    state = {}
    for name, value in module.state_dict().items():
        for old, new in names.items():
            name = name.replace(old, new) if name.startswith(old) else name
        state[name] = value
    widths = (module.layers[1].conv1.out_channels, module.layers[2].conv1.out_channels,
              module.layers[3].conv1.out_channels)
    renamed = reference.Airbench94(widths=widths)
    renamed.load_state_dict(state)
    return renamed


def test_newton_schulz_on_keras_kernels_is_airbench94_muons():
    """The product's iteration on a kernel in Keras's layout (kh, kw, in, out) gives airbench's on
    the same kernel in torch's (out, in, kh, kw), in bfloat16 as both run it; both push the
    singular values of a full-rank matrix into about [0.5, 1.5]."""
    from pytorch_reference import airbench_muon_torch as muon_ref
    from keras_cifar.optim import newton_schulz

    torch.manual_seed(0)
    for shape in ((16, 8, 3, 3), (8, 24, 3, 3), (32, 32, 3, 3)):
        torch_kernel = torch.randn(shape)
        expected = muon_ref.zeropower_via_newtonschulz5(torch_kernel.reshape(shape[0], -1)).view(shape).float()
        keras_kernel = torch_kernel.permute(2, 3, 1, 0)
        ours = newton_schulz(keras_kernel.reshape(-1, shape[0]).T).T.reshape(keras_kernel.shape).float()
        np.testing.assert_allclose(ours.permute(3, 2, 0, 1).numpy(), expected.numpy(), rtol=0, atol=2e-2)
        singular = torch.linalg.svdvals(ours.reshape(-1, shape[0]))
        assert 0.3 < singular.min() and singular.max() < 1.6, singular


def test_airbench94_muon_training_equals_airbench94_muon_loop(monkeypatch):
    """12 steps (3 epochs of 4) of `fit`'s optimizer on `airbench94` with the muon head against
    airbench94_muon's own loop and Muon (pytorch_reference/airbench_muon_torch.py): Muon on the kernels,
    SGD groups for biases and head, the linear schedules, the whitening bias's own decay to its
    last step; the same weights at the end."""
    from pytorch_reference import airbench_muon_torch as muon_ref
    from keras_cifar.optim import TorchMuon

    # Newton-Schulz in float32 on both sides: in bfloat16 the two matrix layouts round
    # differently, and the iteration amplifies that within a few steps
    monkeypatch.setattr(muon_ref.Muon, "ns_dtype", torch.float32)
    monkeypatch.setattr(TorchMuon, "ns_dtype", torch.float32)
    torch.manual_seed(0)
    widths, batch, epochs, steps = (8, 16, 16), 16, 3, 4
    module = muon_ref.CifarNet(widths=widths)
    module.reset()
    with torch.no_grad():
        module.whiten.weight.normal_(0, 0.3)
    model = kc.create_model("airbench94", widths=widths, whiten_bias_epochs=1, head="muon")
    copy_torch_weights(model, muon_reference_as_fast(module))
    base = muon_config()
    config = muon_config(batch_size=batch, epochs=epochs, mixed_precision="none",
                              lr=MUON["bias_lr"] * batch, weight_decay=MUON["wd_per_image"] / MUON["bias_lr"])
    assert config.head_lr_scale == base.head_lr_scale
    model.compile(optimizer=build_optimizer(config, steps, model), loss=build_loss(config), metrics=["accuracy"])
    model.set_graph_capture(True)

    images = random_images(batch * steps * epochs, seed=3)
    labels = np.random.default_rng(0).integers(0, 10, len(images))
    initial = {variable.path: keras.ops.convert_to_numpy(variable).copy() for variable in model.trainable_variables}
    optimizers = muon_ref.make_optimizers(module, batch_size=batch)
    total = epochs * steps
    module.train()
    freeze = freeze_callback(model)
    for step, i in enumerate(range(0, len(images), batch)):
        inputs = reference.preprocess_nchw(images[i:i + batch], "airbench94")
        muon_ref.train_step(module, optimizers, inputs, torch.as_tensor(labels[i:i + batch]), step, total,
                            steps, contextlib.nullcontext)
        if step % steps == 0:
            freeze.on_epoch_begin(step // steps)
        model.train_on_batch(torch.as_tensor(images[i:i + batch]), torch.as_tensor(labels[i:i + batch]))

    expected = airbench_weights(muon_reference_as_fast(module))
    for variable in model.trainable_variables:
        value = keras.ops.convert_to_numpy(variable)
        assert not np.allclose(value, initial[variable.path]), variable.path  # every weight trained
        # atol: one thread sums in another order than two; measured up to 5e-5 after 12 steps
        np.testing.assert_allclose(value, expected[variable.path], rtol=2e-4, atol=1e-4, err_msg=variable.path)
    assert_gradient_stopped(model)


def test_whitening_bias_group_decays_to_zero_at_its_own_last_step():
    """Under the linear schedule (airbench94_muon.yaml) the whitening bias is a parameter group with
    its own schedule, reaching 0 at its last step (`bias_epochs` x steps), while the others
    follow the run's; after that step the freeze takes it out of the update."""
    from keras_cifar.optim import Linear

    steps, epochs = 2, 3
    model = kc.create_model("airbench94", widths=(8, 8, 8), whiten_bias_epochs=1, head="muon")
    config = muon_config(batch_size=8, epochs=epochs, mixed_precision="none")
    optimizer = build_optimizer(config, steps, model)
    bias = model.get_layer("whiten").bias
    own = [group for group in optimizer.param_groups if group["paths"] == [bias.path]]
    assert len(own) == 1 and isinstance(own[0]["learning_rate"], Linear)
    assert own[0]["learning_rate"].get_config() == {"peak": config.lr, "total_steps": steps}
    model.compile(optimizer=optimizer, loss=build_loss(config), metrics=["accuracy"])
    freeze = freeze_callback(model)
    seen = []
    for step in range(epochs * steps):
        if step % steps == 0:
            freeze.on_epoch_begin(step // steps)
        model.train_on_batch(torch.as_tensor(random_images(8, seed=step)), torch.zeros(8, dtype=torch.int64))
        groups = optimizer.__dict__["_torch_step_now"].optimizer.param_groups
        rates = {id(parameter): group["lr"] for group in groups for parameter in group["params"]}
        seen.append(rates.get(id(bias.value)))
        assert rates[id(model.get_layer("block1_norm1").beta.value)] == pytest.approx(
            config.lr * (1 - step / (epochs * steps)))
    assert seen[:2] == [pytest.approx(config.lr), pytest.approx(config.lr / 2)]
    assert seen[2:] == [None] * 4  # frozen: not in the update


def test_freeze_on_resume_starts_frozen_and_ends_trainable(tmp_path):
    """A run resumed after the bias's last epoch starts with it frozen: the callback runs with the
    real epoch index; training's end makes it trainable again. Every run's callbacks include it."""
    from keras_cifar.train.trainer import make_callbacks, new_run_state

    model = kc.create_model("airbench94", widths=(8, 8, 8), whiten_bias_epochs=2)
    bias = model.get_layer("whiten").bias
    freeze = freeze_callback(model)
    freeze.on_epoch_begin(2)
    assert not bias.trainable and not bias.value.requires_grad
    assert all(variable is not bias for variable in model.trainable_weights)
    freeze.on_epoch_begin(3)
    assert not bias.trainable
    freeze.on_train_end()
    assert bias.trainable and bias.value.requires_grad
    freeze.on_epoch_begin(1)
    assert bias.trainable
    loader = TensorLoader(Split(random_images(8), np.zeros(8, "int64")), 4)
    callbacks, _ = make_callbacks(airbench94_config(), str(tmp_path), new_run_state(), loader, eval_is_test=True)
    assert any(isinstance(callback, WhiteningBiasFreeze) for callback in callbacks)


def test_an_earlier_releases_lookahead_sgd_config_loads_as_a_lookahead():
    """The TorchSGD config of earlier releases (lookahead, learning-rate scales and frozen variables
    as options) still deserialises, as a `Lookahead` around TorchSGD, so their checkpoints load."""
    from keras_cifar.optim import Lookahead, TorchSGD

    config = {"learning_rate": 0.1, "momentum": 0.85, "nesterov": True, "weight_decay": 1e-3,
              "lr_scales": {"block1_norm1/beta": 64.0}, "frozen_after": {"whiten/bias": 75},
              "lookahead_every": 5, "lookahead_total": 100}
    optimizer = keras.optimizers.deserialize({"module": None, "class_name": "keras_cifar>TorchSGD",
                                              "config": config, "registered_name": "keras_cifar>TorchSGD"})
    assert isinstance(optimizer, Lookahead) and (optimizer.every, optimizer.total) == (5, 100)
    assert isinstance(optimizer.base_optimizer, TorchSGD) and optimizer.base_optimizer.momentum == 0.85
    plain = TorchSGD.from_config({"learning_rate": 0.1, "lr_scales": {}, "lookahead_every": 0})
    assert type(plain) is TorchSGD
