"""Data-parallel training across processes: `torchrun` and `torch.distributed`, nothing home-made.

`torchrun --nproc_per_node=N cli.py fit ...` starts N copies of `fit`; each finds its rank in
torchrun's environment and joins one process group. Without torchrun (or with one process) none
of this runs and `fit` is unchanged. What the rest of the code calls, from two modules:

- `keras_cifar.train.process_group`: `session(config)`, `current()`, the heartbeat and how a
  failed rank ends the job;
- `keras_cifar.train.data_parallel`: `prepare(model, ...)`, the model's training forward wrapped
  in torch's `DistributedDataParallel`, epoch-end metric sums and batch-norm averaging, `--sync-bn`.
"""

from keras_cifar.train.data_parallel import DataParallel, broadcast_variables, describe_run, prepare
from keras_cifar.train.process_group import NAN_CHECK_STEPS, Group, ProcessGroup, current, launched_by_torchrun, session

__all__ = ["DataParallel", "broadcast_variables", "describe_run", "prepare", "NAN_CHECK_STEPS", "Group", "ProcessGroup",
           "current", "launched_by_torchrun", "session"]
