"""`ImageClassifier`: the functional model class of the zoo, with a lean training step and an
optional captured forward graph.

Keras runs a functional model layer by layer through `Layer.__call__`, which costs tens of
microseconds of Python per layer and per step, and its generic train step adds the same again in
loss reduction, metric objects and the optimizer's bookkeeping: more than the arithmetic of a
small CIFAR network on a CPU, and on a GPU a host synchronisation wherever a Python number
becomes a tensor. This class keeps Keras's `fit`, callbacks, checkpoints and compile API, and
makes each step cost what a plain PyTorch loop costs:

- the forward pass replays a graph captured once (`graph_capture.ForwardGraphs`) through the
  model's own Keras layers: the same torch ops on the same variables;
- the loss is the compiled loss reduced inside torch's kernel (`batch_mean`, `batch_sum`), the
  loss and accuracy are added in place on the device (`step_runtime.DeviceMean`: one kernel each,
  the example counts kept on the host), and the logs are the running means as device tensors,
  or, in `fit` with the run's callbacks, computed only when a batch hook reads them;
- the optimizer is one of `keras_cifar.optim`'s, whose update is torch.optim's fused one.

Each step launches no more kernels than a tidy PyTorch loop of the same network and optimizer
(tests/test_ops_per_step.py; `python -m bench.ops_per_step`): on a GPU, where small networks
are bound by kernel launches, that is what their speed follows.

Anything outside that plan (sample weights, other compiled metrics or losses, regularisers)
takes Keras's generic path, which computes the same numbers more slowly.

Data-parallel training (`keras_cifar.train.data_parallel`, under torchrun) enters at two
points, absent in a single process: the training forward runs through torch's
`DistributedDataParallel` (whose reducer averages the gradients during `backward()`), and
`get_metrics_result` at the end of a training epoch or an evaluation sums the metric totals over
the ranks and averages the batch-norm statistics before any callback reads the logs. Keras 3.16's
own data parallelism on torch (a second DDP around the Keras model, a second reduction of the
metrics) is turned off: `_initialize_ddp` and `get_metrics_result` below say why.

On another Keras backend (a checkpoint loaded under TensorFlow or JAX) `predict` and `evaluate`
take Keras's standard steps and training raises an error naming the torch backend.
"""

import warnings

import keras
import torch

from keras_cifar import keras_internals
from keras_cifar._backend import on_torch, require_torch
from keras_cifar.models.graph_capture import ForwardGraphs, capturable
from keras_cifar._backend import PACKAGE
from keras_cifar.models.step_runtime import DeviceMean, StepRuntime

