"""`ImageClassifier`: the functional model class of the zoo, with an optional
captured forward graph for training and inference steps.

Keras runs a functional model layer by layer through `Layer.__call__`, which
costs tens of microseconds of Python per layer and per step: more than the
arithmetic of a small CIFAR network on a CPU. With graph capture on, the first
batch of each kind (training or inference, dtype, device) is traced once with
`torch.jit.trace` through the model's own Keras `__call__`, and later steps
replay that graph: the same torch ops on the same variables, so losses,
gradients, batch-norm statistics and dropout are those of eager Keras.
"""

import warnings

import keras
import torch
from keras.src.trainers.data_adapters import data_adapter_utils

from keras_cifar.models.layers import PACKAGE


class _Forward(torch.nn.Module):
    def __init__(self, model, training):
        super().__init__()
        self.model = model
        self.training_flag = training

    def forward(self, x):
        return self.model(x, training=self.training_flag)


def _capturable(model):
    """Seeded random layers draw their seed as a Python int: a trace would freeze it."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        seed_generator = getattr(layer, "seed_generator", None)
        if seed_generator is not None and seed_generator._initial_seed is not None:
            return False
    return True


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageClassifier(keras.Model):
    """A functional CIFAR classifier: raw RGB images in (0..255), logits out.

    `set_graph_capture(True)` makes `fit`, `evaluate` and `predict` replay a
    traced graph of the forward pass instead of calling the layers one by
    one. It is a runtime setting, not saved with the model.
    """

    def set_graph_capture(self, enabled):
        if enabled and not _capturable(self):
            warnings.warn(f"{self.name}: a layer has a fixed random seed; running without graph capture.",
                          stacklevel=2)
            enabled = False
        object.__setattr__(self, "_graph_capture", bool(enabled))
        object.__setattr__(self, "_graphs", {})

    @property
    def graph_capture(self):
        return getattr(self, "_graph_capture", False)

    def forward_step(self, x, training):
        if not self.graph_capture or not isinstance(x, torch.Tensor):
            return self(x, training=training)
        key = (training, x.dtype, x.device, x.ndim, keras.config.dtype_policy().name)
        graph = self._graphs.get(key)
        if graph is None:
            # Tracing runs the forward once: keep its batch-norm updates out of the state,
            # so that the first step updates the statistics once, as every later step does.
            # The state tensors are kept once here: walking the layers for them every step
            # would cost more Python than the small models' arithmetic.
            object.__setattr__(self, "_state_tensors", [v.value for v in self.non_trainable_variables])
            state = [tensor.detach().clone() for tensor in self._state_tensors]
            with warnings.catch_warnings():
                # torch.jit.trace is deprecated in favour of torch.compile, which
                # cannot yet compile Keras's layer machinery without graph breaks.
                warnings.simplefilter("ignore")
                graph = torch.jit.trace(_Forward(self, training), (x,), check_trace=False)
            with torch.no_grad():
                for tensor, value in zip(self._state_tensors, state):
                    tensor.copy_(value)
            self._graphs[key] = graph
        outputs = graph(x)
        if training:
            self._detach_state()
        return outputs

    def _detach_state(self):
        """A replayed graph writes the new batch-norm statistics with an in-place copy that
        autograd records (the trace does not keep Keras's `no_grad` around it), which leaves
        them attached to the step's graph: memory held from step to step, and Keras fails
        when it next collects the variables as torch parameters. Make them leaves again."""
        for tensor in self._state_tensors:
            if tensor.grad_fn is not None:
                tensor.detach_()

    def train_step(self, data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        y_pred = self.forward_step(x, training=True)
        self.zero_grad()
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        self._loss_tracker.update_state(loss, sample_weight=x.shape[0])
        loss = self.optimizer.scale_loss(loss)
        loss.backward()
        trainable_weights = self.trainable_weights[:]
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in trainable_weights], trainable_weights)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def test_step(self, data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        y_pred = self.forward_step(x, training=False)
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        self._loss_tracker.update_state(loss, sample_weight=x.shape[0])
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def predict_step(self, data):
        x, _, _ = data_adapter_utils.unpack_x_y_sample_weight(data)
        return self.forward_step(x, training=False)
