"""The TensorBoard summaries of a training run: Keras's, per epoch, and the original scripts' tags."""

import math

import keras

from keras_cifar.tensorflow_cpu import import_tensorflow
from keras_cifar.train import storage


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, logging per epoch. With `update_freq="epoch"` its batch hooks
    write nothing; they only count steps, so the training step hands them no logs. The hooks that
    open, write or close event files raise `storage.WriteFailed` when the disk refuses the write."""

    time_part = "tensorboard"  # RunTimes' part for this callback's hooks

    def __init__(self, log_dir):
        super().__init__(log_dir=log_dir, write_graph=False, update_freq="epoch")

    def _writing(self):
        return storage.writing("the TensorBoard events", self.log_dir)

    def on_train_begin(self, logs=None):
        with self._writing():
            super().on_train_begin(logs)

    def on_test_begin(self, logs=None):
        with self._writing():
            super().on_test_begin(logs)

    def on_test_end(self, logs=None):
        with self._writing():
            super().on_test_end(logs)

    def on_epoch_end(self, epoch, logs=None):
        with self._writing():
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        with self._writing():
            super().on_train_end(logs)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, None)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, None)


class OriginalTags(keras.callbacks.Callback):
    """The original scripts' TensorBoard tags, in the run folder itself:
    `loss/epoch` (sum of the batch losses), `accuracy/epoch` (train, percent)
    and `Test_accuracy/epoch` (percent; only when the test split is the one
    evaluated every epoch, as in the originals)."""

    time_part = "tensorboard"

    def __init__(self, run_path, steps_per_epoch, eval_is_test):
        super().__init__()
        self.run_path = run_path
        self.steps_per_epoch = steps_per_epoch
        self.eval_is_test = eval_is_test
        self._writer = None

    def on_train_begin(self, logs=None):
        tf = import_tensorflow()
        with storage.writing("the TensorBoard events", self.run_path):
            self._writer = tf.summary.create_file_writer(self.run_path)

    def on_epoch_end(self, epoch, logs=None):
        tf = import_tensorflow()
        logs = logs or {}
        if not math.isfinite(logs.get("loss", 0.0)):
            return
        with storage.writing("the TensorBoard events", self.run_path), self._writer.as_default(step=epoch):
            tf.summary.scalar("loss/epoch", logs["loss"] * self.steps_per_epoch)
            tf.summary.scalar("accuracy/epoch", 100.0 * logs["accuracy"])
            if self.eval_is_test and "val_accuracy" in logs:
                tf.summary.scalar("Test_accuracy/epoch", 100.0 * logs["val_accuracy"])
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            with storage.writing("the TensorBoard events", self.run_path):
                self._writer.close()
