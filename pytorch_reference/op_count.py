"""Counting the kernels a training step launches, and the tidy PyTorch steps it is compared with.

On a GPU the zoo's networks are small enough that a training step is bound by kernel launches:
each costs a few microseconds whatever its size, so the step's speed follows how many ops it
dispatches. That count is the same on a CPU: `KernelOpCounter`, a `TorchDispatchMode`, counts
every aten op that reaches a kernel, leaving out exactly those listed in `EXCLUDED` (they launch
none). Ops that an op's own kernel calls inside it are not seen, on either side of a comparison.

The yardsticks, what a careful PyTorch user writes for the same network and optimizer, fed what
keras-cifar's loader feeds (raw uint8 NHWC batches on the device, preprocessed per batch) and
summing the loss and the correct predictions on the device (`loss_sum += loss`, `correct +=
(argmax == y).sum()`, the example count a Python number):
- `TidyStep`: the zoo's PyTorch originals (`originals.py`), torch.optim's fused Adam or SGD, in
  channels-last (the raw NHWC batch permuted is channels-last already);
- `AirbenchStep`: airbench94's and airbench95's own network, loss (summed), SGD with parameter
  groups, schedule and lookahead (`airbench_torch.py`), the lookahead step apart;
- `AirbenchMuonStep`: airbench94_muon's network, its two optimizers and its Muon
  (`airbench_muon_torch.py`).
"""

import collections
import contextlib

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pytorch_reference import originals

# The aten ops that launch no kernel, by name (besides every view op: `OpOverload.is_view`).
EXCLUDED = {
    "_unsafe_view": "a view that autograd does not track as one",
    "detach": "an alias without autograd history",
    "alias": "a view",
    "lift_fresh": "marks a constant tensor, no data moved",
    "empty": "an allocation (no kernel: the caching allocator)",
    "empty_strided": "an allocation",
    "empty_like": "an allocation",
    "new_empty": "an allocation",
    "new_empty_strided": "an allocation",
    "_local_scalar_dense": "reads a number back to the host (a synchronisation, counted by host_syncs.py)",
    "_record_function_enter_new": "a profiler marker",
    "_record_function_exit": "a profiler marker",
}


def launches_kernel(func):
    return not func.is_view and func.overloadpacket.__name__ not in EXCLUDED


