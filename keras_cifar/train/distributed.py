"""Data-parallel training across processes: `torchrun` and `torch.distributed`, nothing home-made.

`torchrun --nproc_per_node=N cli.py fit ...` starts N copies of `fit`; each finds its rank in
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins one
process group (NCCL on GPUs, gloo on CPUs). Without torchrun (or with one process) none of this
runs and `fit` is unchanged. Everything a rank does differently lives here:

- `session(config)`: the process group for one `fit`, the rank's device (`cuda:LOCAL_RANK`), a
  heartbeat that ends the job when a rank stops answering, and `current()` for the rest of the
  code (a single-process `Group` outside a session);
- `DataParallel`: what the model's training step calls. Rank 0's variables (weights, batch-norm
  statistics, optimizer state) are broadcast once; each step's gradients are averaged by
  bucketed all-reduces launched from gradient hooks while the backward pass still runs; at the
  end of every training epoch and evaluation the metric totals are summed over the ranks and the
  batch-norm moving statistics averaged, before any callback reads a log;
- `--sync-bn`: batch-norm moments computed over the global batch with autograd-aware collectives.

Why not `torch.nn.parallel.DistributedDataParallel`: DDP hooks into the `forward` of the module
it wraps. The lean training step of `ImageClassifier` replays a captured graph of the Keras
model's forward (or calls the Keras model directly), never a DDP wrapper, so DDP's gradient
reduction would silently not run. The hooks below are DDP's design (buckets in reverse
parameter order, launched in a fixed order as they fill, all-reduce overlapping the backward
pass), placed where this project's step can see them.
"""

import contextlib
import datetime
import math
import os
import sys
import threading
import time
import types
import warnings

import torch

from keras_cifar.errors import UsageError

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size
FIRST_BUCKET_BYTES = 2**20  # DDP's: the first (last layers') bucket launches early
NAN_CHECK_STEPS = 100  # every rank reads the NaN flag at the same steps


def launched_by_torchrun():
    """True when this process is one of several that torchrun (or any launcher setting its
    variables) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


class Group:
    """The ranks of a run. This base class is the single process: rank 0 of 1, and every
    collective returns its input."""

    rank = 0
    world_size = 1
    local_rank = 0
    backend = None

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    def place(self, device):
        return device

    def broadcast(self, value):
        """Rank 0's `value` (any picklable object) on every rank."""
        return value

    def all_gather(self, value):
        return [value]

    def barrier(self):
        pass

    def describe(self):
        return ""

    @contextlib.contextmanager
    def local_first(self):
        yield

    def summary(self, config):
        return {"world_size": self.world_size, "batch_size_per_rank": config.batch_size,
                "global_batch_size": config.batch_size * self.world_size}


_SINGLE = Group()
_current = _SINGLE


def current():
    """The Group of the `fit` running in this process (the single process outside `fit`)."""
    return _current


