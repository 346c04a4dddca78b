"""Every Keras internal that keras-cifar relies on, in one place.

Checked against **keras 3.15.1** (the floor in pyproject.toml, `keras>=3.15.1`) and **Keras 3.16**
(keras-nightly 3.16.0.dev2026102704; `bash .ci/compat.sh newest` runs the suite on it). Keras
promises nothing about these names between releases: `tests/test_keras_internals.py` checks that
each one below exists in the installed Keras (between its `since` and `until`, if any), that every
`keras.src` import in the code is listed here, and that the installed Keras is a checked release,
so an upgrade fails loudly in the tests instead of quietly in training.

A new Keras release: check every entry against it, add it to `KERAS_CHECKED`, then run the whole
suite (the parity and training tests compare the results of the code that uses these internals
with PyTorch's; tests/test_distributed.py checks that Keras's own data parallelism stays off).

Where a public API does the same job, the code uses it and the entry says which; the wrappers
below (`all_layers`, `has_fixed_seed`, `slot_variables`,
`optimizer_variables`, `optimizer_learning_rate`, `callbacks_run_async`, `current_device`,
`set_batch_norm_moments`, `batch_norm_moments_replaced`, `batch_norm_reduction_axes`) are what
modules should call instead of reaching into Keras themselves.
"""

import dataclasses

import keras

KERAS_CHECKED = ("3.15.1", "3.16.0.dev2026102704")  # the releases these entries were checked against
KERAS_REQUIREMENT = "keras>=3.15.1"  # as in pyproject.toml


@dataclasses.dataclass(frozen=True)
class Internal:
    name: str  # how the code spells it
    used_by: tuple  # files of this repository
    purpose: str  # what it is for
    public_alternative: str  # "" when Keras has none
    since: str = ""  # the first Keras release that has it (older ones lack it and never call it)
    until: str = ""  # the first Keras release without it (the code reaches the newer entry there)


