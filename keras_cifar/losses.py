"""The training loss, where models and training both import it."""

import keras
import torch
from keras import ops

from keras_cifar._backend import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels, with PyTorch's label smoothing
    (`(1 - s) * nll(label) + s * mean over classes of nll(class)`), computed in float32 by
    torch's own kernel."""

    def __init__(self, label_smoothing=0.0, name="sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        if keras.backend.backend() != "torch":
            return self._portable_call(y_true, y_pred)
        return torch.nn.functional.cross_entropy(y_pred.float(), y_true.reshape(-1).long(), reduction="none",
                                                 label_smoothing=self.label_smoothing)

    def batch_mean(self, y_true, y_pred):
        """`call(...).mean()` in fewer kernels (torch backend): the reduction inside torch's kernel.
        With label smoothing torch's mean reduction adds three kernels (a count of the labels it
        does not ignore, and a division), where the sum scaled by 1 / batch adds one."""
        if self.label_smoothing:
            return self.batch_sum(y_true, y_pred) * (1.0 / y_pred.shape[0])
        return torch.nn.functional.cross_entropy(y_pred.float(), y_true.reshape(-1).long())

    def batch_sum(self, y_true, y_pred):
        """`call(...).sum()` in fewer kernels (torch backend)."""
        return torch.nn.functional.cross_entropy(y_pred.float(), y_true.reshape(-1).long(), reduction="sum",
                                                 label_smoothing=self.label_smoothing)

    def _portable_call(self, y_true, y_pred):
        """The same loss in `keras.ops`, for evaluating a checkpoint on another backend."""
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        labels = ops.expand_dims(ops.cast(ops.reshape(y_true, (-1,)), "int32"), -1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, labels, axis=-1), -1)
        if not self.label_smoothing:
            return nll
        return (1 - self.label_smoothing) * nll - self.label_smoothing * ops.mean(log_probs, axis=-1)

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config


def build_loss(config):
    return SparseCrossentropy(label_smoothing=config.label_smoothing)