class ProcessGroup(Group):
    """This process's place in a torch.distributed process group."""

    def __init__(self, timeout):
        import torch.distributed as dist

        self.dist = dist
        self.rank = int(os.environ["RANK"])
        self.world_size = int(os.environ["WORLD_SIZE"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.timeout = timeout
        self.owns_group = False
        self.heartbeat = None

    def start(self, device_requested):
        dist = self.dist
        cuda = device_requested in ("auto", "cuda") and torch.cuda.is_available()
        if device_requested.startswith("cuda:"):
            raise UsageError(
                f"`device={device_requested!r}` names one GPU, but torchrun started {self.world_size} processes: "
                "each rank trains on cuda:LOCAL_RANK. Pass `device='cuda'` (or 'auto')."
            )
        if cuda:
            if self.local_rank >= torch.cuda.device_count():
                raise UsageError(f"Rank {self.rank} has LOCAL_RANK {self.local_rank}, but this machine has "
                                 f"{torch.cuda.device_count()} GPU(s): start at most that many processes per node.")
            torch.cuda.set_device(self.local_rank)  # before the model is built
        if dist.is_initialized():  # the caller made the group (a script, a test): use it
            self.backend = dist.get_backend()
        else:
            self.backend = "nccl" if cuda else "gloo"
            dist.init_process_group(self.backend, timeout=datetime.timedelta(seconds=self.timeout),
                                    **({"device_id": torch.device("cuda", self.local_rank)} if cuda else {}))
            self.owns_group = True
        self.heartbeat = Heartbeat(self.rank, self.world_size, self.timeout)
        self.heartbeat.start()
        if self.rank != 0:
            warnings.filterwarnings("ignore")  # the other ranks print errors only

    def close(self, clean):
        if self.heartbeat is not None:
            self.heartbeat.stop(clean)
        if self.owns_group and self.dist.is_initialized():
            if clean:
                with contextlib.suppress(Exception):
                    self.dist.destroy_process_group()

    def place(self, device):
        """"cuda" -> this rank's GPU, cuda:LOCAL_RANK (the CPU stays the CPU)."""
        return f"cuda:{self.local_rank}" if device.startswith("cuda") else device

    def _collective_device(self):
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def broadcast(self, value):
        box = [value]
        self.dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def all_gather(self, value):
        gathered = [None] * self.world_size
        self.dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self):
        self.dist.barrier()

    def describe(self):
        return f"; rank {self.rank} of {self.world_size} ({self.backend})"

    @contextlib.contextmanager
    def local_first(self):
        """Runs the block on each machine's local rank 0 first (data preparation, downloads), then on
        the others (which then read its cache). The wait is a store key, not a collective: a first
        download may take longer than the collective timeout."""
        key = f"local_first/{os.environ.get('GROUP_RANK', '0')}/{self.heartbeat.sequence('local_first')}"
        store = self.heartbeat.client()  # its own connection: a long wait must not hold up the heartbeat
        if self.local_rank != 0:
            store.wait([key], datetime.timedelta(hours=6))
        yield
        if self.local_rank == 0:
            store.set(key, "done")

    # --- collectives on tensors

    def sum_(self, tensor):
        self.dist.all_reduce(tensor)
        return tensor

    def first_over_ranks(self, first_bad):
        """The earliest step index over the ranks (-1: none), as a device tensor."""
        never = torch.iinfo(torch.int64).max
        value = torch.where(first_bad < 0, never, first_bad).to(torch.int64)
        self.dist.all_reduce(value, op=self.dist.ReduceOp.MIN)
        return torch.where(value == never, -1, value)


class Heartbeat:
    """Ends the job when a rank stops answering. Each rank counts up a key in torchrun's store
    every `period` seconds from a background thread and watches the next rank's key; a rank whose
    count has not moved for 0.8 x `timeout` is stopped (SIGSTOP), hung with Python's lock held, or
    cut off, and the watcher ends the job with a message naming it (torchrun then stops the
    others). A rank stuck inside a collective while its process still runs is caught by the
    process group's own timeout, `timeout` itself; the heartbeat also publishes each rank's
    training step count, which that message quotes. A rank that loses the store (node 0's
    agent, or rank 0, holds it) or its own agent (which alone would stop it, and report its end)
    ends itself with a message naming what it lost: the ranks reach each other directly, and
    would otherwise train on."""

    SILENCE = 0.8  # of the timeout: a stopped rank is named before any collective times out

    def __init__(self, rank, world_size, timeout):
        self.rank, self.world_size, self.timeout = rank, world_size, timeout
        self.period = max(0.2, min(5.0, timeout / 10))
        self.host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        self.port = int(os.environ.get("MASTER_PORT", "29500"))
        self.where = f"{self.host}:{self.port}"
        self.launcher = os.getppid()  # torchrun's agent on this machine
        self.store = self.client()
        self.progress = lambda: 0  # training steps taken, published every period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keras-cifar-heartbeat", daemon=True)
        self._sequences = {}

    def client(self):
        """A new connection to torchrun's store (the agent's, at MASTER_ADDR:MASTER_PORT), under this
        job's prefix."""
        import torch.distributed as dist

        store = dist.TCPStore(self.host, self.port, is_master=False, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=self.timeout))
        return dist.PrefixStore(f"keras_cifar/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/", store)

    def steps_of_every_rank(self):
        """"rank 0: 120 steps, rank 1: 87 steps" from the store, over the heartbeat's connection (a
        new one waits twice the timeout for a store that is gone). Raises if the store is lost."""
        parts = []
        for rank in range(self.world_size):
            key = f"progress/{rank}"
            parts.append(f"rank {rank}: {self.store.get(key).decode() if self.store.check([key]) else '?'}")
        return ", ".join(parts)

    def lost_store(self, error):
        return (f"Rank {self.rank}: lost torchrun's store at {self.where} ({_describe(error)}). The torchrun "
                "agent that holds it (node 0's) or rank 0 has stopped, or its machine cannot be reached; ending "
                "the job.")

    def sequence(self, name):
        self._sequences[name] = self._sequences.get(name, 0) + 1
        return self._sequences[name]

    def start(self):
        self.store.add(f"beat/{self.rank}", 1)
        self._thread.start()

    def stop(self, clean):
        if clean:
            with contextlib.suppress(Exception):
                self.store.set(f"done/{self.rank}", "1")
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.period + 1)

    def _run(self):
        watched = (self.rank + 1) % self.world_size
        last_count, last_change = None, time.monotonic()
        while not self._stop.wait(self.period):
            try:
                self.store.add(f"beat/{self.rank}", 1)
                self.store.set(f"progress/{self.rank}", str(self.progress()))
                if self.store.check([f"done/{watched}"]):
                    return  # it finished cleanly
                count = self.store.add(f"beat/{watched}", 0)
            except Exception as error:  # the store (torchrun's agent, or rank 0) is gone
                if self._stop.is_set():
                    return
                fatal(self.lost_store(error))
            if os.getppid() != self.launcher:
                fatal(f"Rank {self.rank}: lost its torchrun agent (pid {self.launcher}), the launcher on this "
                      "machine, which has exited; nothing would stop this rank or report its end any more. "
                      "Ending the job.")
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > self.SILENCE * self.timeout:
                fatal(f"Rank {watched} has not answered for {now - last_change:.0f} s (stopped, hung, or its machine "
                      f"is unreachable): rank {self.rank} ends the job. The limit is `dist_timeout` "
                      f"({self.timeout:g} s).")


