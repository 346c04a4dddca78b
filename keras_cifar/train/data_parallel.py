"""What a rank's training does in a data-parallel `fit`: torch's `DistributedDataParallel`.

- `prepare(model, config, group, echo, averaged_state)` broadcasts rank 0's variables and
  optimizer state, and gives the model a `DataParallel`, which wraps the model's training
  forward (the captured graph, or Keras's call) with its trainable parameters in a
  `torch.nn.Module` and hands it to `DistributedDataParallel`. The training step calls that
  wrapper for its forward and then a plain `loss.backward()`: DDP's reducer averages the
  gradients in buckets while the backward pass runs (NCCL on GPUs, gloo on CPUs).
- At the end of every training epoch and evaluation (`reduce_metrics`) the metric totals are
  summed over the ranks and the batch-norm statistics (non-trainable Parameters, outside the
  module DDP wraps, which holds the trainable ones only and no buffers), with `averaged_state`,
  averaged.
- `--sync-bn`: batch-norm moments over the global batch with autograd-aware collectives.
"""

import math
import types

import torch
from torch.nn.parallel import DistributedDataParallel

from keras_cifar.errors import TrainingError
from keras_cifar.train.process_group import current


class TrainingForward(torch.nn.Module):
    """The module DDP wraps: the model's trainable torch Parameters (the Keras variables' own
    tensors), and `forward(x)`, the model's training forward."""

    def __init__(self, parameters, forward):
        super().__init__()
        self.weights = torch.nn.ParameterList(parameters)
        self.run = forward

    def forward(self, x):
        return self.run(x, training=True)


class DataParallel:
    """A data-parallel model's side of the training step (`model.set_data_parallel`): calling it
    runs the training forward through DDP."""

    def __init__(self, model, group, averaged_state=(), sync_bn=False):
        from keras_cifar import keras_internals

        self.group = group
        self.model = model
        self.averaged_state = list(averaged_state)
        self.batch_norm_state = [variable.value for layer in keras_internals.all_layers(model)
                                 if keras_internals.is_batch_norm(layer)
                                 for variable in (layer.moving_mean, layer.moving_variance)]
        self.module = None
        self.parameters = []
        self.trained = False
        self.steps = 0
        if sync_bn:
            for layer in keras_internals.all_layers(model):
                if keras_internals.is_batch_norm(layer):
                    keras_internals.set_batch_norm_moments(layer, types.MethodType(_global_moments, layer))

    def wrap(self, forward):
        """(Re)builds the DDP wrapper when the model's trainable variables differ from those it
        wraps. Every rank must call this at the same point (DDP's constructor is collective)."""
        parameters = [variable.value for variable in self.model.trainable_weights]
        if self.module is not None and list(map(id, parameters)) == list(map(id, self.parameters)):
            return
        self.module = None  # the old reducer lets go of its gradient hooks
        self.parameters = parameters
        self.module = DistributedDataParallel(TrainingForward(parameters, forward), init_sync=False,
                                              gradient_as_bucket_view=True)

    def __call__(self, x):
        self.trained = True
        self.steps += 1
        return self.module(x)

    def reduce_metrics(self, metrics):
        """The end of a training epoch or an evaluation, before any callback reads the logs."""
        with torch.no_grad():
            if self.trained:
                average_(self.batch_norm_state + self.averaged_state, self.group)
                self.trained = False
            sum_([variable.value for metric in metrics for variable in metric.variables], self.group)


def _flat(tensors):
    return torch.cat([tensor.detach().reshape(-1).to(torch.float64) for tensor in tensors])


def sum_(tensors, group):
    """Sums each tensor over the ranks, in place (one collective)."""
    if not tensors:
        return
    flat = _flat(tensors)
    group.dist.all_reduce(flat)
    _unflatten_into(flat, tensors)


def average_(tensors, group):
    """Averages each tensor over the ranks, in place (one collective)."""
    if not tensors:
        return
    flat = _flat(tensors)
    group.dist.all_reduce(flat)
    _unflatten_into(flat / group.world_size, tensors)


