"""The ranks of a data-parallel `fit`: torchrun's environment, the process group, and how a job ends.

`session(config)` opens the process group of one `fit` under torchrun (NCCL on GPUs, gloo on
CPUs), pins the rank's GPU and starts a heartbeat that ends the job when a rank stops answering;
`current()` is that group for the rest of the code (a single-process `Group` outside a session).
What the training step does with the group is in `keras_cifar.train.data_parallel`.
"""

import contextlib
import datetime
import os
import sys
import threading
import time
import warnings

import torch

from keras_cifar.errors import UsageError

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