def _describe(error, limit=200):
    """"DistNetworkError: Broken pipe": the type and the first line of the message, if any."""
    detail = (str(error).splitlines() or [""])[0][:limit]
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def fatal(message):
    """Ends this rank at once with exit code 1 (torchrun then stops the other ranks)."""
    try:
        sys.stderr.write(f"Error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)


def _peer_failure(error):
    """Whether `error` is a collective that failed because another rank died, stopped or timed out."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset",
                                  "Timed out", "timed out", "Socket Timeout"))


@contextlib.contextmanager
def session(config):
    """The process group of one `fit` under torchrun; the single process otherwise."""
    global _current
    if not launched_by_torchrun() or _current is not _SINGLE:
        yield _current
        return
    group = ProcessGroup(config.dist_timeout)
    clean = False
    _current = group
    try:
        group.start(config.device)
        try:
            yield group
        except Exception as error:
            if _peer_failure(error):
                from keras_cifar.errors import TrainingError

                group.heartbeat.stop(clean=False)
                resume = ("The last completed epoch is saved in the run folder: resume with "
                          "`fit(resume_path='RUN_DIR')`.")
                try:
                    steps = group.heartbeat.steps_of_every_rank()
                except Exception as lost:  # the store is gone too: the cause, which ended the other ranks
                    raise TrainingError(f"{group.heartbeat.lost_store(lost)} {resume}") from None
                raise TrainingError(
                    f"Rank {group.rank}: a collective with the other ranks failed ({_describe(error, 300)}). Another "
                    f"rank died, or is stuck more than `dist_timeout` ({group.timeout:g} s) behind (training steps "
                    f"taken: {steps}; the lowest is stuck). {resume}"
                ) from None
            raise
        clean = True
    finally:
        _current = _SINGLE
        group.close(clean)


# --- the training step's side -----------------------------------------------------------------------


class _Bucket:
    def __init__(self, indices, buffer):
        self.indices = indices  # parameter indices, in the order their gradients arrive
        self.buffer = buffer
        self.pending = len(indices)
        self.handle = None


class GradientAverager:
    """Averages gradients across the ranks while the backward pass runs.

    The parameters are laid out in buckets in reverse order (the order backward produces their
    gradients). A hook on each parameter (`register_post_accumulate_grad_hook`) copies its
    gradient, divided by the world size, into its bucket; a full bucket is all-reduced (SUM)
    asynchronously, buckets always in the same order on every rank (a bucket filled early waits
    for the ones before it, as DDP's). After `backward()`, `finish` waits for the reductions and
    points each parameter's `.grad` at its slice of the reduced bucket: one copy per gradient.
    A parameter that received no gradient contributes zeros."""

    def __init__(self, parameters, group, bucket_bytes=BUCKET_BYTES, first_bucket_bytes=FIRST_BUCKET_BYTES):
        self.parameters = list(parameters)
        self.group = group
        self.world_size = group.world_size
        self.active = False
        self.buckets = []
        self.where = {}  # parameter index -> (bucket, slice view)
        order = list(range(len(self.parameters)))[::-1]
        current, size, limit = [], 0, first_bucket_bytes
        for index in order:
            parameter = self.parameters[index]
            if current and (size + parameter.numel() * parameter.element_size() > limit
                            or parameter.dtype != self.parameters[current[0]].dtype):
                self._add_bucket(current)
                current, size, limit = [], 0, bucket_bytes
            current.append(index)
            size += parameter.numel() * parameter.element_size()
        if current:
            self._add_bucket(current)
        self.grads = [self.where[i][1] for i in range(len(self.parameters))]
        self._handles = [parameter.register_post_accumulate_grad_hook(self._make_hook(index))
                         for index, parameter in enumerate(self.parameters)]
        self._arrived = [False] * len(self.parameters)
        self._next = 0

    def _add_bucket(self, indices):
        first = self.parameters[indices[0]]
        total = sum(self.parameters[i].numel() for i in indices)
        buffer = torch.zeros(total, dtype=first.dtype, device=first.device)
        bucket = _Bucket(indices, buffer)
        offset = 0
        for index in indices:
            count = self.parameters[index].numel()
            self.where[index] = (bucket, buffer[offset:offset + count].view(self.parameters[index].shape))
            offset += count
        self.buckets.append(bucket)

    def _make_hook(self, index):
        def hook(parameter):
            if self.active and not self._arrived[index]:
                self._arrived[index] = True
                bucket, view = self.where[index]
                torch.div(parameter.grad, self.world_size, out=view)
                bucket.pending -= 1
                if bucket.pending == 0:
                    self._launch_ready()
        return hook

    def _launch_ready(self):
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            bucket = self.buckets[self._next]
            bucket.handle = self.group.dist.all_reduce(bucket.buffer, async_op=True)
            self._next += 1

    def begin(self):
        """Before `backward()`: arms the hooks."""
        for bucket in self.buckets:
            bucket.pending = len(bucket.indices)
            bucket.handle = None
        self._arrived = [False] * len(self.parameters)
        self._next = 0
        self.active = True

    def finish(self):
        """After `backward()`: every gradient averaged over the ranks, in `parameter.grad`."""
        self.active = False
        for bucket in self.buckets[self._next:]:  # parameters that got no gradient this step
            for index in bucket.indices:
                if not self._arrived[index]:
                    self.where[index][1].zero_()
                    bucket.pending -= 1
            bucket.pending = 0
        self._launch_ready()
        for bucket in self.buckets:
            bucket.handle.wait()
        for parameter, grad in zip(self.parameters, self.grads):
            parameter.grad = grad

    def remove(self):
        for handle in self._handles:
            handle.remove()


class DataParallel:
    """What `ImageClassifier`'s steps call in a data-parallel run (`model.set_data_parallel`)."""

    def __init__(self, model, group, sync_bn=False):
        from keras_cifar import keras_internals

        self.group = group
        self.model = model
        self.averager = GradientAverager([v.value for v in model.trainable_weights], group)
        self.batch_norm_state = [variable.value for layer in keras_internals.all_layers(model)
                                 if keras_internals.is_batch_norm(layer)
                                 for variable in (layer.moving_mean, layer.moving_variance)]
        self.trained = False
        self.steps = 0
        if sync_bn:
            for layer in keras_internals.all_layers(model):
                if keras_internals.is_batch_norm(layer):
                    keras_internals.set_batch_norm_moments(layer, types.MethodType(_global_moments, layer))

    # the training step
    def before_backward(self):
        self.trained = True
        self.steps += 1
        self.averager.begin()

    def after_backward(self):
        self.averager.finish()

    # the end of a training epoch or an evaluation, before any callback reads the logs
    def reduce_metrics(self, metrics):
        with torch.no_grad():
            if self.trained:
                average_(self.batch_norm_state + self._state_averages(), self.group)
                self.trained = False
            states = [variable.value for metric in metrics for variable in metric.variables]
            sum_(states, self.group)

    def _state_averages(self):
        """The optimizer's lookahead averages of the batch-norm statistics (TorchSGD's)."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        return optimizer.model_state_averages() if hasattr(optimizer, "model_state_averages") else []

    def remove(self):
        self.averager.remove()


def _flat(tensors):
    return torch.cat([tensor.detach().reshape(-1).to(torch.float64) for tensor in tensors])


def sum_(tensors, group):
    """Sums each tensor over the ranks, in place (one collective)."""
    if not tensors:
        return
    flat = _flat(tensors)
    group.dist.all_reduce(flat)
    _unflatten_into(flat, tensors)


def average_(tensors, group):
    """Averages each tensor over the ranks, in place (one collective)."""
    if not tensors:
        return
    flat = _flat(tensors)
    group.dist.all_reduce(flat)
    _unflatten_into(flat / group.world_size, tensors)


def _unflatten_into(flat, tensors):
    offset = 0
    for tensor in tensors:
        count = tensor.numel()
        tensor.copy_(flat[offset:offset + count].view(tensor.shape).to(tensor.dtype))
        offset += count


def broadcast_variables(model, group):
    """Rank 0's model variables (weights, batch-norm statistics, seed states) and, once built, its
    optimizer state (slots, step count, loss scale) on every rank."""
    variables = list(model.weights)  # trainable and non-trainable (batch-norm statistics); no metrics, seeds
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        if not optimizer.built:  # built on every rank, so that every rank broadcasts the same list
            optimizer.build(model.trainable_variables)
        variables += list(optimizer.variables)
    layout = [(tuple(v.shape), str(v.dtype)) for v in variables]
    layouts = group.all_gather(layout)
    if any(other != layout for other in layouts):
        rank = next(r for r, other in enumerate(layouts) if other != layouts[0])
        from keras_cifar.errors import TrainingError

        raise TrainingError(f"Rank {rank}'s model or optimizer variables differ from rank 0's "
                            f"({len(layouts[rank])} against {len(layouts[0])} variables); cannot start.")
    with torch.no_grad():
        for variable in variables:
            tensor = variable.value.data
            if tensor.dtype in _BROADCASTABLE:  # not the uint32 seed states, which no collective takes
                group.dist.broadcast(tensor, src=0)


_BROADCASTABLE = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                  torch.uint8, torch.int8, torch.bool)


def _global_moments(layer, inputs, mask):
    """Keras BatchNormalization's moments over the global batch (`--sync-bn`): the per-channel sums
    of x and x*x are summed over the ranks by an autograd-aware all-reduce (its backward
    all-reduces the gradients, so every rank's loss sees every rank's images through the
    statistics), then mean = S1/N and variance = S2/N - mean^2, Keras's own formula on torch.
    Every rank has the same batch size at every step (equal shards), so N is the local count
    times the world size."""
    from torch.distributed.nn.functional import all_reduce

    from keras_cifar import keras_internals

    if mask is not None:
        raise ValueError("sync_bn does not support masked batch normalization.")
    axes = keras_internals.batch_norm_reduction_axes(layer)
    channels = math.prod(inputs.shape[a] for a in range(inputs.ndim) if a not in axes)
    count = inputs.numel() // channels * current().world_size
    sums = all_reduce(torch.cat([inputs.sum(dim=axes), inputs.square().sum(dim=axes)]))
    mean = sums[:channels] / count
    return mean, sums[channels:] / count - mean.square()


def prepare(model, config, group, echo):
    """Makes `model` train data-parallel over `group` (a no-op for a single process)."""
    if not group.distributed:
        return None
    if config.sync_bn and model.graph_capture:
        model.set_graph_capture(False)
        echo("sync_bn: graph capture is off (the traced graph cannot hold the statistics' collectives); the "
             "forward runs eagerly through Keras.")
    broadcast_variables(model, group)
    parallel = DataParallel(model, group, sync_bn=config.sync_bn)
    model.set_data_parallel(parallel)
    if getattr(group, "heartbeat", None) is not None:
        group.heartbeat.progress = lambda: parallel.steps
    return parallel


def describe_run(config, group):
    return (f"Data parallel: {group.world_size} processes ({group.backend}), batch_size {config.batch_size} "
            f"images per process per step, global batch {config.batch_size * group.world_size}; the learning "
            f"rate is used as given ({config.lr:g}), not rescaled."
            + (" Batch-norm statistics over the global batch (sync_bn)." if config.sync_bn else ""))