INTERNALS = (
    Internal(
        "keras.Layer._flatten_layers",
        ("keras_cifar/models/classifier.py", "keras_cifar/models/graph_capture.py", "keras_cifar/models/init.py",
         "keras_cifar/models/convert.py"),
        "Every layer of a model, including the sub-layers inside the custom blocks (InceptionBlock, "
        "ResidualBlock): weight initialisation, weight copies by name, the fixed-seed check.",
        "none recursive: keras.Model.layers lists the top level only (see `all_layers` below).",
    ),
    Internal(
        "keras.Model._initialize_ddp",
        ("keras_cifar/models/classifier.py",),
        "Keras 3.16's torch trainer wraps the model in a DistributedDataParallel of its own whenever a process "
        "group exists; ImageClassifier overrides it with a no-op, since that DDP's forward (the Keras layers) "
        "never runs the captured graph the lean step trains through (train/data_parallel.py's DDP does).",
        "none: Keras builds it whenever torch.distributed is initialized (no switch).",
        since="3.16",
    ),
    Internal(
        "keras.random.SeedGenerator._initial_seed",
        ("keras_cifar/models/graph_capture.py",),
        "Whether a random layer (Dropout) was given a fixed seed, which graph capture would freeze.",
        "none (SeedGenerator.get_config()['seed'] reads the same attribute; see `has_fixed_seed` below).",
    ),
    Internal(
        "keras.optimizers.Adam._momentums",
        ("keras_cifar/optim/adam.py",),
        "Adam's first-moment slot variables, which torch.optim's update of TorchAdam/TorchAdamW updates in place.",
        "none by role: Optimizer.variables lists every slot flat (see `slot_variables` below).",
    ),
    Internal(
        "keras.optimizers.Adam._velocities",
        ("keras_cifar/optim/adam.py",),
        "Adam's second-moment slot variables, updated in place by TorchAdam/TorchAdamW.",
        "none by role (see `slot_variables` below).",
    ),
    Internal(
        "keras.optimizers.Adam._velocity_hats",
        (),
        "Adam's AMSGrad maxima of the second moments (with amsgrad=True), reached through `slot_variables`.",
        "none by role (see `slot_variables` below).",
    ),
    Internal(
        "keras.optimizers.SGD.momentums",
        (),
        "SGD's momentum buffers (public name, undocumented), reached through `slot_variables`.",
        "none by role (see `slot_variables` below).",
    ),
    Internal(
        "keras.optimizers.Optimizer._get_variable_index",
        ("keras_cifar/optim/adam.py", "keras_cifar/optim/sgd.py"),
        "The slot index of a trainable variable.",
        "none (see `slot_variables` below).",
    ),
    Internal(
        "keras.optimizers.Optimizer._trainable_variables",
        (),
        "The variables an optimizer was built for, in order (`apply` without variables), through "
        "`optimizer_variables`.",
        "none (Optimizer.variables holds the optimizer's own state, not the model's weights).",
    ),
    Internal(
        "keras.optimizers.Optimizer._learning_rate",
        (),
        "The learning rate as set: a schedule, a callable, or the variable of a constant, through "
        "`optimizer_learning_rate`.",
        "Optimizer.learning_rate: public, but evaluates a schedule at the current step (a device read).",
    ),
    Internal(
        "keras.callbacks.CallbackList._async_train",
        ("keras_cifar/train/callbacks.py",),
        "Set False (with `_async_test`, `_async_predict`) by RunCallbacks through `disable_async_dispatch`: "
        "Keras would otherwise hand every step's batch hooks to a thread pool, which costs a small "
        "model more than its step on a 2-core CPU, and convert the logs to Python numbers there.",
        "none: the `async_safe` protocol only chooses the thread; no public switch turns it off.",
    ),
    Internal(
        "keras.callbacks.CallbackList._async_test",
        ("keras_cifar/train/callbacks.py",),
        "The same for evaluation batch hooks.",
        "none.",
    ),
    Internal(
        "keras.callbacks.CallbackList._async_predict",
        ("keras_cifar/train/callbacks.py",),
        "The same for prediction batch hooks.",
        "none.",
    ),
    Internal(
        "keras.callbacks.CallbackList._executor",
        ("tests/test_step.py",),
        "The thread pool of asynchronous dispatch: None when RunCallbacks ran a whole `fit` in the "
        "training thread (what the test checks).",
        "none.",
    ),
    Internal(
        "keras.metrics.Mean.total",
        ("keras_cifar/models/step_runtime.py",),
        "The running sum of a Mean metric (the loss and accuracy trackers), added to in place on the device "
        "by the lean steps, through `mean_metric_state`.",
        "Mean.update_state: public, but converts and reduces through Keras ops (Python per step).",
    ),
    Internal(
        "keras.layers.BatchNormalization._moments",
        ("keras_cifar/train/data_parallel.py", "keras_cifar/models/batch_norm.py"),
        "The batch moments of a training step. `--sync-bn` replaces it on each BatchNormalization layer of "
        "the model being trained (an instance attribute, through `set_batch_norm_moments`) with moments over "
        "the global batch, summed across ranks by an autograd-aware all-reduce.",
        "none on torch: `BatchNormalization(synchronized=True)` raises NotImplementedError on the torch "
        "backend in 3.15, and keras.distribution is unavailable there.",
    ),
    Internal(
        "keras.layers.BatchNormalization._reduction_axes",
        ("keras_cifar/train/data_parallel.py",),
        "The axes a BatchNormalization layer reduces over (all but its `axis`), set in `build`; read by the "
        "synchronized moments (through `batch_norm_reduction_axes`).",
        "layer.axis (public): the complement over the input rank gives the same axes.",
    ),
    Internal(
        "keras.optimizers.Optimizer._iterations",
        ("keras_cifar/optim/torch_update.py",),
        "The step-count variable behind `Optimizer.iterations`, which keras_cifar's optimizers override to "
        "write the host's count first (`optimizer_iterations`). Keras's own `learning_rate` reads it directly.",
        "Optimizer.iterations (public), which is the overridden property here.",
    ),
    Internal(
        "keras.src.backend.torch.core.DEFAULT_DEVICE",
        ("tests/test_export.py",),
        "Keras's default torch device, set to 'meta' by a test to stand for a GPU machine's (where a new tensor "
        "made outside the CPU scope would land), on a machine without one.",
        "none: KERAS_TORCH_DEVICE is read once, at import.",
        until="3.16",
    ),
    Internal(
        "keras.src.backend.torch.ops.core.DEFAULT_DEVICE",
        ("tests/test_export.py",),
        "The same, where Keras 3.16 moved it.",
        "none (see above).",
        since="3.16",
    ),
    Internal(
        "keras.Variable._value",
        ("keras_cifar/models/conv.py", "keras_cifar/models/airbench94.py", "keras_cifar/optim/torch_update.py"),
        "The torch Parameter behind a Keras variable, replaced by one with the same values and another "
        "memory layout (`lay_out`): a convolution kernel stored as torch's (out, in, kh, kw) under Keras's "
        "(kh, kw, in, out) shape, so that autograd need not copy each kernel gradient into Keras's layout.",
        "none: Variable.assign copies values into the existing tensor, keeping its layout.",
    ),
    Internal(
        "keras.metrics.Mean.count",
        ("keras_cifar/models/step_runtime.py",),
        "The running count of a Mean metric, likewise.",
        "Mean.update_state (see `total`).",
    ),
)

