"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2`: k steps of data-parallel
training with batch B per process, against (on rank 0, afterwards) one process with batch 2B on
the same data order. Writes what the test checks to a JSON file.

Usage: torchrun --standalone --nproc_per_node=2 tests/distributed_equivalence.py DATA.npz OUT.json
"""

import json
import sys
import tempfile
import types

import keras_cifar  # noqa: F401  (first: selects Keras's torch backend)
import keras
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pytorch_reference.host_syncs import counting_callback
from keras_cifar import keras_internals
from keras_cifar.data import Split, TensorLoader
from keras_cifar.train import data_parallel, distributed
from keras_cifar.train.config import resolve_config
from keras_cifar.train.device import seed_everything
from keras_cifar.train.callbacks import RunCallbacks
from keras_cifar.train.trainer import build_model, compile_model, make_callbacks, new_run_state

CASES = [
    # name, config overrides, batch per process, steps
    ("cnn", {"model": "cnn"}, 8, 4),
    ("resnet18", {"model": "resnet18", "resize_to": 32, "weights": "none"}, 4, 3),
    ("resnet18-sync-bn", {"model": "resnet18", "resize_to": 32, "weights": "none", "sync_bn": True}, 4, 3),
    # the fast recipe's optimizer: batch-norm biases at 64x, Nesterov, lookahead (every 2 steps here)
    ("airbench94", {"model": "airbench94", "mixed_precision": "none", "nesterov": True, "bn_bias_lr_scale": 64.0,
              "lookahead": 2, "epochs": 1}, 4, 3),
    # airbench94_muon.yaml's optimizer: Muon on the kernels (its Newton-Schulz step in bfloat16), SGD with the head at 12.6x
    ("airbench94-muon", {"model": "airbench94", "head": "muon", "optimizer": "muon", "muon_lr": 0.02, "mixed_precision": "none",
                   "nesterov": True, "head_lr_scale": 12.6, "lookahead": 0, "epochs": 1}, 4, 3),
]
COMMON = {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "seed": 5, "jit": "graph", "device": "cpu"}


def batches(split, batch_size, steps, rank, world_size):
    loader = TensorLoader(split, batch_size, shuffle=True, seed=11, device="cpu", rank=rank, world_size=world_size)
    loader.set_epoch(0)
    return [batch for _, batch in zip(range(steps), loader)]


def fresh_model(config, steps_per_epoch):
    seed_everything(config.seed)
    model = build_model(config, 10)
    compile_model(model, config, steps_per_epoch)
    return model


def batch_norm_values(model):
    return [v.value for layer in keras_internals.all_layers(model) if keras_internals.is_batch_norm(layer)
            for v in (layer.moving_mean, layer.moving_variance)]


def ghost_batch_step(model, images, labels, parts):
    """One process, one step on 2B images that computes what `parts` processes without sync_bn
    compute: batch statistics per part of B (rank r's images are images[r::parts]), the loss the
    mean of the parts' losses, the moving statistics the mean of the parts' updates. Each part's
    backward runs before the next part resets the statistics (torch's batch-norm kernel keeps
    them for its backward)."""
    state = batch_norm_values(model)
    start = [t.detach().clone() for t in state]
    ends = []
    weights = model.trainable_weights
    for v in weights:
        v.value.grad = None
    for part in range(parts):
        with torch.no_grad():
            for tensor, value in zip(state, start):
                tensor.copy_(value)
        logits = model(images[part::parts], training=True)
        (model.loss.call(labels[part::parts], logits).mean() / parts).backward()
        ends.append([t.detach().clone() for t in state])
    with torch.no_grad():
        for index, tensor in enumerate(state):
            tensor.copy_(sum(end[index] for end in ends) / parts)
    model.optimizer.apply([v.value.grad for v in weights], weights)


def split_sum_moments(layer, inputs, mask, parts=2):
    """Keras's moments over the whole batch, with the per-channel sums added up part by part as
    the all-reduce of `parts` processes adds them (rank r's images are inputs[r::parts]). Keras's
    variance formula, E[x^2] - E[x]^2, cancels badly over the 8 values per channel that
    resnet18's last stage sees at 32x32 with a batch of 8, so even in one process a different
    summation order moves the weights by up to 3e-2 after 3 steps (measured): the reference has to
    add in the same order to show what the collectives do."""
    axes = keras_internals.batch_norm_reduction_axes(layer)
    channels = inputs.shape[1] if axes == [0, 2, 3] else inputs.shape[-1]
    count = inputs.numel() // channels
    sums = sum(torch.cat([inputs[part::parts].sum(dim=axes), inputs[part::parts].square().sum(dim=axes)])
               for part in range(parts))
    mean = sums[:channels] / count
    return mean, sums[channels:] / count - mean.square()


def global_moments_against_one_process(group):
    """`--sync-bn`'s moments and their gradients, on a well-conditioned random batch: each rank
    holds half of it; one process computes the same from the whole batch with torch alone."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, 5, 5, generator=generator) * 3 + 1
    weights = torch.randn(4, 5, 5, generator=generator)
    layer = keras.layers.BatchNormalization(axis=1)
    layer.build((None, 4, 5, 5))

    def objective(inputs, mean, variance):  # any function of the normalised batch
        return (weights * (inputs - mean[:, None, None]) / torch.sqrt(variance[:, None, None] + 1e-3)).square().sum()

    mine = x[group.rank::group.world_size].clone().requires_grad_()
    mean, variance = data_parallel._global_moments(layer, mine, None)
    objective(mine, mean, variance).backward()
    gradients = group.all_gather(mine.grad)
    whole = x.clone().requires_grad_()
    expected_mean, expected_variance = whole.mean(dim=(0, 2, 3)), whole.var(dim=(0, 2, 3), unbiased=False)
    sum(objective(whole[r::group.world_size], expected_mean, expected_variance)
        for r in range(group.world_size)).backward()
    merged = torch.empty_like(x)
    for rank, gradient in enumerate(gradients):
        merged[rank::group.world_size] = gradient
    relative = lambda a, b: float((a - b).abs().max() / b.abs().max())  # noqa: E731
    return {"mean": relative(mean.detach(), expected_mean.detach()),
            "variance": relative(variance.detach(), expected_variance.detach()),
            "gradient": relative(merged, whole.grad)}


def trained_reference(config, split, batch_size, steps, moments=None):
    """One process, batch 2B, the same images in the same order."""
    reference = fresh_model(config, steps)
    if moments is not None:
        for layer in keras_internals.all_layers(reference):
            if keras_internals.is_batch_norm(layer):
                keras_internals.set_batch_norm_moments(layer, types.MethodType(moments, layer))
    for images, labels in batches(split, 2 * batch_size, steps, 0, 1):
        if batch_norm_values(reference) and not config.sync_bn:
            ghost_batch_step(reference, images, labels, parts=2)
        else:
            reference.train_on_batch(images, labels)
    return reference.get_weights()


def steady_state_host_syncs(split, group, folder):
    """20 data-parallel steps of `fit` with the run's callbacks: host synchronisations counted."""
    config = resolve_config(None, {**COMMON, "model": "cnn", "batch_size": 4, "epochs": 1})
    loader = TensorLoader(split, config.batch_size, shuffle=True, seed=1, device="cpu", rank=group.rank,
                          world_size=group.world_size)
    model = fresh_model(config, len(loader))
    model.set_graph_capture(True)
    distributed.prepare(model, config, group, echo=lambda message: None)
    callbacks, _ = make_callbacks(config, folder, new_run_state(), loader, eval_is_test=True)
    window = counting_callback(first=2, steps=min(20, len(loader) - 3))
    model.fit(loader.as_keras_input(), epochs=1, verbose=0, shuffle=False,
              callbacks=RunCallbacks(callbacks + [window], model=model, epochs=1, steps=len(loader), verbose=2))
    return dict(window.counter.calls)


def averaged_state(model):
    """What trainer.py passes to `prepare`: the lookahead's averages of the batch-norm statistics."""
    return model.optimizer.model_state_averages


class FreezeAt(keras.callbacks.Callback):
    """At the start of `epoch`, on every rank: a kernel leaves the trainable set, as the airbench
    whitening bias freeze does, and the model is told (`refresh_step_plan`)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.wrappers = []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.frozen = self.model.trainable_weights[0]
            self.frozen.trainable = False
            self.model.refresh_step_plan()
            self.value = np.asarray(self.frozen.numpy()).copy()
        self.wrappers.append(self.model.data_parallel.module)


def frozen_mid_run(split, group):
    """`fit` for 3 epochs on the ranks' own shards (different images), a kernel frozen at the start
    of epoch 1: DDP rebuilt over the new trainable set, training goes on, the ranks stay equal."""
    config = resolve_config(None, {**COMMON, "model": "cnn", "batch_size": 8, "epochs": 3})
    loader = TensorLoader(split, config.batch_size, shuffle=True, seed=2, device="cpu", rank=group.rank,
                          world_size=group.world_size)
    model = fresh_model(config, len(loader))
    model.set_graph_capture(True)
    distributed.prepare(model, config, group, echo=lambda message: None)
    start = [np.asarray(w).copy() for w in model.get_weights()]
    freeze = FreezeAt(1)
    model.fit(loader.as_keras_input(), epochs=3, verbose=0, shuffle=False, callbacks=[freeze])
    mine = [np.asarray(w) for w in model.get_weights()]
    everyone = group.all_gather(mine)
    first, second, third = freeze.wrappers
    return {
        "ddp": all(isinstance(wrapper, DistributedDataParallel) for wrapper in freeze.wrappers),
        "rebuilt": second is not first and third is second,
        "wrapped": len(list(model.data_parallel.module.parameters())),
        "trainable": len(model.trainable_weights),
        "frozen_moved": float(np.abs(freeze.frozen.numpy() - freeze.value).max()),
        "rank_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(*everyone)),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(mine, start)),
    }


class ImagesSeen(keras.metrics.Metric):
    """A metric that is not a mean: how many images it was updated with. Reduced once over the
    ranks it is the global count; reduced twice, twice that; not reduced, the rank's own."""

    def __init__(self, name="images_seen"):
        super().__init__(name=name)
        self.images = self.add_variable((), initializer="zeros", name="images")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.images.assign_add(keras.ops.cast(keras.ops.shape(y_pred)[0], "float32"))

    def result(self):
        return keras.ops.copy(self.images)


def metrics_reduced_once(split, group):
    """`fit` (the ranks' own shards) and a sharded `evaluate` of a model compiled with accuracy and
    `ImagesSeen` (Keras's compiled metrics, the generic step), then the same evaluation in one
    process (rank 0, the data-parallel wrapper taken off)."""
    config = resolve_config(None, {**COMMON, "model": "cnn", "batch_size": 8, "epochs": 1})
    train = TensorLoader(split, config.batch_size, shuffle=True, seed=4, device="cpu", rank=group.rank,
                         world_size=group.world_size)
    held_out = Split(split.images[:23], split.labels[:23])
    sharded = TensorLoader(held_out, 4, device="cpu", rank=group.rank, world_size=group.world_size,
                           even_shards=False)
    model = fresh_model(config, len(train))
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), ImagesSeen()])
    model.set_graph_capture(True)
    distributed.prepare(model, config, group, echo=lambda message: None)
    history = model.fit(train.as_keras_input(), epochs=1, verbose=0, shuffle=False)
    evaluated = model.evaluate(sharded.as_keras_input(), verbose=0, return_dict=True)
    result = {"fit_images_seen": history.history["images_seen"][-1],
              "train_images": len(train) * config.batch_size * group.world_size,
              "evaluate": evaluated, "test_images": len(held_out.labels)}
    if group.rank == 0:
        model.set_data_parallel(None)
        whole = TensorLoader(held_out, 4, device="cpu")
        result["evaluate_one_process"] = model.evaluate(whole.as_keras_input(), verbose=0, return_dict=True)
    return group.all_gather(result)


