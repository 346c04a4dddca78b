"""Data-parallel `fit` under torchrun: two CPU processes (gloo) on this machine, a few steps each.

Every test starts real processes with `python -m torch.distributed.run` (torchrun), one thread
each (OMP_NUM_THREADS=1), as a user would."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import torch

import keras_cifar  # noqa: F401
from keras_cifar.data import Split, TensorLoader
from keras_cifar.errors import TrainingError
from keras_cifar.train import process_group
from keras_cifar.train import run_dir as rd
from keras_cifar.train.callbacks import NaNGuard
from tests import reaper
from tests.cli_runner import run_cli
from tests.conftest import REPO
from tests.test_crash import tensorboard_steps, wait_for_epoch
from tests.test_training import read_folder

# One thread per process; this checkout's package in the processes torchrun starts.
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def torchrun_command(*args, processes=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            *map(str, args)]


def run_torchrun(*args, timeout=600):
    return subprocess.run(torchrun_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **ENV))


def start_torchrun(*args):
    return subprocess.Popen(torchrun_command(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **ENV))


def worker_pids(launcher_pid):
    """{rank: pid} of the processes torchrun started (its children with RANK in their environment)."""
    workers = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            if parent != launcher_pid:
                continue
            with open(f"/proc/{name}/environ", "rb") as handle:
                environment = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if b"RANK" in environment:
            workers[int(environment[b"RANK"])] = int(name)
    return workers


def fit_args(data, root, *extra, epochs=2, batch_size=10, data_dir=None):
    return [REPO / "cli.py", "fit", "--model", "cnn", "--epochs", epochs, "--batch-size", batch_size, "--seed", 3,
            "--device", "cpu", "--data", data, "--data-dir", data_dir or root / "tfds", "--log-dir", root / "logs",
            *extra]


# --- one process against two --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def equivalence(real_folder_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("equivalence")
    images, labels = read_folder(real_folder_small, "train")
    np.savez(root / "data.npz", images=images[:96], labels=labels[:96])
    result = run_torchrun(REPO / "tests" / "distributed_equivalence.py", root / "data.npz", root / "out.json")
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((root / "out.json").read_text())


def test_data_parallel_step_makes_no_host_sync_beyond_the_collectives(equivalence):
    """20 steady-state steps of `fit` under 2 processes, with the run's callbacks: DDP's bucketed
    all-reduces are the only waits; nothing is read back to the host (as in one process,
    tests/test_step.py)."""
    assert equivalence["host_syncs"] == [{}, {}]


# Largest allowed difference from the one-process reference, by case (measured: 7e-9, 5e-6, 6e-4, 2.4e-7, 2.4e-7).
TOLERANCE = {"cnn": 1e-6, "resnet18": 1e-4, "resnet18-sync-bn": None, "airbench94": 1e-4, "airbench94-muon": 1e-4}


@pytest.mark.parametrize("case", ["cnn", "resnet18", "resnet18-sync-bn", "airbench94", "airbench94-muon"])
def test_two_processes_train_like_one_with_twice_the_batch(equivalence, case):
    """2 processes x batch B for k steps (SGD with momentum, graph capture on) end with the weights
    of 1 process with batch 2B on the same images, batch-norm statistics included: without
    sync_bn the reference computes each half's statistics apart (what each rank sees), with
    sync_bn over all 2B.

    The ranks agree exactly: they apply bitwise-identical averaged gradients. Against the
    reference the differences are float32 summation orders only (a mean of 2B against the mean
    of two means of B, sums of per-channel statistics): 1e-6 for cnn (measured 7e-9 after 4
    steps, weights moved up to 0.04), 1e-4 for resnet18 (measured 5e-6 after 3 steps, moved up
    to 2.4). With sync_bn, Keras's variance formula E[x^2] - E[x]^2 over the 8 values per
    channel of resnet18's last stage is so ill-conditioned that one process moves its own
    weights by 3e-2 when only the order of the sums changes (`reference-spread`, measured each
    run): the data-parallel run must stay within a tenth of that (measured 6e-4), and the exact
    check of sync_bn is the next test's. `airbench94` adds the fast recipe's optimizer (batch-norm biases
    at 64x the learning rate, lookahead) and torch's batch-norm kernel: 1e-4 (measured 2.4e-7,
    moved up to 1.0). `airbench94-muon` steps the kernels with Muon (airbench94_muon.yaml's optimizer, its
    Newton-Schulz iteration in bfloat16) on the averaged gradients: 1e-4 (measured 2.4e-7, moved
    up to 2.0)."""
    result = equivalence[case]
    assert result["rank_difference"] == 0.0, result
    assert result["max_moved"] >= 0.04, result  # the weights did move
    tolerance = TOLERANCE[case] or equivalence[f"{case}-reference-spread"] / 10
    assert result["max_difference"] <= tolerance, result
    assert result["graph_capture"] == (case != "resnet18-sync-bn")
    assert result["ddp"]  # the training forward ran through torch's DistributedDataParallel


def test_ddp_is_rebuilt_when_the_trainable_set_changes_mid_run(equivalence):
    """`fit` on the ranks' own (different) images, a kernel frozen at the start of epoch 1 on
    every rank followed by `refresh_step_plan()`: the DDP wrapper is rebuilt over the new
    trainable set (a stale one would wait for the frozen kernel's gradient and fail), the frozen
    kernel stays put, the rest trains on, and the ranks stay bitwise equal (DDP averaged their
    different gradients)."""
    result = equivalence["frozen_mid_run"]
    assert result["ddp"] and result["rebuilt"], result
    assert result["wrapped"] == result["trainable"], result
    assert result["frozen_moved"] == 0.0, result
    assert result["moved"] >= 1e-3, result
    assert result["rank_difference"] == 0.0, result


def test_sync_bn_moments_and_their_gradients_equal_one_process(equivalence):
    """On a well-conditioned batch split over 2 processes, `--sync-bn`'s mean, variance and the
    gradient through them (the autograd-aware all-reduce) equal one process's over the whole
    batch to float32 rounding (measured 5e-8 to 1.3e-7 relative)."""
    for quantity, relative_error in equivalence["sync_bn_moments"].items():
        assert relative_error <= 1e-6, (quantity, relative_error)


def test_every_metric_is_reduced_once_over_the_ranks(equivalence):
    """A model compiled with accuracy and a metric that is not a mean (`ImagesSeen`, a count) fits
    on the ranks' own shards and evaluates on disjoint shards: on every rank the count is the
    images of all ranks (reduced once: twice would double it, never would halve it), and the
    sharded evaluation's loss and accuracy equal one process's over the whole held-out set.
    Keras 3.16's torch trainer reduces the metrics a second time when the model lets it
    (`ImageClassifier.get_metrics_result`)."""
    ranks = equivalence["metrics_reduced_once"]
    for result in ranks:
        assert result["fit_images_seen"] == result["train_images"] == 96, result
        assert result["evaluate"]["images_seen"] == result["test_images"] == 23, result
    one_process = ranks[0]["evaluate_one_process"]
    assert one_process["images_seen"] == 23
    for result in ranks:
        assert result["evaluate"]["accuracy"] == pytest.approx(one_process["accuracy"], abs=1e-7)
        assert result["evaluate"]["loss"] == pytest.approx(one_process["loss"], rel=1e-6)


def test_keras_own_ddp_stays_unbuilt_and_could_not_run_the_captured_step(equivalence):
    """Keras 3.16's torch trainer wraps the model in `DistributedDataParallel(model)` whenever a
    process group exists (`_initialize_ddp`), beside the DDP of `keras_cifar.train.data_parallel`.
    Built here by hand as Keras builds it, it wraps the Keras model, whose forward is the layers
    one by one: on a step's images it ran the captured graph 0 times, where our DDP, wrapping the
    captured forward, ran it once. Its reducer would average gradients the lean step never
    computes, so ImageClassifier keeps it unbuilt on every release (Keras 3.15 has none)."""
    for result in equivalence["keras_own_ddp"]:
        assert result == {"keras_ddp_built": False, "graph_calls_our_ddp": 1, "graph_calls_keras_style_ddp": 0,
                          "keras_style_wraps": "ImageClassifier"}, result


# --- the CLI under torchrun --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_process_run(real_folder_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun_fit")
    result = run_torchrun(*fit_args(real_folder_small, root))
    assert result.returncode == 0, result.stderr[-4000:]
    return root, result


def test_one_run_folder_every_epoch_once(two_process_run):
    root, result = two_process_run
    (run,) = rd.list_runs(str(root / "logs"))
    metrics = open(os.path.join(run, rd.METRICS)).read().splitlines()
    assert [int(line.split(",")[0]) for line in metrics[1:]] == [1, 2]
    assert tensorboard_steps(os.path.join(run, "train"), "epoch_loss") == [0, 1]
    assert tensorboard_steps(os.path.join(run, "validation"), "epoch_accuracy") == [0, 1]
    assert tensorboard_steps(run, "Test_accuracy/epoch") == [0, 1]
    summary = json.loads(open(os.path.join(run, rd.SUMMARY)).read())
    assert (summary["world_size"], summary["batch_size_per_rank"], summary["global_batch_size"]) == (2, 10, 20)
    assert summary["epochs"] == 2
    # rank 0 alone speaks
    assert result.stdout.count("Epoch 1/2") == 1 and result.stdout.count("Device: ") == 1
    assert "Data parallel: 2 processes (gloo), batch_size 10 images per process per step, global batch 20" \
        in result.stdout


def test_checkpoint_evaluates_in_one_process_as_the_sharded_evaluation(two_process_run):
    """The per-epoch evaluation (each rank its shard, totals summed) and the final report (each
    rank its shard, logits gathered) equal a single-process evaluation of the checkpoint exactly."""
    root, _ = two_process_run
    (run,) = rd.list_runs(str(root / "logs"))
    result = run_cli("evaluate", "--checkpoint", os.path.join(run, rd.LAST), "--json", "--device", "cpu",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["total"] == 100
    summary = json.loads(open(os.path.join(run, rd.SUMMARY)).read())
    last_epoch = rd.read_json(os.path.join(run, rd.STATE))["history"][-1]
    assert summary["final_accuracy"] == report["accuracy"]
    assert last_epoch["val_accuracy"] == pytest.approx(report["accuracy"], abs=1e-7)  # float32 count / count


def test_sharded_evaluation_counts_every_image_once():
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (23, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 23))
    seen = []
    for rank in range(3):
        loader = TensorLoader(split, 4, device="cpu", rank=rank, world_size=3, even_shards=False)
        labels = [int(i) for _, y in loader for i in y]
        assert len(labels) == loader.num_examples
        seen += loader.epoch_order().tolist()
    assert sorted(seen) == list(range(23))
    train = [TensorLoader(split, 4, shuffle=True, device="cpu", rank=rank, world_size=3) for rank in range(3)]
    assert len({len(loader) for loader in train}) == 1  # training: the same number of steps on every rank


def test_nan_guard_checks_the_same_steps_on_every_rank_and_reduces():
    calls = []

    def earliest_over_ranks(first_bad):  # stands in for the all-reduce (MIN) over the ranks
        calls.append(int(first_bad))
        return torch.tensor(1)

    guard = NaNGuard(check_seconds=0.0, check_steps=3, all_ranks=earliest_over_ranks)
    guard.set_model(type("M", (), {"stop_training": False})())
    guard.on_epoch_begin(0)
    for batch in range(3):
        guard.on_train_batch_end(batch, {"loss": torch.tensor(1.0)})
        assert guard.model.stop_training == (batch == 2)
    assert calls == [-1]  # read once, at step 3, although check_seconds=0
    assert guard.bad_step == (1, 2)  # another rank's step 2 stops this rank too


# --- failures ---------------------------------------------------------------------------------------------


def _wait(process, timeout):
    started = time.monotonic()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"the job did not end within {timeout} s: {stderr[-3000:]}")
    return time.monotonic() - started, stdout, stderr


def test_sigkill_of_a_rank_ends_the_job_and_resume_finishes(real_folder_2k, tmp_path):
    args = fit_args(real_folder_2k, tmp_path, epochs=4)
    process = start_torchrun(*args)
    run = wait_for_epoch(tmp_path / "logs", 1, process)
    workers = worker_pids(process.pid)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)
    elapsed, _, stderr = _wait(process, 120)
    assert process.returncode != 0, stderr[-3000:]
    completed = rd.read_json(os.path.join(run, rd.STATE))["completed_epochs"]
    assert 1 <= completed < 4, "the kill must land before the last epoch"

    result = run_torchrun(*fit_args(real_folder_2k, tmp_path, "--resume", run, epochs=4))
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Resuming {run} after epoch {completed} of 4" in result.stdout
    assert rd.list_runs(str(tmp_path / "logs")) == [run]
    metrics = open(os.path.join(run, rd.METRICS)).read().splitlines()
    assert [int(line.split(",")[0]) for line in metrics[1:]] == [1, 2, 3, 4]
    assert tensorboard_steps(run, "Test_accuracy/epoch") == [0, 1, 2, 3]
    assert json.loads(open(os.path.join(run, rd.SUMMARY)).read())["epochs"] == 4


def test_a_stopped_rank_ends_the_job_within_the_timeout(real_folder_2k, tmp_path):
    timeout = 8
    process = start_torchrun(*fit_args(real_folder_2k, tmp_path, "--dist-timeout", timeout, epochs=6))
    wait_for_epoch(tmp_path / "logs", 1, process)
    workers = worker_pids(process.pid)
    os.kill(workers[1], signal.SIGSTOP)
    try:
        # detection within the timeout plus a heartbeat period, then torchrun's 30 s grace before
        # it kills the stopped process
        elapsed, _, stderr = _wait(process, timeout + 60)
    finally:
        for pid in workers.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode != 0
    assert "Rank 1 has not answered" in stderr, stderr[-3000:]


def test_a_lost_store_ends_every_rank_with_its_message(two_process_run, real_folder_small, tmp_path):
    """SIGKILL of torchrun's agent, which holds the job's store (MASTER_ADDR:MASTER_PORT): its two
    ranks, orphaned, would train on without it (gloo connects them directly). The heartbeat ends
    each within the timeout, exit code 1, naming the store. The reaper collects the orphans' exit
    codes. The timeout bounds the detection; a loaded machine needs 20 s for the ranks to keep
    up with each other while they start."""
    timeout = 20
    statuses = tmp_path / "exit_codes"
    with open(tmp_path / "stderr", "w") as stderr:
        args = fit_args(real_folder_small, tmp_path, "--dist-timeout", timeout, epochs=100,
                        data_dir=two_process_run[0] / "tfds")  # prepared: the ranks start sooner
        process = reaper.start(statuses, torchrun_command(*args),
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ, **ENV))
    try:
        wait_for_epoch(tmp_path / "logs", 1, process)
        (agent,) = reaper.children(process.pid)
        ranks = worker_pids(agent)
        assert sorted(ranks) == [0, 1], ranks
        store = "{MASTER_ADDR}:{MASTER_PORT}".format(**reaper.environment(ranks[0]))
        os.kill(agent, signal.SIGKILL)
        killed = time.monotonic()
        while any(map(reaper.alive, ranks.values())) and time.monotonic() - killed < timeout:
            time.sleep(0.05)
        assert not any(map(reaper.alive, ranks.values())), f"ranks still running {timeout} s after the kill"
        process.wait(timeout=30)
    finally:
        reaper.kill_all(process)
    messages = (tmp_path / "stderr").read_text()
    codes = reaper.exit_codes(statuses)
    assert [codes.get(ranks[0]), codes.get(ranks[1])] == [1, 1], (codes, messages[-3000:])
    for rank in ranks:
        assert f"Error: Rank {rank}: lost torchrun's store at {store} (" in messages, messages[-3000:]


class _Store:
    """Stands in for torchrun's store in the heartbeat: counts, or fails as a lost store does."""

    def __init__(self, error=None):
        self.error = error
        self.values = {}

    def add(self, key, amount):
        if self.error:
            raise self.error
        self.values[key] = self.values.get(key, 0) + amount
        return self.values[key]

    def set(self, key, value):
        self.add(key, 0)

    def check(self, keys):
        self.add(keys[0], 0)
        return False


class _Fatal(Exception):
    pass


def _heartbeat_message(monkeypatch, store, rank=1):
    """What the heartbeat's loop ends the rank with, for a given store (`fatal` raises instead of exiting)."""
    def fatal(message):
        raise _Fatal(message)

    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")
    monkeypatch.setenv("MASTER_PORT", "29512")
    monkeypatch.setattr(process_group.Heartbeat, "client", lambda self: store)
    monkeypatch.setattr(process_group, "fatal", fatal)
    heartbeat = process_group.Heartbeat(rank=rank, world_size=2, timeout=2)
    with pytest.raises(_Fatal) as ended:
        heartbeat._run()
    return str(ended.value)


@pytest.mark.parametrize("error", [torch.distributed.DistNetworkError("Broken pipe"), ConnectionResetError()])
def test_heartbeat_names_the_lost_store(monkeypatch, error):
    message = _heartbeat_message(monkeypatch, _Store(error))
    assert message.startswith("Rank 1: lost torchrun's store at 10.1.2.3:29512 ("), message


def test_heartbeat_ends_a_rank_whose_agent_has_exited(monkeypatch):
    launcher = os.getppid()
    store = _Store()
    original_add = store.add

    def add(key, amount):  # the agent exits after the first beat; the store (on another node) lives on
        monkeypatch.setattr(os, "getppid", lambda: launcher + 1)
        return original_add(key, amount)

    store.add = add
    message = _heartbeat_message(monkeypatch, store)
    assert message.startswith(f"Rank 1: lost its torchrun agent (pid {launcher})"), message


@pytest.mark.parametrize("store_lost", [False, True])
def test_a_failed_collective_names_the_lost_store_as_its_cause(monkeypatch, store_lost):
    """A rank whose collective fails because the store's agent is gone (it took the other rank
    with it) says so, over the heartbeat's connection: a new one would wait twice `dist_timeout`
    for the store before the rank could end."""
    class Group(process_group.Group):  # a process group without processes; its heartbeat on a stand-in store
        def __init__(self, timeout):
            self.rank, self.world_size, self.timeout = 1, 2, timeout
            self.heartbeat = process_group.Heartbeat(1, 2, timeout)

        def start(self, device):
            pass

        def close(self, clean):
            pass

    stores = iter([_Store(ConnectionResetError("Broken pipe") if store_lost else None), _Store()])
    monkeypatch.setattr(process_group.Heartbeat, "client", lambda self: next(stores))  # the heartbeat's, then others
    monkeypatch.setattr(process_group, "ProcessGroup", Group)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29512"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TrainingError) as ended:
        with process_group.session(types.SimpleNamespace(dist_timeout=8, device="cpu")):
            raise RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:22417")
    message = str(ended.value)
    if store_lost:
        assert message.startswith("Rank 1: lost torchrun's store at 10.1.2.3:29512 (ConnectionResetError: Broken "
                                  "pipe)."), message
    else:
        assert message.startswith("Rank 1: a collective with the other ranks failed (RuntimeError: [pair.cc:561] "
                                  "Connection closed by peer"), message
        assert "training steps taken: rank 0: ?, rank 1: ?" in message, message
    assert message.endswith("resume with `fit(resume_path='RUN_DIR')`."), message
