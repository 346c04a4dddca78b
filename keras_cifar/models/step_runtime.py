"""`StepRuntime`: what an `ImageClassifier` needs to run its steps and is never saved with it.

One plain object per model, outside Keras's attribute tracking: the captured forward graphs,
the data-parallel wrapper, the step plan, and the classifier's own metric trackers.
"""

import contextlib

import torch

from keras_cifar import keras_internals

_EAGER = contextlib.nullcontext()


class StepPlan:
    """What a lean step needs, gathered once per `fit` or `refresh_step_plan()` (walking the
    layers costs Python)."""

    def __init__(self, model, runtime):
        self.trainable_weights = model.trainable_weights
        self.parameters = [variable.value for variable in self.trainable_weights]
        self.loss_total, self.loss_count = keras_internals.mean_metric_state(runtime.loss_tracker)
        accuracy = runtime.accuracy_tracker
        self.correct, self.seen = keras_internals.mean_metric_state(accuracy) if accuracy else (None, None)
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
        with self.graphs.fuser if self.graphs is not None else _EAGER:
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
