"""Multi-node data-parallel `fit`: two torchrun agents on this machine stand in for two machines,
one process each, meeting through a c10d rendezvous on 127.0.0.1 as docs/DISTRIBUTED.md tells
users to start them:

    torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT cli.py fit ...

On two machines only the agent on HOST hosts the rendezvous store; here both could, so the
first agent is told to (`is_host=1`) and the second not. The rendezvous numbers the nodes by
process id, so the first agent started is node 0, which also holds the job's store
(MASTER_ADDR:MASTER_PORT). Each agent runs under tests/reaper.py, which collects the exit code
of a rank whose agent is gone and lets no process outlive the test."""

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_cifar.data import resolve_source
from keras_cifar.data.dataset import _cache_path, _read_cache
from keras_cifar.train import run_dir as rd
from keras_cifar.train.config import resolve_config
from keras_cifar.train.device import seed_everything
from keras_cifar.train.trainer import build_model, fit
from tests import reaper
from tests.conftest import REPO
from tests.test_crash import tensorboard_steps, wait_for_epoch
from tests.test_distributed import ENV

# SGD, not the cnn's Adam: Adam divides each update by the root of its running squared gradient,
# so a float32 rounding difference in a near-zero gradient becomes a difference of the step size
# (docs/DISTRIBUTED.md). A small learning rate: at 0.05 this network's training amplifies a change
# of summation order alone (one thread against two, in one process) to 1e-2 in two epochs.
SETTINGS = {"model": "cnn", "seed": 3, "device": "cpu", "optimizer": "sgd", "lr": 0.002, "momentum": 0.9}
BATCH = 8  # per process: 150 images per rank, a ragged last step of 6


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fit_args(data, root, *extra, epochs=2, data_dir=None):
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    return [REPO / "cli.py", "fit", *flags, "--epochs", epochs, "--batch-size", BATCH, "--data", data,
            "--data-dir", data_dir or root / "tfds", "--log-dir", root / "logs", *extra]


class Nodes:
    """Two torchrun agents, each under a reaper, their output in files under `folder`."""

    def __init__(self, folder, args):
        self.folder = folder
        port = free_port()
        self.reapers = []
        for node in (0, 1):
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                       "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                       f"--rdzv-conf=is_host={int(node == 0)}", *args]
            with open(folder / f"stdout{node}", "w") as stdout, open(folder / f"stderr{node}", "w") as stderr:
                self.reapers.append(reaper.start(folder / f"exit_codes{node}", command, cwd=REPO, stdout=stdout,
                                                 stderr=stderr, env=dict(os.environ, **ENV)))
            while not reaper.children(self.reapers[-1].pid):  # node 0's agent gets the lower process id
                assert self.reapers[-1].poll() is None, self.output(node)
                time.sleep(0.01)

    def output(self, node, stream="stderr"):
        return (self.folder / f"{stream}{node}").read_text()

    def agent(self, node):
        (agent,) = reaper.children(self.reapers[node].pid)
        return agent

    def ranks(self, timeout=600):
        """{rank: (pid, node)} of the two training processes, once both are running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = {}
            for node, process in enumerate(self.reapers):
                assert process.poll() is None, self.output(node)[-3000:]
                for pid in reaper.descendants(process.pid):
                    with contextlib.suppress(OSError):
                        environment = reaper.environment(pid)
                        if "RANK" in environment:
                            found[int(environment["RANK"])] = (pid, int(environment["GROUP_RANK"]))
            if len(found) == 2:
                return found
            time.sleep(0.05)
        raise AssertionError("the two ranks never started")

    def wait(self, timeout):
        for node, process in enumerate(self.reapers):
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"node {node} did not end within {timeout} s: {self.output(node)[-3000:]}")

    def kill_all(self):
        for process in self.reapers:
            reaper.kill_all(process)


@contextlib.contextmanager
def two_nodes(folder, args):
    nodes = Nodes(folder, args)
    try:
        yield nodes
    finally:
        nodes.kill_all()


def blocked_on(path):
    """Processes waiting for the flock on `path` (from /proc/locks)."""
    inode = os.stat(path).st_ino
    waiting = set()
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if len(fields) > 5 and fields[1] == "->" and int(fields[6].split(":")[-1]) == inode:
                waiting.add(int(fields[5]))
    return waiting


# --- a run across the two nodes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_node_run(real_folder_small, tmp_path_factory):
    """Both nodes' local rank 0 prepare the data into one fresh folder at once: the test holds
    the folder's lock until both wait for it, then lets them go."""
    root = tmp_path_factory.mktemp("two_nodes")
    cache = _cache_path(str(root / "tfds"), resolve_source(str(real_folder_small)))
    os.makedirs(os.path.dirname(cache))
    with open(cache + ".lock", "a") as lock, two_nodes(root, fit_args(real_folder_small, root,
                                                                      "--dist-timeout", 60)) as nodes:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ranks = nodes.ranks()
        deadline = time.monotonic() + 600
        while blocked_on(cache + ".lock") != {pid for pid, _ in ranks.values()}:
            running = all(reaper.alive(pid) for pid, _ in ranks.values())
            assert running and time.monotonic() < deadline, "the two ranks never waited for the data together"
            time.sleep(0.05)
        fcntl.flock(lock, fcntl.LOCK_UN)
        nodes.wait(timeout=600)
        outputs = [nodes.output(node, stream) for node in (0, 1) for stream in ("stdout", "stderr")]
        codes = [process.returncode for process in nodes.reapers]
    assert codes == [0, 0], [text[-3000:] for text in outputs]
    return root, cache, outputs


