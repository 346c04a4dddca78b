"""Counting host synchronisations of PyTorch code, on any device.

On a GPU, reading a tensor's value on the host (`item`, `bool`, `float`, `tolist`, `numpy`) waits
for the device to finish its queued work, and so does a tensor made from Python numbers (a
blocking host-to-device copy). `HostSyncCounter` counts those calls made from Python, so a CPU
test can prove that a training step makes none; on CUDA, `torch.cuda.set_sync_debug_mode` checks
the same in the driver (gpu/gpu_check.py). Ops replayed inside a captured graph do not pass
through Python and are not counted: they make no such calls.
"""

import collections

import torch
from torch.overrides import TorchFunctionMode

READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__}
FACTORIES = {torch.tensor, torch.as_tensor, torch.scalar_tensor}


def _holds_python_numbers(value):
    if isinstance(value, (bool, int, float, complex)):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_python_numbers(item) for item in value)
    return False


class HostSyncCounter(TorchFunctionMode):
    """`with HostSyncCounter() as counter: ...` -> `counter.total`, `counter.calls` by name."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    @property
    def total(self):
        return sum(self.calls.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS or (func in FACTORIES and args and _holds_python_numbers(args[0])):
            self.calls[getattr(func, "__qualname__", str(func))] += 1
        return func(*args, **kwargs)


def counting_callback(first, steps):
    """A Keras callback that counts host synchronisations from the start of training step `first`
    to the start of step `first + steps` (data loading, the step and every batch hook between);
    its `counter` holds the counts."""
    import keras_cifar  # noqa: F401  (Keras's torch backend before keras)
    import keras

    class CountSteps(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.counter = HostSyncCounter()

        def on_train_batch_begin(self, batch, logs=None):
            if batch == first:
                self.counter.__enter__()
            elif batch == first + steps:
                self.counter.__exit__(None, None, None)

    return CountSteps()
