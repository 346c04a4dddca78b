"""Training options: schedules, loss, optimizers, precision, graph capture in training."""

import cv2
import keras
import numpy as np
import pytest
import torch

from keras_cifar.train.config import resolve_config
from keras_cifar import list_models
from keras_cifar.models.convert import copy_torch_weights
from pytorch_reference.torch_loop import ReferenceRun
from keras_cifar.losses import SparseCrossentropy
from keras_cifar.optim import OneCycle, TorchAdam, TorchAdamW, TorchSGD, WarmupCosine, build_optimizer
from keras_cifar.train.trainer import build_model, compile_model, fit


def schedule_values(schedule, steps):
    return np.array([float(keras.ops.convert_to_numpy(schedule(step))) for step in steps])


def test_one_cycle_matches_pytorch():
    total, peak = 200, 3e-3
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=peak)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total, pct_start=0.3,
                                                    anneal_strategy="cos", cycle_momentum=False)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # torch's OneCycleLR rises over pct_start * total - 1 steps and ends exactly at the final lr
    ours = schedule_values(OneCycle(peak, total - 1, int(0.3 * total) - 1), range(total))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-9)


def test_warmup_cosine():
    schedule = WarmupCosine(1e-2, total_steps=100, warmup_steps=10)
    values = schedule_values(schedule, [0, 4, 9, 10, 55, 100])
    np.testing.assert_allclose(values, [1e-3, 5e-3, 1e-2, 1e-2, 5e-3, 0.0], atol=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_equals_pytorch_cross_entropy(smoothing):
    logits = torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
    ours = SparseCrossentropy(label_smoothing=smoothing)(labels, logits)
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)


def test_optimizers_from_config():
    for overrides, kind in [({"optimizer": "adam"}, TorchAdam),
                            ({"optimizer": "adamw", "weight_decay": 0.05}, TorchAdamW),
                            ({"optimizer": "sgd", "momentum": 0.9, "nesterov": True}, TorchSGD)]:
        optimizer = build_optimizer(resolve_config(None, {"model": "cnn", **overrides}), steps_per_epoch=10)
        assert isinstance(optimizer, kind)
    sgd = build_optimizer(resolve_config(None, {"model": "cnn", "optimizer": "sgd", "momentum": 0.9,
                                                "nesterov": True}), 10)
    assert sgd.momentum == 0.9 and sgd.nesterov


@pytest.mark.parametrize("name,kind,decay", [("adam", torch.optim.Adam, 0.0), ("adam", torch.optim.Adam, 0.01),
                                             ("adamw", torch.optim.AdamW, 0.05)])
def test_adam_updates_exactly_like_torch(name, kind, decay):
    # Gradients from 1e-9 to 1e-3, so epsilon and its place in the formula matter from step 1:
    # Keras's own Adam would damp the steps of the small ones.
    rng = np.random.default_rng(0)
    start = rng.normal(size=(2, 64)).astype("float32")
    gradients = [(rng.normal(size=(2, 64)) * 10.0 ** rng.integers(-9, -2, size=(2, 64))).astype("float32")
                 for _ in range(40)]
    config = resolve_config(None, {"model": "cnn", "optimizer": name, "weight_decay": decay})
    ours = build_optimizer(config, steps_per_epoch=10)
    variable = keras.Variable(start.copy())
    parameter = torch.nn.Parameter(torch.tensor(start.copy()))
    theirs = kind([parameter], lr=config.lr, weight_decay=decay)
    for gradient in gradients:
        ours.apply_gradients([(keras.ops.convert_to_tensor(gradient), variable)])
        parameter.grad = torch.tensor(gradient)
        theirs.step()
    moved_ours = keras.ops.convert_to_numpy(variable) - start
    moved_theirs = parameter.detach().numpy() - start
    np.testing.assert_allclose(moved_ours, moved_theirs, rtol=0, atol=1e-4 * np.abs(moved_theirs).max())


def read_folder(folder, split):
    files = sorted(folder.glob(f"{split}/*/*.jpg"))
    classes = sorted({f.parent.name for f in files})
    images = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    return images, np.array([classes.index(f.parent.name) for f in files])