class KernelOpCounter(TorchDispatchMode):
    """`with KernelOpCounter() as counter: ...` -> `counter.total`, and `counter.ops` by op name."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    @property
    def total(self):
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if launches_kernel(func):
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(function, *args):
    """-> the KernelOpCounter of one call of `function(*args)`."""
    with KernelOpCounter() as counter:
        function(*args)
    return counter


def autocast_context(device, mixed_precision):
    if mixed_precision in (None, "none"):
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision])


class _DeviceSums:
    """The loss and the correct predictions summed on the device, as a tidy loop keeps them (the
    mean loss of the epoch: `loss_sum / steps`; its accuracy: `correct / seen`)."""

    def __init__(self, device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0

    def add(self, loss, outputs, labels):
        self.loss_sum += loss.detach()
        self.correct += (outputs.detach().argmax(1) == labels).sum()
        self.seen += len(labels)


class TidyStep:
    """A tidy PyTorch training step and evaluation step of a zoo model's original: raw uint8 NHWC
    batches scaled per batch as the original's transforms (resized when `resize_to`), the network
    in channels-last, cross-entropy with the config's label smoothing, torch.optim's fused Adam
    (`adam`, `adamw`) or SGD (`sgd`)."""

    def __init__(self, name, optimizer="adam", lr=1e-3, momentum=0.0, nesterov=False, weight_decay=0.0,
                 label_smoothing=0.0, resize_to="default", mixed_precision="none", device="cpu", num_classes=10):
        self.name, self.device = name, torch.device(device)
        _, self.scaling, default_size = originals.REFERENCES[name]
        self.size = default_size if resize_to == "default" else resize_to
        self.module = originals.create_reference(name, num_classes).to(self.device, memory_format=torch.channels_last)
        parameters = self.module.parameters()
        if optimizer == "sgd":
            self.optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=nesterov,
                                             weight_decay=weight_decay, fused=True)
        else:
            torch_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
            self.optimizer = torch_class(parameters, lr=lr, weight_decay=weight_decay, fused=True)
        self.label_smoothing = label_smoothing
        self.autocast = autocast_context(device, mixed_precision)
        mean = torch.tensor(originals.CIFAR10_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(originals.CIFAR10_STD, device=self.device).view(1, 3, 1, 1) * 255
        self.mean, self.std = mean, std
        self.sums = _DeviceSums(self.device)

    def prepare(self, images):
        x = images.permute(0, 3, 1, 2).float()
        if self.scaling == "unit":
            x = x / 255
        elif self.scaling == "symmetric":
            x = x / 127.5 - 1
        else:
            x = (x - self.mean) / self.std
        if self.size and self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x

    def train_step(self, images, labels):
        self.module.train()
        with self.autocast:
            outputs = self.module(self.prepare(images))
            loss = F.cross_entropy(outputs, labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.sums.add(loss, outputs, labels)

    @torch.no_grad()
    def eval_step(self, images, labels):
        self.module.eval()
        with self.autocast:
            outputs = self.module(self.prepare(images))
            loss = F.cross_entropy(outputs, labels, label_smoothing=self.label_smoothing)
        self.sums.add(loss, outputs, labels)


def _normalize_raw(images):
    """airbench's normalisation (torchvision's Normalize after ToTensor) of a raw uint8 NHWC batch."""
    from pytorch_reference import airbench_torch

    x = images.permute(0, 3, 1, 2).float()
    mean = (airbench_torch.CIFAR_MEAN * 255).to(x.device).view(1, 3, 1, 1)
    std = (airbench_torch.CIFAR_STD * 255).to(x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class AirbenchStep:
    """airbench94's (or airbench95's, `variant`) training step as its own program runs it
    (`airbench_torch.train`): its network in channels-last, the summed label-smoothed loss, SGD
    with Nesterov momentum and its two parameter groups, the LambdaLR schedule, and every 5th
    step the lookahead update (`lookahead_step`, counted apart). Fed raw uint8 NHWC batches,
    normalised per batch."""

    def __init__(self, variant="airbench94", total_steps=100, mixed_precision="none", device="cpu"):
        from pytorch_reference import airbench_torch as ab

        self.device = torch.device(device)
        with ab.variant(variant):
            hyp = ab.hyp
            batch_size = hyp["opt"]["batch_size"]
            momentum = hyp["opt"]["momentum"]
            kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
            lr = hyp["opt"]["lr"] / kilostep_scale
            wd = hyp["opt"]["weight_decay"] * batch_size / kilostep_scale
            lr_biases = lr * hyp["opt"]["bias_scaler"]
            self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=hyp["opt"]["label_smoothing"], reduction="none")
            self.model = ab.make_net(self.device, "fp32", torch.channels_last)
        norm_biases = [p for k, p in self.model.named_parameters() if "norm" in k and p.requires_grad]
        other = [p for k, p in self.model.named_parameters() if "norm" not in k and p.requires_grad]
        self.optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                                          dict(params=other, lr=lr, weight_decay=wd / lr)],
                                         momentum=momentum, nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.alpha_schedule = 0.95 ** 5 * (torch.arange(total_steps + 1) / total_steps) ** 3
        self.lookahead = ab.LookaheadState(self.model)
        self.autocast = autocast_context(device, mixed_precision)
        self.steps = 0
        self.sums = _DeviceSums(self.device)

    def train_step(self, images, labels):
        self.model.train()
        with self.autocast:
            outputs = self.model(_normalize_raw(images))
            loss = self.loss_fn(outputs, labels).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        self.sums.add(loss, outputs, labels)

    def lookahead_step(self):
        """What airbench adds every 5th step, after that step."""
        self.lookahead.update(self.model, decay=self.alpha_schedule[self.steps].item())

    @torch.no_grad()
    def eval_step(self, images, labels):
        self.model.eval()
        with self.autocast:
            outputs = self.model(_normalize_raw(images))
            loss = self.loss_fn(outputs, labels).sum()
        self.sums.add(loss, outputs, labels)


class AirbenchMuonStep:
    """airbench94_muon's training step as its own program runs it (`airbench_muon_torch`): its
    network, the summed label-smoothed loss, the linear schedules set on the host, SGD and Muon.
    Fed raw uint8 NHWC batches, normalised per batch."""

    def __init__(self, total_steps=100, whiten_bias_steps=30, mixed_precision="none", device="cpu"):
        from pytorch_reference import airbench_muon_torch as muon

        self.muon = muon
        self.device = torch.device(device)
        self.model = muon.new_model(self.device, torch.channels_last, "fp32")
        self.optimizers = muon.make_optimizers(self.model)
        self.total_steps, self.whiten_bias_steps = total_steps, whiten_bias_steps
        self.autocast = autocast_context(device, mixed_precision)
        self.steps = 0
        self.sums = _DeviceSums(self.device)

    def train_step(self, images, labels):
        self.model.train()
        outputs, loss = self.muon.train_step(self.model, self.optimizers, _normalize_raw(images), labels, self.steps,
                                             self.total_steps, self.whiten_bias_steps, lambda: self.autocast)
        self.steps += 1
        self.sums.add(loss, outputs, labels)

    @torch.no_grad()
    def eval_step(self, images, labels):
        self.model.eval()
        with self.autocast:
            outputs = self.model(_normalize_raw(images))
            loss = F.cross_entropy(outputs, labels, label_smoothing=0.2, reduction="sum")
        self.sums.add(loss, outputs, labels)


# --- the comparison: keras-cifar's steps against the yardstick of the same model ---------------------

ZOO = ("cnn", "inception_lite", "resnet_lite", "googlenet", "resnet18")
AIRBENCH = ("airbench94", "airbench94_muon", "airbench95")
SMALL_SIZE = 32  # googlenet and resnet18 counted at this `resize_to`: the ops are those of 224x224


def random_batch(batch_size, device="cpu", seed=0):
    """Raw uint8 NHWC images and int64 labels on `device`, as keras-cifar's loader gives them."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch_size, 32, 32, 3), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (batch_size,), generator=generator)
    return images.to(device), labels.to(device)