class CountingGraphs:
    """Stands in for a model's captured forward graphs and counts the calls."""

    def __init__(self, graphs):
        self.graphs = graphs
        self.calls = 0

    def __call__(self, x, training):
        self.calls += 1
        return self.graphs(x, training)


def keras_own_ddp(split, group):
    """Keras 3.16's torch trainer builds `DistributedDataParallel(model)` around the Keras model
    from `make_train_function` whenever a process group exists: whether it is built here, and
    which forward each DDP runs on a step's images (the captured graph's calls counted)."""
    config = resolve_config(None, {**COMMON, "model": "cnn", "batch_size": 8})
    model = fresh_model(config, 1)
    model.set_graph_capture(True)
    distributed.prepare(model, config, group, echo=lambda message: None)
    counter = CountingGraphs(model.step_runtime.graphs)
    model.step_runtime.graphs = counter
    ((images, labels),) = batches(split, config.batch_size, 1, group.rank, group.world_size)
    model.make_train_function()
    keras_ddp_built = getattr(model, "ddp_model", None) is not None
    model.train_on_batch(images, labels)
    ours = counter.calls
    # What Keras 3.16's `_initialize_ddp` builds, built here by hand so that this runs on any Keras.
    keras_style = DistributedDataParallel(model, find_unused_parameters=False)
    with torch.no_grad():  # no backward follows
        keras_style(images, training=True)
    return {"keras_ddp_built": keras_ddp_built, "graph_calls_our_ddp": ours,
            "graph_calls_keras_style_ddp": counter.calls - ours,
            "keras_style_wraps": type(keras_style.module).__name__}