# torch's private pieces (torch is pinned exactly in pyproject.toml), by the same rules:
TORCH_INTERNALS = (
    Internal(
        "torch._amp_foreach_non_finite_check_and_unscale_",
        ("keras_cifar/optim/loss_scale.py",),
        "Unscales the gradients and flags infinities on the device in one kernel (TorchLossScaleOptimizer, "
        "float16): what torch.amp.GradScaler.unscale_ calls.",
        "torch.amp.GradScaler: public, but keeps its own scale state, not Keras's checkpointed variables.",
    ),
    Internal(
        "torch._amp_update_scale_",
        ("keras_cifar/optim/loss_scale.py",),
        "Grows or backs off the loss scale on the device (what GradScaler.update calls).",
        "torch.amp.GradScaler (see above).",
    ),
    Internal(
        "torch.optim.Optimizer.found_inf",
        ("keras_cifar/optim/torch_update.py",),
        "Attribute that torch's fused Adam/AdamW/SGD read in `step()` to skip a step on the device "
        "(set by GradScaler.step).",
        "torch.amp.GradScaler.step (see above).",
    ),
)

# Replaced by public APIs (no longer used; kept here so nobody reintroduces them):
#   keras.src.backend.torch.core.get_device  ->  `current_device()` below (keras.ops places new
#       tensors on the device of the enclosing `keras.device` scope).
#   keras.src.callbacks.callback_list.CallbackList  ->  keras.callbacks.CallbackList.
#   keras.Model._compute_loss  ->  keras.Model.compute_loss(..., training=...) (ImageClassifier does not
#       override compute_loss, so the public method takes `training`).
#   keras.Model.get_metrics_result through super()  ->  ImageClassifier computes {name: result()} itself,
#       as Keras's base trainer does: Keras 3.16's torch trainer all-reduces the metric variables again on
#       every call when a process group exists (a count would come out times the number of ranks).
#   keras.Model._loss_tracker  ->  ImageClassifier's own keras.metrics.Mean(name="loss"), listed in its
#       `metrics` in place of Keras's (as Keras's guide to customizing `fit()` with PyTorch does).


# --- wrappers: call these instead of the internals ---------------------------------------------


