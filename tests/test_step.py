"""The training step: no host synchronisation in steady state, the lean step equal to Keras's
generic one, and the run's callback list that hands batch hooks device tensors."""

import contextlib

import keras
import numpy as np
import pytest
import torch

from pytorch_reference.host_syncs import HostSyncCounter, counting_callback
from keras_cifar.data import Split, TensorLoader
from keras_cifar.train.callbacks import NaNGuard, RunCallbacks
from keras_cifar.train.config import resolve_config
from keras_cifar.train.tensorboard_callbacks import EpochTensorBoard
from keras_cifar.train.trainer import build_model, compile_model, make_callbacks, new_run_state


def random_split(count, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count))


STEP_CASES = [
    ("cnn", {}),
    ("resnet_lite", {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "one-cycle", "augment": True,
                     "label_smoothing": 0.1, "normalize": True}),
    ("googlenet", {"resize_to": 32, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
                   "schedule": "cosine", "warmup_epochs": 1}),
]


@pytest.mark.parametrize("model_name,overrides", STEP_CASES, ids=[case[0] for case in STEP_CASES])
def test_steady_state_training_step_makes_no_host_sync(model_name, overrides, tmp_path):
    """20 steps of `fit` with the run's callbacks (progress written per epoch, as in a log file):
    no value read back to the host and no tensor made from Python numbers. On a GPU each would
    stall the step until the device caught up."""
    config = resolve_config(None, {"model": model_name, "batch_size": 8, "epochs": 1, **overrides})
    loader = TensorLoader(random_split(8 * 26), config.batch_size, shuffle=True, augment=config.augment, seed=0)
    model = build_model(config, 10)
    compile_model(model, config, len(loader))
    model.set_graph_capture(True)
    callbacks, nan_guard = make_callbacks(config, str(tmp_path), new_run_state(), loader, eval_is_test=True)
    nan_guard.check_seconds = float("inf")  # its periodic read (every 5 s) is not a per-step one
    window = counting_callback(first=3, steps=20)
    model.fit(loader.as_keras_input(), epochs=1, verbose=0, shuffle=False,
              callbacks=RunCallbacks(callbacks + [window], model=model, epochs=1, steps=len(loader), verbose=2))
    assert window.counter.total == 0, dict(window.counter.calls)


def test_host_sync_counter_sees_what_keras_generic_step_does(tmp_path):
    """The counter is not blind: Keras's stock step with a Keras SGD reads the learning rate back."""
    config = resolve_config(None, {"model": "cnn", "batch_size": 8, "epochs": 1})
    loader = TensorLoader(random_split(8 * 26), config.batch_size)
    model = build_model(config, 10)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    window = counting_callback(first=3, steps=20)
    model.fit(loader.as_keras_input(), epochs=1, verbose=0, callbacks=[window])
    assert window.counter.total >= 20, dict(window.counter.calls)


def _twins(config):
    first = build_model(config, 10)
    second = build_model(config, 10)
    second.set_weights(first.get_weights())
    for model in (first, second):
        compile_model(model, config, steps_per_epoch=10)
        model.set_graph_capture(True)
    return first, second


