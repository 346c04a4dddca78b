"""`StepRuntime`: what an `ImageClassifier` needs to run its steps and is never saved with it.

One plain object per model, outside Keras's attribute tracking: the captured forward graphs,
the data-parallel wrapper, the step plan, and the classifier's own metric trackers
(`DeviceMean`).
"""

import collections.abc

import keras
import torch

from keras_cifar import keras_internals


class DeviceMean(keras.metrics.Mean):
    """A running mean (the classifier's loss and accuracy) that a lean step updates with one
    kernel: `add_batch` adds the batch's total to `total` in place on the device, and the batch's
    size, which the host knows, to a Python count (`examples`) that is written into `count`
    whenever the metric is read (`result`, `variables`)."""

    def __init__(self, name):
        super().__init__(name=name)
        self.examples = 0  # added by `add_batch` since the last reset
        self.examples_written = 0

    def add_batch(self, total, count, scale=1):
        """`total` (a device tensor) times `scale`, over `count` more examples."""
        keras_internals.mean_metric_state(self)[0].add_(total, alpha=scale)
        self.examples += count

    def running_mean(self):
        """The mean of what `add_batch` added since the reset: one division, on the device."""
        return keras_internals.mean_metric_state(self)[0] / self.examples

    def write_count(self):
        if self.examples != self.examples_written:
            with torch.no_grad():
                keras_internals.mean_metric_state(self)[1].add_(self.examples - self.examples_written)
            self.examples_written = self.examples

    def result(self):
        self.write_count()
        return super().result()

    def reset_state(self):
        super().reset_state()
        self.examples = self.examples_written = 0

    @property
    def variables(self):
        self.write_count()
        return super().variables


class RunningMeans(collections.abc.Mapping):
    """A step's logs when it returned its trackers (`logs_as_trackers`): each tracker's running mean,
    computed on the device when read. Read them in the batch hook that receives them."""

    def __init__(self, logs):
        self.logs = logs

    def __getitem__(self, name):
        value = self.logs[name]
        return value.running_mean() if isinstance(value, DeviceMean) else value

    def __iter__(self):
        return iter(self.logs)

    def __len__(self):
        return len(self.logs)


class StepPlan:
    """What a lean step needs, gathered once per `fit` or `refresh_step_plan()` (walking the
    layers costs Python)."""

    def __init__(self, model, runtime):
        self.trainable_weights = model.trainable_weights
        self.parameters = [variable.value for variable in self.trainable_weights]
        self.lean = model.lean_step_applies()


class StepRuntime:
    def __init__(self, model):
        self.model = model
        self.graphs = None  # graph_capture.ForwardGraphs, or None: the forward calls the Keras model
        self.parallel = None  # data_parallel.DataParallel, or None: a single process
        self.plan = None
        self.loss_tracker = None  # set by compile
        self.accuracy_tracker = None  # with compile(metrics=["accuracy"])
        self.metrics_reduced = False
        self.in_step = False  # inside a step's `compute_metrics`: no reduction over the ranks
        # Set before a step by whoever reads its logs only when needed (`RunningMeans`): that step
        # returns its trackers, not their running means (a division each, per step).
        self.logs_as_trackers = False

    def take_logs_as_trackers(self):
        """Whether this step returns its trackers as its logs; the request lasts one step."""
        requested, self.logs_as_trackers = self.logs_as_trackers, False
        return requested

    def forward(self, x, training):
        if self.graphs is None or not isinstance(x, torch.Tensor):
            return self.model(x, training=training)
        return self.graphs(x, training)

    def training_forward(self, x):
        """Through DDP in a data-parallel run, so that its reducer averages the gradients of the
        backward pass that follows."""
        if self.parallel is None:
            return self.forward(x, training=True)
        return self.parallel(x)

    def backward(self, loss):
        loss.backward()

    def step_plan(self):
        if self.plan is None:
            self.plan = StepPlan(self.model, self)
        return self.plan

    def set_data_parallel(self, parallel):
        self.parallel = parallel
        self.refresh()

    def refresh(self):
        """Drops the step plan; the DDP wrapper follows the current trainable variables."""
        self.plan = None
        if self.parallel is not None:
            self.parallel.wrap(self.forward)