def _unflatten_into(flat, tensors):
    offset = 0
    for tensor in tensors:
        count = tensor.numel()
        tensor.copy_(flat[offset:offset + count].view(tensor.shape).to(tensor.dtype))
        offset += count


def broadcast_variables(model, group):
    """Rank 0's model variables (weights, batch-norm statistics) and, once built, its optimizer
    state (slots, step count, loss scale) on every rank."""
    variables = list(model.weights)  # trainable and non-trainable; no metrics, no seed states
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        if not optimizer.built:  # built on every rank, so that every rank broadcasts the same list
            optimizer.build(model.trainable_variables)
        variables += list(optimizer.variables)
    layout = [(tuple(v.shape), str(v.dtype)) for v in variables]
    layouts = group.all_gather(layout)
    if any(other != layout for other in layouts):
        rank = next(r for r, other in enumerate(layouts) if other != layouts[0])
        raise TrainingError(f"Rank {rank}'s model or optimizer variables differ from rank 0's "
                            f"({len(layouts[rank])} against {len(layouts[0])} variables); cannot start.")
    with torch.no_grad():
        for variable in variables:
            tensor = variable.value.data
            if tensor.dtype in _BROADCASTABLE:  # not the uint32 seed states, which no collective takes
                group.dist.broadcast(tensor, src=0)


_BROADCASTABLE = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                  torch.uint8, torch.int8, torch.bool)


def _global_moments(layer, inputs, mask):
    """Keras BatchNormalization's moments over the global batch (`--sync-bn`): the per-channel sums
    of x and x*x are summed over the ranks by an autograd-aware all-reduce (its backward
    all-reduces the gradients, so every rank's loss sees every rank's images through the
    statistics), then mean = S1/N and variance = S2/N - mean^2, Keras's own formula on torch.
    Every rank has the same batch size at every step (equal shards), so N is the local count
    times the world size."""
    from torch.distributed.nn.functional import all_reduce

    from keras_cifar import keras_internals

    if mask is not None:
        raise ValueError("sync_bn does not support masked batch normalization.")
    axes = keras_internals.batch_norm_reduction_axes(layer)
    channels = math.prod(inputs.shape[a] for a in range(inputs.ndim) if a not in axes)
    count = inputs.numel() // channels * current().world_size
    sums = all_reduce(torch.cat([inputs.sum(dim=axes), inputs.square().sum(dim=axes)]))
    mean = sums[:channels] / count
    return mean, sums[channels:] / count - mean.square()


def prepare(model, config, group, echo, averaged_state=()):
    """Makes `model` train data-parallel over `group` (a no-op for a single process).
    `averaged_state`: tensors averaged over the ranks with the batch-norm statistics at every
    epoch end (the lookahead optimizer's averages of them), or a function that gives them once
    the optimizer is built (this builds it)."""
    if not group.distributed:
        return None
    if config.sync_bn and model.graph_capture:
        model.set_graph_capture(False)
        echo("sync_bn: graph capture is off (the captured graph cannot hold the statistics' collectives); the "
             "forward runs eagerly through Keras.")
    broadcast_variables(model, group)
    if callable(averaged_state):
        averaged_state = averaged_state()
    parallel = DataParallel(model, group, averaged_state, sync_bn=config.sync_bn)
    model.set_data_parallel(parallel)
    if getattr(group, "heartbeat", None) is not None:
        group.heartbeat.progress = lambda: parallel.steps
    return parallel


def describe_run(config, group):
    return (f"Data parallel: {group.world_size} processes ({group.backend}), batch_size {config.batch_size} "
            f"images per process per step, global batch {config.batch_size * group.world_size}; the learning "
            f"rate is used as given ({config.lr:g}), not rescaled."
            + (" Batch-norm statistics over the global batch (sync_bn)." if config.sync_bn else ""))