def all_layers(model):
    """Every layer inside `model` (not the model itself), sub-layers of custom layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def has_fixed_seed(layer):
    """True when `layer` draws random numbers from a SeedGenerator given a fixed seed."""
    seed_generator = getattr(layer, "seed_generator", None)
    return seed_generator is not None and seed_generator._initial_seed is not None


# Slot roles and the attributes Keras keeps them in: Adam and AdamW (`_momentums`, `_velocities`,
# `_velocity_hats` with amsgrad), SGD with momentum (`momentums`).
_SLOT_ATTRIBUTES = {"momentum": ("_momentums", "momentums"), "velocity": ("_velocities",),
                    "velocity_hat": ("_velocity_hats",)}


def slot_variables(optimizer, variable):
    """The optimizer's slot variables of `variable` by role, as Keras variables: Adam and AdamW
    {"momentum", "velocity"} (plus "velocity_hat" with amsgrad), SGD with momentum {"momentum"}."""
    index = optimizer._get_variable_index(variable)
    slots = {}
    for role, attributes in _SLOT_ATTRIBUTES.items():
        for attribute in attributes:
            values = getattr(optimizer, attribute, None)
            if values:
                slots[role] = values[index]
                break
    return slots


def optimizer_variables(optimizer):
    """The trainable variables `optimizer` was built for, in order."""
    return list(optimizer._trainable_variables)


def optimizer_iterations(optimizer):
    """The optimizer's step-count variable itself, without going through a subclass's
    `iterations` property (keras_cifar's optimizers write their host count there when read)."""
    return optimizer._iterations


def optimizer_learning_rate(optimizer):
    """The learning rate as set: a LearningRateSchedule, a callable, or the Keras variable of a
    constant rate (without evaluating a schedule)."""
    return optimizer._learning_rate


def current_device():
    """The torch device Keras places new tensors on: that of the enclosing `keras.device(...)`
    scope, else Keras's default (cuda when available). Public API only."""
    return keras.ops.zeros(()).device


unpack_x_y_sample_weight = keras.utils.unpack_x_y_sample_weight  # public; for the custom steps


def lay_out(variable, order):
    """Re-lays the torch tensor behind the Keras `variable` so that `tensor.permute(order)` is
    contiguous; shape and values unchanged. Call it before the layer's torch module tracks the
    variable (in `build`), or before an optimizer hands the tensor to torch (its slots)."""
    import torch

    value = variable._value
    inverse = [order.index(axis) for axis in range(len(order))]
    laid_out = value.detach().permute(order).contiguous().permute(inverse)
    variable._value = torch.nn.Parameter(laid_out, requires_grad=value.requires_grad)


def mean_metric_state(metric):
    """The torch tensors (total, count) of a keras.metrics.Mean, which the lean steps update in
    place: `result()` is total / count, as after `update_state`."""
    return metric.total.value, metric.count.value


def disable_async_dispatch(callback_list):
    """Makes a keras.callbacks.CallbackList call every hook in the training thread: Keras would
    otherwise start a thread pool and hand it every step's batch hooks, which on a 2-core CPU
    costs more than a small model's step (measured in docs/PERFORMANCE.md)."""
    callback_list._async_train = callback_list._async_test = callback_list._async_predict = False


def is_batch_norm(layer):
    """True for Keras's BatchNormalization layers (public API)."""
    return isinstance(layer, keras.layers.BatchNormalization)


def set_batch_norm_moments(layer, moments):
    """Makes the BatchNormalization `layer` compute its training moments with `moments(inputs, mask)`
    -> (mean, variance), instead of its own `_moments` (this layer only, for this process)."""
    object.__setattr__(layer, "_moments", moments)


def batch_norm_moments_replaced(layer):
    """True when `set_batch_norm_moments` gave `layer` its own moments (`--sync-bn`)."""
    return "_moments" in layer.__dict__


def batch_norm_reduction_axes(layer):
    """The axes the built BatchNormalization `layer` reduces over."""
    return list(layer._reduction_axes)