@pytest.mark.parametrize("model_name", ["cnn", "resnet_lite", "inception_lite"])
def test_training_steps_equal_the_pytorch_original(model_name, real_folder_small):
    """From the same weights, on the same real batches, `fit`'s model, loss and optimizer take the
    same steps as the PyTorch original with torch.optim.Adam. Adam moves every weight by about lr
    per step whatever its gradient's size, so the weights must agree to a small part of lr."""
    images, labels = read_folder(real_folder_small, "train")
    config = resolve_config(None, {"model": model_name})
    reference_run = ReferenceRun(model_name, lr=config.lr, seed=0)
    model = build_model(config, 10)
    copy_torch_weights(model, reference_run.module)
    compile_model(model, config, steps_per_epoch=10)
    order = np.random.default_rng(0).permutation(len(images))
    for step in range(3):
        batch = order[step * config.batch_size:(step + 1) * config.batch_size]
        their_loss, _ = reference_run.train_step(torch.tensor(images[batch]), torch.tensor(labels[batch]))
        our_loss = model.train_on_batch(images[batch], labels[batch], return_dict=True)["loss"]
        assert float(our_loss) == pytest.approx(their_loss, rel=1e-5)
    twin = build_model(config, 10)
    copy_torch_weights(twin, reference_run.module)
    # A float32 rounding difference can flip a max-pool near-tie on a real batch, and the flipped
    # unit's weights then take a visibly different step (a 3e-7 change of the learning rate does
    # the same to PyTorch against itself). So: nearly all weights within 2% of a step, and every
    # weight within half a step.
    ours = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in model.weights])
    theirs = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in twin.weights])
    difference = np.abs(ours - theirs)
    assert np.mean(difference <= 1e-4 * np.abs(theirs) + config.lr * 0.02) >= 0.999
    assert difference.max() <= config.lr * 0.5


def small_config(data, tmp_path, **overrides):
    values = dict(model="resnet_lite", epochs=2, batch_size=30, data=str(data), data_dir=str(tmp_path / "tfds"),
                  log_dir=str(tmp_path / "logs"), seed=4)
    return resolve_config(None, {**values, **overrides})


def test_graph_capture_trains_exactly_like_eager_keras(real_folder_small, tmp_path):
    """Two epochs with the captured forward graph and with plain eager Keras give the same weights."""
    captured = fit(small_config(real_folder_small, tmp_path, jit="graph", augment=True), verbose=0, echo=print)
    eager = fit(small_config(real_folder_small, tmp_path, jit="off", augment=True), verbose=0, echo=print)
    for a, b in zip(keras.saving.load_model(f"{captured.run_path}/last.keras").get_weights(),
                    keras.saving.load_model(f"{eager.run_path}/last.keras").get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert captured.history[-1]["loss"] == pytest.approx(eager.history[-1]["loss"], rel=1e-5)


@pytest.mark.parametrize("model_name", list_models())
def test_every_model_fits_with_graph_capture(model_name, real_folder_small, tmp_path):
    """Two epochs of a few steps through `fit` for every model of the zoo (googlenet and resnet18
    at 32x32): the replayed graph leaves the batch-norm statistics as leaf tensors, updated."""
    options = {"resize_to": 32} if model_name in ("googlenet", "resnet18") else {}
    if model_name == "resnet18":
        options["weights"] = "none"  # no download in tests
    result = fit(small_config(real_folder_small, tmp_path, model=model_name, batch_size=16, train_images=48,
                              eval_images=16, **options), verbose=0, echo=print)
    assert [row["epoch"] for row in result.history] == [1, 2]
    model = keras.saving.load_model(f"{result.run_path}/last.keras")
    model.set_graph_capture(True)
    fresh = keras.saving.load_model(f"{result.run_path}/last.keras")
    images = torch.as_tensor(read_folder(real_folder_small, "test")[0][:8])
    model.forward_step(images, training=True)
    assert all(v.value.is_leaf for v in model.weights)
    if model_name != "googlenet":  # dropout draws its own masks; the statistics still move
        fresh(images, training=True)
        for traced, eager in zip(model.non_trainable_variables, fresh.non_trainable_variables):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(traced), keras.ops.convert_to_numpy(eager),
                                       rtol=1e-5, atol=1e-6, err_msg=traced.path)


def test_bf16_mixed_precision_trains_on_cpu(real_folder_small, tmp_path):
    result = fit(small_config(real_folder_small, tmp_path, mixed_precision="bf16", epochs=1), verbose=0, echo=print)
    assert np.isfinite(result.history[-1]["loss"])
    model = keras.saving.load_model(f"{result.run_path}/last.keras")
    assert model.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"  # computed in bf16
    assert all(w.dtype == np.float32 for w in model.get_weights())  # variables stay float32
    assert keras.mixed_precision.global_policy().name == "float32"  # fit restored the policy