def test_two_nodes_write_one_run_folder_every_epoch_once(two_node_run):
    root, _, (stdout0, _, stdout1, _) = two_node_run
    (run,) = rd.list_runs(str(root / "logs"))
    metrics = open(os.path.join(run, rd.METRICS)).read().splitlines()
    assert [int(line.split(",")[0]) for line in metrics[1:]] == [1, 2]
    assert tensorboard_steps(run, "Test_accuracy/epoch") == [0, 1]
    summary = rd.read_json(os.path.join(run, rd.SUMMARY))
    assert (summary["world_size"], summary["global_batch_size"], summary["epochs"]) == (2, 2 * BATCH, 2)
    assert (stdout0 + stdout1).count("Epoch 1/2") == 1


def test_two_nodes_prepare_the_data_once_into_one_folder(two_node_run):
    root, cache, _ = two_node_run
    data = _read_cache(cache)
    assert data is not None and (len(data.train), len(data.test)) == (300, 100)
    leftovers = [path for path, _, _ in os.walk(root / "tfds") if os.path.basename(path).startswith("incomplete.")]
    assert leftovers == []


def test_two_nodes_train_like_one_process_with_the_global_batch(two_node_run, real_folder_small, tmp_path):
    """Two epochs of 19 steps, the last ragged (6 images per rank, 12 in one process): equal up to
    float32 summation order (a batch of 8 on each rank, 16 in one process) as the training
    amplifies it: 3e-5 (measured 2.7e-6, the weights moved up to 6e-3)."""
    root, _, _ = two_node_run
    (run,) = rd.list_runs(str(root / "logs"))
    config = resolve_config(None, {**SETTINGS, "epochs": 2, "batch_size": 2 * BATCH, "data": str(real_folder_small),
                                   "data_dir": str(root / "tfds"), "log_dir": str(tmp_path / "logs")})
    alone = fit(config, verbose=0, echo=lambda message: None)
    expected = keras.saving.load_model(os.path.join(alone.run_path, rd.LAST)).get_weights()
    actual = keras.saving.load_model(os.path.join(run, rd.LAST)).get_weights()
    seed_everything(config.seed)
    start = build_model(config, 10).get_weights()
    assert max(float(np.abs(b - a).max()) for a, b in zip(start, expected)) >= 1e-3  # the weights did move
    assert max(float(np.abs(a - b).max()) for a, b in zip(actual, expected)) <= 3e-5


# --- a lost node -------------------------------------------------------------------------------------


def test_a_lost_agent_ends_the_other_nodes_ranks(two_node_run, real_folder_small, tmp_path):
    """SIGKILL of node 1's agent, which holds neither store: its rank, orphaned, would train on
    (gloo connects the ranks directly, node 0's agent sees nothing wrong). Its heartbeat ends it,
    naming the agent; rank 0's next collective fails and ends it; both exit 1 within the timeout."""
    timeout = 20
    args = fit_args(real_folder_small, tmp_path, "--dist-timeout", timeout, epochs=100,
                    data_dir=two_node_run[0] / "tfds")  # prepared: the ranks start sooner
    with two_nodes(tmp_path, args) as nodes:
        wait_for_epoch(tmp_path / "logs", 1, nodes.reapers[0])
        ranks = nodes.ranks()
        agent = nodes.agent(1)
        assert reaper.parent(ranks[1][0]) == agent and ranks[1][1] == 1, ranks  # node 1 holds no store
        os.kill(agent, signal.SIGKILL)
        killed = time.monotonic()
        while any(reaper.alive(pid) for pid, _ in ranks.values()) and time.monotonic() - killed < timeout:
            time.sleep(0.05)
        assert not any(reaper.alive(pid) for pid, _ in ranks.values()), f"ranks running {timeout} s after the kill"
        nodes.wait(timeout=60)
        messages = [nodes.output(0), nodes.output(1)]
    orphan = reaper.exit_codes(tmp_path / "exit_codes1").get(ranks[1][0])
    reported = re.search(rf"exitcode\s*:\s*(-?\d+) \(pid: {ranks[0][0]}\)", messages[0])  # by node 0's agent
    assert (orphan, reported and int(reported.group(1))) == (1, 1), messages
    assert nodes.reapers[0].returncode != 0
    assert f"Error: Rank 1: lost its torchrun agent (pid {agent})" in messages[1]
    assert "Error: Rank 0: a collective with the other ranks failed" in messages[0]
    assert "resume with python cli.py fit --resume RUN_DIR." in messages[0]