def main(data_path, out_path):
    arrays = np.load(data_path)
    split = Split(arrays["images"], arrays["labels"])
    results = {}
    with distributed.session(resolve_config(None, {**COMMON, "model": "cnn"})) as group:
        assert group.world_size == 2, group.world_size
        with tempfile.TemporaryDirectory() as folder:
            results["host_syncs"] = group.all_gather(steady_state_host_syncs(split, group, folder))
        results["sync_bn_moments"] = global_moments_against_one_process(group)
        results["frozen_mid_run"] = frozen_mid_run(split, group)
        results["metrics_reduced_once"] = metrics_reduced_once(split, group)
        results["keras_own_ddp"] = group.all_gather(keras_own_ddp(split, group))
        for name, overrides, batch_size, steps in CASES:
            config = resolve_config(None, {**COMMON, **overrides, "batch_size": batch_size})
            model = fresh_model(config, steps)
            model.set_graph_capture(True)
            distributed.prepare(model, config, group, echo=lambda message: None, averaged_state=averaged_state(model))
            for images, labels in batches(split, batch_size, steps, group.rank, group.world_size):
                model.train_on_batch(images, labels)
            model.data_parallel.reduce_metrics([])  # what the end of an epoch does: averages the BN statistics
            mine = [np.asarray(w) for w in model.get_weights()]
            everyone = group.all_gather(mine)
            if group.rank != 0:
                continue
            rank_difference = max(float(np.max(np.abs(a - b))) for a, b in zip(*everyone))
            plain = trained_reference(config, split, batch_size, steps)
            expected = trained_reference(config, split, batch_size, steps, split_sum_moments) if config.sync_bn \
                else plain
            if config.sync_bn:  # how far a mere change of summation order moves the reference itself
                results[name + "-reference-spread"] = max(float(np.abs(a - b).max()) for a, b in zip(plain, expected))
            start = fresh_model(config, steps).get_weights()
            moved = [np.abs(b - s) for b, s in zip(expected, start)]
            results[name] = {
                "rank_difference": rank_difference,
                "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(mine, expected)),
                "max_difference_plain_keras_moments": max(float(np.abs(a - b).max()) for a, b in zip(mine, plain)),
                "max_moved": max(float(m.max()) for m in moved),
                "graph_capture": model.graph_capture,
                "ddp": isinstance(model.data_parallel.module, DistributedDataParallel),
                "weights": len(mine),
            }
        if group.rank == 0:
            with open(out_path, "w") as handle:
                json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:3])