def test_val_split_evaluates_on_validation(real_folder_small, tmp_path):
    result = fit(small_config(real_folder_small, tmp_path, val_split=0.2, epochs=1, train_images=200),
                 verbose=0, echo=print)
    assert result.summary["eval_split"] == "val"
    assert sum(v is not None for v in result.summary["per_class_accuracy"].values()) >= 5


def test_resume_may_change_epochs_and_execution_but_not_the_run(real_folder_small, tmp_path):
    from keras_cifar.errors import ConfigError
    from keras_cifar.train.config import read_config_file
    from keras_cifar.train.trainer import resumed_config

    first = fit(small_config(real_folder_small, tmp_path, epochs=1), verbose=0, echo=print)
    config = resumed_config(first.run_path, {"epochs": 2, "jit": "off", "weights": "none"})
    resumed = fit(config, resume_path=first.run_path, verbose=0, echo=print)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    saved = read_config_file(f"{first.run_path}/config.yaml")
    assert saved["epochs"] == 2 and saved["jit"] == "off" and saved["lr"] == 1e-3
    for change in ({"mixed_precision": "bf16"}, {"lr": 0.1}, {"batch_size": 8}):
        with pytest.raises(ConfigError, match="Cannot change"):
            resumed_config(first.run_path, change)


def test_summary_times_each_part_of_each_epoch(real_folder_small, tmp_path, monkeypatch):
    """summary.json's `time_parts_s` puts each epoch's time where it went: a checkpoint write made
    0.4 s slower shows in that epoch's `checkpoint.save` and `checkpoint`, a TensorBoard write made
    0.3 s slower and the hook that opens the evaluation 0.2 s slower in `tensorboard`, none in
    `train`, `evaluation` or `rest`; the parts add up to the epoch's `cycle`, and the run's phases
    to what `fit` did (the epochs' cycles among them)."""
    import time

    from keras_cifar.models.classifier import ImageClassifier
    from keras_cifar.train.tensorboard_callbacks import EpochTensorBoard, OriginalTags

    save, tags, test_begin = ImageClassifier.save, OriginalTags.on_epoch_end, EpochTensorBoard.on_test_begin

    def slow_save(self, *args, **kwargs):
        time.sleep(0.4)
        return save(self, *args, **kwargs)

    def slow_tags(self, *args, **kwargs):
        time.sleep(0.3)
        return tags(self, *args, **kwargs)

    def slow_test_begin(self, *args, **kwargs):  # a hook at the edge of the evaluation: not in `evaluation`
        time.sleep(0.2)
        return test_begin(self, *args, **kwargs)

    monkeypatch.setattr(ImageClassifier, "save", slow_save)
    monkeypatch.setattr(OriginalTags, "on_epoch_end", slow_tags)
    monkeypatch.setattr(EpochTensorBoard, "on_test_begin", slow_test_begin)
    result = fit(small_config(real_folder_small, tmp_path, train_images=60, eval_images=30), verbose=0,
                 echo=print)
    parts = result.summary["time_parts_s"]
    assert [epoch["epoch"] for epoch in parts["epochs"]] == [1, 2]
    for epoch in parts["epochs"]:
        assert 0.4 <= epoch["checkpoint.save"] <= epoch["checkpoint"]
        assert epoch["checkpoint"] >= epoch["checkpoint.save"] + epoch["checkpoint.state"] + \
            epoch["checkpoint.links"] + epoch["checkpoint.metrics_csv"] - 1e-6
        assert epoch["tensorboard"] >= 0.5
        assert epoch["train"] > 0 and epoch["evaluation"] > 0
        # `rest` is the cycle less the timed parts: a sleep counted twice (say, in `evaluation` too) makes it
        # negative, one counted nowhere makes it large
        assert -1e-3 <= epoch["rest"] < 0.2
        whole = sum(value for key, value in epoch.items() if key not in ("epoch", "cycle") and "." not in key)
        assert whole == pytest.approx(epoch["cycle"], abs=1e-9)
    run = parts["run"]
    assert list(run) == ["prepare", "fit_start", "epochs", "fit_end", "final_evaluation", "final_summaries"]
    assert run["epochs"] == pytest.approx(sum(epoch["cycle"] for epoch in parts["epochs"]))
    assert run["prepare"] == result.summary["prepare_s"]
    assert parts["started_at"] + sum(run.values()) <= parts["written_at"] + 1e-3