ACCURACY = "accuracy"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageClassifier(keras.Model):
    """A functional CIFAR classifier: raw RGB images in (0..255), logits out.

    `set_graph_capture(True)` makes `fit`, `evaluate` and `predict` replay a captured graph of the
    forward pass instead of calling the layers one by one; `compiled=True` hands that graph to
    torch.compile (`graph_capture`). It is a runtime setting, not saved with the model, as are
    `set_data_parallel` and the step plan (`step_runtime`). `compile` gives the classifier its own
    `loss` tracker, and with `metrics=["accuracy"]` its own accuracy (integer labels against
    logits): both updated on the device without Keras's metric machinery.
    """

    @property
    def step_runtime(self):
        runtime = self.__dict__.get("_step_runtime")
        if runtime is None:
            runtime = StepRuntime(self)
            object.__setattr__(self, "_step_runtime", runtime)  # runtime state: not tracked, never saved
        return runtime

    # --- compile and metrics

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        own_accuracy = on_torch() and metrics is not None and list(metrics) == [ACCURACY]
        super().compile(optimizer=optimizer, loss=loss, metrics=None if own_accuracy else metrics, **kwargs)
        runtime = self.step_runtime
        # Another backend runs Keras's own steps, which update Keras's loss tracker: keep it there.
        runtime.loss_tracker = DeviceMean(name="loss") if on_torch() else None
        runtime.accuracy_tracker = DeviceMean(name=ACCURACY) if own_accuracy else None
        runtime.plan = None

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.accuracy_tracker is not None:
            config["metrics"] = [ACCURACY]  # what reloading must compile again
        return config

    def compile_from_config(self, config):
        """What `keras.saving.load_model(..., compile=True)` calls (Keras skips it for models
        that override `compile` unless they override this too)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # so that the saved optimizer state loads

    @property
    def loss_tracker(self):
        return self.step_runtime.loss_tracker

    @property
    def accuracy_tracker(self):
        return self.step_runtime.accuracy_tracker

    @property
    def metrics(self):
        """The classifier's loss tracker in place of Keras's (both are named `loss`), the compiled
        metrics, then its accuracy."""
        own = [tracker for tracker in (self.loss_tracker, self.accuracy_tracker) if tracker is not None]
        keras_metrics = [metric for metric in super().metrics if metric.name != "loss"] if own else super().metrics
        return own[:1] + keras_metrics + own[1:]

    def lean_step_applies(self):
        """True when the lean step computes exactly what Keras's generic step would."""
        from keras_cifar.losses import SparseCrossentropy

        return (isinstance(self.loss, SparseCrossentropy)
                and self.metrics == [self.loss_tracker, self.accuracy_tracker]
                and not self.losses
                and not any(getattr(layer, "activity_regularizer", None)
                            for layer in keras_internals.all_layers(self)))

    # --- runtime settings

    def set_graph_capture(self, enabled, compiled=False):
        if enabled and not capturable(self):
            warnings.warn(f"{self.name}: a layer has a fixed random seed; running without graph capture.",
                          stacklevel=2)
            enabled = False
        self.step_runtime.graphs = ForwardGraphs(self, compiled) if enabled else None

    @property
    def graph_capture(self):
        return self.step_runtime.graphs is not None

    def set_data_parallel(self, parallel):
        """`parallel`: a `data_parallel.DataParallel` (or None: a single process)."""
        self.step_runtime.set_data_parallel(parallel)

    @property
    def data_parallel(self):
        return self.step_runtime.parallel

    def refresh_step_plan(self):
        """After a change of the trainable variables (`variable.trainable = False` at an epoch
        start): the next step gathers them again, and a data-parallel run rebuilds its DDP wrapper
        over them (every rank must call this at the same point)."""
        self.step_runtime.refresh()

    def forward_step(self, x, training):
        return self.step_runtime.forward(x, training)

    # --- metrics of a data-parallel run

    def reset_metrics(self):
        super().reset_metrics()
        self.step_runtime.metrics_reduced = False

    def get_metrics_result(self):
        """The metrics; in a data-parallel run reduced over the ranks first, once per epoch or
        evaluation (every rank calls this at the same points, so the collective matches).

        Computed here from each metric's public `result()`, as Keras's base trainer does, and not
        through `super()`: Keras 3.16's torch trainer all-reduces every metric variable again
        whenever a process group exists, at every call (a metric that is not a mean would come
        out multiplied by the number of ranks). One reduction on every Keras release: ours."""
        runtime = self.step_runtime
        if runtime.parallel is not None and not runtime.metrics_reduced and not runtime.in_step:
            runtime.metrics_reduced = True
            runtime.parallel.reduce_metrics(self.metrics)
        results = {}
        for metric in self.metrics:
            result = metric.result()
            results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras's (the generic steps': the compiled metrics updated, the logs read); the logs of a
        step are this rank's running values: the reduction over the ranks waits for the end of the
        epoch or evaluation, when the metrics hold every step."""
        self.step_runtime.in_step = True
        try:
            return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        finally:
            self.step_runtime.in_step = False

    def _initialize_ddp(self):
        """Keras 3.16's torch trainer wraps the model in a `DistributedDataParallel` of its own
        whenever a process group exists (from `make_train_function`, `make_test_function` and
        `make_predict_function`). Its forward is `Layer.__call__`, the layers one by one, which
        never runs the captured graph that the lean step trains through, so its reducer would
        average nothing the step computes (tests/test_distributed.py shows it). Data-parallel
        runs take `keras_cifar.train.data_parallel`'s DDP, over the captured forward, on every
        Keras release; this one stays unbuilt."""

    # --- steps

    def make_train_function(self, force=False):
        require_torch("Training a keras_cifar model")
        self.refresh_step_plan()  # trainable weights or compile settings may have changed
        return super().make_train_function(force)

    def make_test_function(self, force=False):
        self.step_runtime.plan = None
        return super().make_test_function(force)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        runtime = self.step_runtime
        logs_as_trackers = runtime.take_logs_as_trackers()
        plan = runtime.step_plan()
        if not plan.lean or sample_weight is not None:
            return self._generic_train_step(x, y, sample_weight)
        y_pred = runtime.training_forward(x)
        y = torch.as_tensor(y, device=y_pred.device)  # the same tensor when it already is one
        loss = self.loss.batch_mean(y, y_pred)
        for parameter in plan.parameters:
            parameter.grad = None
        runtime.backward(self.optimizer.scale_loss(loss))
        self.optimizer.apply([parameter.grad for parameter in plan.parameters], plan.trainable_weights)
        return self._track(loss, y, y_pred, logs_as_trackers=logs_as_trackers)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        runtime = self.step_runtime
        logs_as_trackers = runtime.take_logs_as_trackers()
        plan = runtime.step_plan()
        y_pred = self.forward_step(x, training=False)
        if not plan.lean or sample_weight is not None:
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=False)
            self.loss_tracker.update_state(loss, sample_weight=x.shape[0])
            self._update_accuracy(y, y_pred)
            return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        y = torch.as_tensor(y, device=y_pred.device)
        return self._track(self.loss.batch_sum(y, y_pred), y, y_pred, loss_is_sum=True,
                           logs_as_trackers=logs_as_trackers)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.forward_step(x, training=False)

    def _track(self, loss, y, y_pred, loss_is_sum=False, logs_as_trackers=False):
        """Adds the batch's loss and accuracy to the trackers, on the device; -> the step's logs: the
        running means, or the trackers themselves when the caller reads them only if needed
        (`logs_as_trackers`: the run's callback list, through `step_runtime.RunningMeans`)."""
        count = y_pred.shape[0]
        self.loss_tracker.add_batch(loss.detach(), count, scale=1 if loss_is_sum else count)
        self._update_accuracy(y, y_pred)
        trackers = [tracker for tracker in (self.loss_tracker, self.accuracy_tracker) if tracker is not None]
        if logs_as_trackers:
            return {tracker.name: tracker for tracker in trackers}
        return {tracker.name: tracker.running_mean() for tracker in trackers}

    def _update_accuracy(self, y, y_pred):
        if self.accuracy_tracker is not None:
            y = torch.as_tensor(y, device=y_pred.device)
            self.accuracy_tracker.add_batch((y_pred.detach().argmax(-1) == y.reshape(-1)).sum(), y_pred.shape[0])

    def _generic_train_step(self, x, y, sample_weight):
        """Keras's own train step (what `keras.Model.train_step` does on torch), with the
        captured forward, the classifier's trackers and, data-parallel, DDP's forward."""
        runtime = self.step_runtime
        y_pred = runtime.training_forward(x)
        self.zero_grad()
        loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
        self.loss_tracker.update_state(loss, sample_weight=x.shape[0])
        runtime.backward(self.optimizer.scale_loss(loss))
        trainable_weights = self.trainable_weights[:]
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in trainable_weights], trainable_weights)
        self._update_accuracy(y, y_pred)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


if not on_torch():  # Keras's own steps on another backend (JAX's take the model state as an argument)
    for _step in ("train_step", "test_step", "predict_step"):
        delattr(ImageClassifier, _step)