def keras_cifar_counts(name, mixed_precision="none", batch_size=32, warmup=3, device="cpu", overrides=None):
    """KernelOpCounters of keras-cifar's steps for the model `name` with its config's optimizer and
    settings, as `fit` runs them (`train_function`, `test_function` on one batch, the logs left
    for the batch hooks to read): after `warmup` steps (the graph captured), one training step
    (`train`), and for a lookahead recipe the step that pulls (`lookahead`), then one evaluation
    step (`eval`)."""
    import keras_cifar  # noqa: F401  (the torch backend before keras)
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.device import set_precision
    from keras_cifar.train.trainer import build_model, compile_model

    settings = {"model": name, "batch_size": batch_size, "mixed_precision": mixed_precision, **(overrides or {})}
    if name in ("googlenet", "resnet18"):
        settings["resize_to"] = SMALL_SIZE
    if name == "resnet18":
        settings["weights"] = "none"
    config = resolve_config(None, settings)
    set_precision(config.mixed_precision, device)
    try:
        model = build_model(config, 10)
        compile_model(model, config, steps_per_epoch=100)
        model.set_graph_capture(config.jit in ("graph", "graph-compiled"), compiled=config.jit == "graph-compiled")
        images, labels = random_batch(batch_size, device)
        model.make_train_function()
        model.make_test_function()

        def as_fit_runs_it(function):
            """The step as `fit` runs it with the run's callback list, which reads the step's
            logs only when a batch hook asks (`logs_as_trackers`)."""
            def step():
                model.step_runtime.logs_as_trackers = True
                return function([(images, labels)])
            return step

        train, evaluate = as_fit_runs_it(model.train_function), as_fit_runs_it(model.test_function)
        every = config.lookahead or 0
        for _ in range(warmup):
            train()
        while every and (model.optimizer.host_iterations() + 1) % every == 0:
            train()  # the counted plain step is not a pulling one
        counts = {"train": count_ops(train)}
        if every:
            while (model.optimizer.host_iterations() + 1) % every:
                train()
            counts["lookahead"] = count_ops(train)
        evaluate()
        counts["eval"] = count_ops(evaluate)
        counts["fit's batch hooks"] = _batch_hook_counts(model, config, train)
        return counts
    finally:
        set_precision("none", device)


def _batch_hook_counts(model, config, train):
    """The ops of the batch hooks of `fit`'s callbacks (the run's own: the NaN guard's record, the
    clock, the progress bar) around one training step: beside the step, not in it."""
    import tempfile

    from keras_cifar.data import Split, TensorLoader
    from keras_cifar.train.callbacks import RunCallbacks
    from keras_cifar.train.trainer import make_callbacks, new_run_state

    split = Split(torch.zeros((config.batch_size, 32, 32, 3), dtype=torch.uint8).numpy(),
                  torch.zeros(config.batch_size, dtype=torch.int64).numpy())
    loader = TensorLoader(split, config.batch_size)
    with tempfile.TemporaryDirectory() as run_path:
        callbacks, nan_guard = make_callbacks(config, run_path, new_run_state(), loader, eval_is_test=True)
        nan_guard.check_seconds = float("inf")  # its read every 5 s is not a per-step cost
        callback_list = RunCallbacks(callbacks, model=model, epochs=1, steps=100, verbose=2)
        callback_list.on_epoch_begin(0)
        for step in range(2):  # the second, in steady state
            counter = KernelOpCounter()
            with counter:
                callback_list.on_train_batch_begin(step)
            logs = train()  # the step itself, not counted here
            with counter:
                callback_list.on_train_batch_end(step, logs)
    return counter


def yardstick_counts(name, mixed_precision="none", batch_size=32, warmup=3, device="cpu"):
    """The same KernelOpCounters for the yardstick of `name`."""
    import keras_cifar  # noqa: F401
    from keras_cifar.train.config import resolve_config

    config = resolve_config(None, {"model": name})
    images, labels = random_batch(batch_size, device)
    if name in AIRBENCH:
        every = config.lookahead or 0
        if name == "airbench94_muon":
            step = AirbenchMuonStep(mixed_precision=mixed_precision, device=device)
        else:
            step = AirbenchStep(name, mixed_precision=mixed_precision, device=device)
    else:
        every = 0
        resize_to = SMALL_SIZE if name in ("googlenet", "resnet18") else "default"
        step = TidyStep(name, config.optimizer, config.lr, config.momentum, config.nesterov,
                        config.weight_decay or 0.0, config.label_smoothing, resize_to, mixed_precision, device)
    for _ in range(warmup):
        step.train_step(images, labels)
    counts = {"train": count_ops(step.train_step, images, labels)}
    if every:
        def pulling_step():
            step.train_step(images, labels)
            step.lookahead_step()

        counts["lookahead"] = count_ops(pulling_step)
    step.eval_step(images, labels)
    counts["eval"] = count_ops(step.eval_step, images, labels)
    return counts