@pytest.mark.parametrize("overrides", [{}, {"label_smoothing": 0.1, "optimizer": "sgd", "momentum": 0.9}])
def test_lean_step_equals_keras_generic_step(overrides, monkeypatch):
    """The lean step (loss `call` averaged in torch, metrics accumulated in place) takes the same
    steps and reports the same loss and accuracy as Keras's generic loss and metric path."""
    config = resolve_config(None, {"model": "resnet_lite", **overrides})
    lean, generic = _twins(config)
    monkeypatch.setattr(type(generic), "lean_step_applies",
                        lambda self: False if self is generic else True)
    split = random_split(96, seed=1)
    for step in range(3):
        batch = slice(32 * step, 32 * (step + 1))
        lean_logs = lean.train_on_batch(split.images[batch], split.labels[batch], return_dict=True)
        generic_logs = generic.train_on_batch(split.images[batch], split.labels[batch], return_dict=True)
        assert lean_logs["loss"] == pytest.approx(generic_logs["loss"], rel=1e-6)
        assert lean_logs["accuracy"] == pytest.approx(generic_logs["accuracy"], abs=1e-7)
    assert lean.step_runtime.step_plan().lean and not generic.step_runtime.step_plan().lean
    for a, b in zip(lean.get_weights(), generic.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    lean_eval = lean.evaluate(split.images, split.labels, batch_size=50, return_dict=True, verbose=0)
    generic_eval = generic.evaluate(split.images, split.labels, batch_size=50, return_dict=True, verbose=0)
    assert lean_eval["loss"] == pytest.approx(generic_eval["loss"], rel=1e-6)
    assert lean_eval["accuracy"] == generic_eval["accuracy"]


def test_sample_weights_take_the_generic_step():
    config = resolve_config(None, {"model": "cnn"})
    model, twin = _twins(config)
    split = random_split(32, seed=2)
    weights = np.zeros(32, "float32")
    weights[:8] = 1.0
    logs = model.train_on_batch(split.images, split.labels, sample_weight=weights, return_dict=True)
    twin_logs = twin.train_on_batch(split.images[:8], split.labels[:8], return_dict=True)
    # Keras's sum_over_batch_size: the weighted sum over all 32 images, divided by 32
    assert logs["loss"] == pytest.approx(twin_logs["loss"] * 8 / 32, rel=1e-5)



def test_the_classifier_tracks_its_own_loss_and_reloads_with_it(tmp_path):
    """`metrics` lists the classifier's own `loss` tracker in place of Keras's, then its accuracy;
    a saved and reloaded checkpoint compiles the same and goes on training, its step plan cached
    in the runtime until `refresh_step_plan()`."""
    config = resolve_config(None, {"model": "cnn"})
    model, _ = _twins(config)
    assert model.metrics == [model.loss_tracker, model.accuracy_tracker]
    assert model.metrics_names == ["loss", "accuracy"]
    split = random_split(32, seed=3)
    logs = model.train_on_batch(split.images, split.labels, return_dict=True)
    assert float(model.loss_tracker.result()) == pytest.approx(logs["loss"], rel=1e-6)
    plan = model.step_runtime.step_plan()
    assert model.step_runtime.step_plan() is plan
    model.refresh_step_plan()
    assert model.step_runtime.step_plan() is not plan
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.metrics_names == ["loss", "accuracy"] and reloaded.metrics[0] is reloaded.loss_tracker
    assert reloaded.step_runtime.step_plan().lean
    reloaded.train_on_batch(split.images, split.labels)

def test_run_callbacks_hand_batch_hooks_device_tensors_in_the_training_thread(tmp_path):
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(type(logs["loss"]))

    config = resolve_config(None, {"model": "cnn", "batch_size": 8})
    loader = TensorLoader(random_split(32), 8)
    model = build_model(config, 10)
    compile_model(model, config, len(loader))
    board = EpochTensorBoard(str(tmp_path))
    callbacks = RunCallbacks([NaNGuard(), board, Probe()], model=model, epochs=1, steps=len(loader), verbose=2)
    assert [hook.__self__ for hook in callbacks._hooks["on_train_batch_end"]][:3] == callbacks.callbacks[:3]
    model.fit(loader.as_keras_input(), epochs=1, verbose=2, callbacks=callbacks)
    assert seen == [torch.Tensor] * 4
    assert callbacks._executor is None  # no thread pool was started


def test_nan_guard_finds_the_first_bad_step_on_the_device():
    """The logs' loss is the epoch's running mean: non-finite from the first bad step on."""
    guard = NaNGuard(check_seconds=float("inf"))
    guard.set_model(type("M", (), {"stop_training": False})())
    guard.on_epoch_begin(2)
    losses = torch.tensor([1.0, 2.0, float("nan"), 3.0, float("inf")])
    for batch, loss in enumerate(losses.cumsum(0) / torch.arange(1, 6)):
        guard.on_train_batch_end(batch, {"loss": loss})
    assert guard.bad_step is None  # not read yet: no synchronisation until a check
    guard.on_epoch_end(2, {"loss": float("nan")})
    assert guard.bad_step == (3, 3) and guard.model.stop_training


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_loss_scaling_without_host_syncs_equals_keras_loss_scaling(device, pinned_device):
    """fp16's dynamic loss scaling, done on the device, follows Keras's LossScaleOptimizer step for
    step: unscaled updates, a skipped update and a halved scale on an infinite gradient, a
    doubled scale after `dynamic_growth_steps` finite ones."""
    from keras_cifar.optim import TorchAdam, TorchLossScaleOptimizer

    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 5)).astype("float32")
    ours_var, keras_var = keras.Variable(start.copy()), keras.Variable(start.copy())
    assert ours_var.value.device.type == pinned_device == device
    ours = TorchLossScaleOptimizer(TorchAdam(1e-2), initial_scale=64.0, dynamic_growth_steps=3)
    reference = keras.optimizers.LossScaleOptimizer(TorchAdam(1e-2), initial_scale=64.0, dynamic_growth_steps=3)
    scales, counter = [], HostSyncCounter()
    for step in range(8):
        gradient = torch.tensor(rng.normal(size=(3, 5)).astype("float32") * 64.0 * 2.0 ** (step // 3),
                                device=ours_var.value.device)
        if step == 4:
            gradient[1, 2] = np.inf
        with counter if step else contextlib.nullcontext():  # the first call builds the optimizer
            ours.apply([gradient.clone()], [ours_var])
        reference.apply([gradient.clone()], [keras_var])
        scales.append((float(ours.dynamic_scale.numpy()), float(reference.dynamic_scale.numpy())))
        np.testing.assert_allclose(ours_var.numpy(), keras_var.numpy(), rtol=1e-6, atol=1e-7)
    assert [a for a, _ in scales] == [b for _, b in scales]
    assert scales[2][0] == 128.0 and scales[4][0] == 64.0  # grew after 3 finite steps, halved on inf
    assert int(ours.iterations.numpy()) == int(reference.iterations.numpy()) == 7  # the inf step was skipped
    assert counter.total == 0, dict(counter.calls)


@pytest.mark.parametrize("name", ["cnn", "googlenet"])
def test_the_captured_graph_replays_eager_keras_on_the_model_s_own_variables(name):
    """One graph, captured by torch.export, serves every batch size above 1 (the last partial
    batch too); it reads the model's variables themselves (not copies), holds none of export's
    shape assertions or `.to()` calls that change nothing, and its outputs, gradients and
    batch-norm statistics (googlenet) are eager Keras's, bit for bit, dropout included."""
    from keras_cifar.models import graph_capture

    settings = {"model": name, "batch_size": 8, "jit": "off"}
    if name == "googlenet":
        settings["resize_to"] = 32
    config = resolve_config(None, settings)
    model = build_model(config, 10)
    split = random_split(9, seed=3)
    images = torch.as_tensor(split.images)
    model(images[:2], training=False)
    graphs = graph_capture.ForwardGraphs(model)
    state = [variable.value.detach().clone() for variable in model.non_trainable_variables]

    def run(forward, batch):
        for variable, value in zip(model.non_trainable_variables, state):
            variable.value.data.copy_(value)
        for variable in model.trainable_variables:
            variable.value.grad = None
        torch.manual_seed(7)
        outputs = forward(batch)
        outputs.square().sum().backward()
        return ([outputs.detach()] + [variable.value.grad.clone() for variable in model.trainable_variables]
                + [variable.value.detach().clone() for variable in model.non_trainable_variables])

    for size in (8, 5):  # a full batch and a last partial one
        captured = run(lambda batch: graphs(batch, True), images[:size])
        eager = run(lambda batch: model(batch, training=True), images[:size])
        for mine, theirs in zip(captured, eager, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert len(graphs.graphs) == 1  # the size-5 batch replayed the size-8 batch's graph
    (module,) = graphs.graphs.values()
    bound = {id(tensor) for tensor in (*module.parameters(), *module.buffers())}
    # every variable but a dropout layer's Keras seed state (torch's dropout draws from torch's generator)
    unbound = [variable.path for variable in model.variables if id(variable.value) not in bound]
    assert len(unbound) == (name == "googlenet") and all(path.endswith("/seed_generator_state") for path in unbound)
    targets = [node.target for node in module.graph.nodes if node.op == "call_function"]
    assert torch.ops.aten._assert_tensor_metadata.default not in targets
    assert torch.ops.aten.lift_fresh_copy.default not in targets
    conversions = [node for node in module.graph.nodes if node.target in graph_capture._CONVERSIONS]
    assert all(not graph_capture._changes_nothing(node) for node in conversions)
    assert len(conversions) == 1  # the uint8 images to float
    graphs(images[:1], False)
    assert len(graphs.graphs) == 2  # inference: a graph of its own; a batch of 1 ...
    graphs(images[:1], False)
    graphs(images[:3], False)
    assert len(graphs.graphs) == 3  # ... and one for every larger batch


def test_graph_compiled_trains_as_the_captured_graph_does():
    """`jit: graph-compiled` hands the captured graph to torch.compile (Inductor): on the CPU
    here, its steps stay within float32 rounding of the op-by-op replay's."""
    config = resolve_config(None, {"model": "cnn", "batch_size": 8, "optimizer": "sgd", "lr": 0.05})
    split = random_split(16, seed=3)
    images, labels = torch.as_tensor(split.images), torch.as_tensor(split.labels)
    weights = None
    results = []
    for compiled in (False, True):
        keras.utils.set_random_seed(0)
        model = build_model(config, 10)
        compile_model(model, config, steps_per_epoch=2)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.set_graph_capture(True, compiled=compiled)
        for step in range(2):
            model.train_on_batch(images[8 * step:8 * (step + 1)], labels[8 * step:8 * (step + 1)])
        results.append(model.get_weights())
        kind = type(next(iter(model.step_runtime.graphs.graphs.values()))).__name__
        assert kind == ("OptimizedModule" if compiled else "CapturedForward"), kind
    for replayed, compiled in zip(*results):
        np.testing.assert_allclose(compiled, replayed, rtol=1e-4, atol=1e-5)
    assert any(not np.array_equal(after, before) for after, before in zip(results[0], weights))


def test_captured_and_eager_steps_of_a_model_with_dropout_are_the_same():
    """Capturing the forward draws nothing from the random generators: a captured run and an eager
    run of googlenet (dropout before its head) from the same seed draw the same dropout masks, take
    the same steps and leave the generator in the same state. (A capture that ran the forward
    with the generator live drew a mask of its own, shifting every later one.)"""
    config = resolve_config(None, {"model": "googlenet", "resize_to": 32, "optimizer": "sgd", "lr": 0.05})
    captured, eager = _twins(config)
    eager.set_graph_capture(False)
    split = random_split(48, seed=4)
    images, labels = torch.as_tensor(split.images), torch.as_tensor(split.labels)
    states = []
    for model in (captured, eager):
        torch.manual_seed(7)
        for step in range(3):
            model.train_on_batch(images[16 * step:16 * (step + 1)], labels[16 * step:16 * (step + 1)])
        states.append(torch.get_rng_state())
    assert captured.graph_capture and not eager.graph_capture
    assert torch.equal(states[0], states[1])
    for a, b in zip(captured.get_weights(), eager.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
