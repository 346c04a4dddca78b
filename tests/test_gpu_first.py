"""Installing on a GPU machine that has its own torch (what gpu/gpu_prepare.sh gathers for it), and
the first look there (gpu/gpu_first.sh): its steps, its deadline and the limits of its results."""

import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement

from gpu import gpu_bundle
from tests import data_formats as fmt
from tests.conftest import BLOCKER, REPO


def dependencies():
    return gpu_bundle.load_toml(REPO / "pyproject.toml")["project"]["dependencies"]


def test_pip_keeps_the_torch_a_machine_came_with():
    """A GPU image's torch, built for its CUDA, and releases newer than any the suite has seen
    satisfy the dependencies, and nothing required, extras included, pins a torch of its own
    (torchvision's release pins the torch it was built for)."""
    project = gpu_bundle.load_toml(REPO / "pyproject.toml")["project"]
    required = {gpu_bundle.name(r): Requirement(r) for r in dependencies()}
    for release in ("2.11.0+cu130", "2.9.1", "2.15.0", "3.0.0", torch.__version__):
        assert required["torch"].specifier.contains(release), release
    assert not required["torch"].specifier.contains("2.9.0")  # the floor
    extras = [gpu_bundle.name(r) for group in project["optional-dependencies"].values() for r in group]
    assert "torchvision" not in required and not {"torch", "torchvision"} & set(extras), extras


# What the typical GPU image has (torch for CUDA 13, Python 3.12, no Keras, no TensorFlow).
TYPICAL = ("torch==2.11.0+cu130 numpy==2.1.2 onnxruntime click==8.1.7 pyyaml opencv-python absl-py rich h5py "
           "ml-dtypes packaging typing-extensions markdown-it-py pygments mdurl pip")


def test_the_bundle_asks_only_what_the_machine_lacks():
    pyproject = REPO / "pyproject.toml"
    everything = gpu_bundle.requirements(pyproject, gpu_bundle.Machine())  # nothing known: all
    names = {gpu_bundle.name(r) for r in everything}
    assert {"keras", "numpy", "opencv-python-headless", "click", "pyyaml"} == names
    assert set(everything) <= set(dependencies())
    assert gpu_bundle.requirements(pyproject, gpu_bundle.Machine(have=TYPICAL)) == ["keras>=3.15.1"]
    older = gpu_bundle.Machine(have=TYPICAL.replace("click==8.1.7", "click==7.1") + " keras==3.15.1")
    assert gpu_bundle.requirements(pyproject, older) == ["click>=8.1"]  # a version out of range counts as absent
    nightly = gpu_bundle.Machine(have=TYPICAL + " keras-nightly==3.16.0.dev2026102704")
    assert gpu_bundle.requirements(pyproject, nightly) == []  # the next Keras, under its nightly name
    assert gpu_bundle.requirements(pyproject, gpu_bundle.Machine(have="torch numpy")) == [
        r for r in everything if gpu_bundle.name(r) != "numpy"]


def test_a_probe_counts_modules_without_a_distribution_and_the_machines_markers():
    probed = {"python": "3.12.3", "machine": "x86_64", "markers": {"python_version": "3.12"},
              "distributions": {"torch": "2.11.0a0+nv25.1", "numpy": "1.26.4", "click": "8.1.7", "pyyaml": "6.0.1"},
              "modules": {"cv2": True, "keras": False, "yaml": True}}  # OpenCV built from source: no metadata
    machine = gpu_bundle.Machine(probed)
    assert gpu_bundle.requirements(REPO / "pyproject.toml", machine) == ["keras>=3.15.1"]
    report = {"version": "1", "environment": {"python_version": "3.10"}, "install": [
        resolved("keras", "3.15.1", ["numpy", "optree", "exceptiongroup; python_version < '3.11'"], requested=True),
        resolved("numpy", "2.4.6"), resolved("optree", "0.20.0", ["typing-extensions>=4.6.0"]),
        resolved("typing-extensions", "4.16.0"), resolved("exceptiongroup", "1.3.0")]}
    # typing-extensions is missing; exceptiongroup is needed only below Python 3.11: by the Python
    # that made the report (3.10), not by the machine's
    assert gpu_bundle.missing(report, machine) == ["keras==3.15.1", "optree==0.20.0", "typing-extensions==4.16.0"]
    probed["distributions"]["typing-extensions"] = "4.5.0"  # older than optree requires
    assert "typing-extensions==4.16.0" in gpu_bundle.missing(report, gpu_bundle.Machine(probed))
    probed["distributions"]["typing-extensions"] = "4.12.2"
    assert gpu_bundle.missing(report, gpu_bundle.Machine(probed)) == ["keras==3.15.1", "optree==0.20.0"]
    nothing_known = gpu_bundle.missing(report, gpu_bundle.Machine())
    assert len(nothing_known) == 5 and gpu_bundle.missing(report, gpu_bundle.Machine(), python="3.12") == [
        p for p in nothing_known if not p.startswith("exceptiongroup")]


def resolved(name, version, requires=(), requested=False):
    """One entry of a pip installation report (`pip install --dry-run --report`, format 1)."""
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)},
            "requested": requested, "download_info": {"url": f"https://example.invalid/{name}-{version}.whl"}}


def test_a_machine_with_everything_gets_a_bundle_of_data_only(tmp_path):
    """The probe, run with this Python (which has every dependency), and gpu/gpu_prepare.sh given
    its output: nothing to download (pip is never asked), the data copied."""
    probe = subprocess.run([sys.executable, "gpu/gpu_bundle.py", "probe"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    probed = json.loads(probe.stdout)
    assert gpu_bundle.Machine(probed).version_of("keras") and probed["modules"]["cv2"] is True  # or keras-nightly
    (tmp_path / "machine.json").write_text(probe.stdout)
    data = tmp_path / "cifar.tar.gz"
    data.write_bytes(b"the data, copied as it is")
    bundle = tmp_path / "bundle"
    env = dict(os.environ, BUNDLE=str(bundle), DATA=str(data), PYTHON=sys.executable,
               PIP_INDEX_URL="https://pip.invalid/", PIP_NO_INDEX="1")  # no index reachable
    result = subprocess.run(["bash", "gpu/gpu_prepare.sh", str(tmp_path / "machine.json")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to install" in result.stdout
    assert (bundle / "requirements.txt").read_text() == ""
    assert not list((bundle / "wheels").iterdir())
    assert (bundle / "data" / "cifar.tar.gz").read_bytes() == data.read_bytes()


@pytest.mark.parametrize("args, says", [
    (["a.json", "b.json"], "usage: bash gpu/gpu_prepare.sh [MACHINE_JSON]"),
    (["missing.json"], "No file missing.json: pass what `python3 gpu/gpu_bundle.py probe` wrote"),
])
def test_gpu_prepare_rejects_bad_arguments(args, says, tmp_path):
    result = subprocess.run(["bash", "gpu/gpu_prepare.sh", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, BUNDLE=str(tmp_path / "bundle")))
    assert result.returncode != 0 and says in result.stderr, result.stderr
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("installed, says", [(None, "torchvision is not installed"),
                                              ("0.1.0", "torchvision 0.1.0 is not the release built for torch")])
def test_resnet18_weights_without_a_matching_torchvision_say_how_to_install_it(installed, says, monkeypatch,
                                                                               tmp_path):
    """No torchvision, or one built for another torch (whose import would fail on its operators)."""
    from importlib import metadata

    import keras_cifar as kc
    from keras_cifar.errors import WeightsError

    version = metadata.version

    def installed_version(name):
        if name != "torchvision":
            return version(name)
        if installed is None:
            raise metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(metadata, "version", installed_version)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # never imported: `import torchvision` would raise
    with pytest.raises(WeightsError) as error:
        kc.create_model("resnet18", weights=str(tmp_path / "resnet18.pth"))
    message = str(error.value)
    minor = int(torch.__version__.split(".")[1])
    assert "needs torchvision" in message and says in message and "\n" not in message
    assert f"pip install --no-deps 'torchvision==0.{minor + 15}.*'" in message


def blocking(tmp_path, *names):
    """Environment variables for a subprocess in which `names` (and TensorFlow) cannot be imported."""
    folder = tmp_path / "blocker"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER.replace("BLOCKED = (", f"BLOCKED = {names} + ("))
    return {"PYTHONPATH": str(folder), "PYTHON": sys.executable, "BUNDLE": str(tmp_path / "bundle")}


@pytest.mark.parametrize("missing, says", [
    ("keras", "holds no wheels: run `bash gpu/gpu_prepare.sh`"),
    ("torch", "cannot import torch: install the torch built for this machine's CUDA first"),
])
def test_a_machine_without_the_bundle_is_told_what_to_do(missing, says, tmp_path):
    env = dict(os.environ, **blocking(tmp_path, missing))
    result = subprocess.run(["bash", "-c", "source gpu/gpu_env.sh && gpu_env"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert says in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "bundle").exists()


def test_first_look_times_training_without_the_evaluation(tmp_path):
    """The callback of `first_look fit`: a fit whose evaluation takes 0.5 s more per epoch (a stand-in
    for 10,000 test images) records each epoch's training time without it."""
    import keras

    from gpu import first_look

    class SlowEvaluation(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            time.sleep(0.5)

    class EpochTime(keras.callbacks.Callback):
        seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((64, 4), "float32"), np.zeros((64, 2), "float32")
    times, epochs = tmp_path / "times.json", EpochTime()
    model.fit(x, y, validation_data=(x[:8], y[:8]), batch_size=8, epochs=2, verbose=0,
              callbacks=[epochs, SlowEvaluation(), first_look.training_time(str(times))])
    train_s = json.loads(times.read_text())["train_s"]
    assert len(train_s) == 2
    for training, epoch in zip(train_s, epochs.seconds):
        assert 0 < training <= epoch - 0.5


def test_first_look_divides_training_images_by_training_time(tmp_path, capsys):
    from gpu import first_look

    run = tmp_path / "runs" / "resnet_lite-20260101-000000"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"device_name": "NVIDIA H100 80GB HBM3", "final_accuracy": 0.61,
                                                  "best_accuracy": 0.62, "epochs": 2, "first_step_s": 2.5,
                                                  "train_images_per_epoch": 10000}))
    (run / "metrics.csv").write_text("epoch,epoch_time_s\n1,9.0\n2,5.0\n")  # evaluation included
    (tmp_path / "times.json").write_text(json.dumps({"train_s": [7.5, 4.0]}))
    first_look.run("resnet_lite, fp32", str(tmp_path / "runs"), str(tmp_path / "times.json"))
    line = capsys.readouterr().out
    assert "last epoch 5.00 s of which training 4.00 s (2500 training images/s, evaluation excluded)" in line


def run_first_look(tmp_path, data, **settings):
    """gpu/gpu_first.sh in its CPU mode, TensorFlow and Matplotlib unavailable as on a GPU image,
    its work folder under tmp_path/work -> (the process, the results folder, its seconds)."""
    env = dict(os.environ, **{**blocking(tmp_path, "matplotlib"), "DEVICE": "cpu", "DATA": data,
                              "WORK": str(tmp_path / "work"), **settings})
    (tmp_path / "work").mkdir()
    results = tmp_path / "results"
    started = time.monotonic()
    result = subprocess.run(["bash", str(REPO / "gpu" / "gpu_first.sh"), str(results)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    return result, results, time.monotonic() - started


def assert_within_limits(results, max_files, max_bytes):
    """The results folder holds results.md and logs.tar.gz alone, within the limits, and the work
    folder (runs, checkpoints, the data's array cache) is gone."""
    files = sorted(p.name for p in results.iterdir())
    assert files == ["logs.tar.gz", "results.md"] and len(files) <= max_files, files
    for name in files:
        assert (results / name).stat().st_size <= max_bytes, (name, (results / name).stat().st_size)
    assert not list((results.parent / "work").iterdir())
    with tarfile.open(results / "logs.tar.gz") as tar:
        return {member.name: tar.extractfile(member).read().decode() for member in tar if member.isfile()}


def test_cpu_mode_runs_every_step_without_tensorflow(real_folder_small, tmp_path):
    data = fmt.tar_folder(str(real_folder_small), str(tmp_path / "slice.tar.gz"), ".")
    result, out, _ = run_first_look(tmp_path, data)
    results = (out / "results.md").read_text()
    assert result.returncode == 0, results[-3000:] + result.stderr[-2000:]
    steps = ("install", "env-python", "fit-fp32", "evaluate-fp32", "gpu_check", "fast-keras", "fast-airbench94",
             "googlenet-graph-compiled", "googlenet-graph", "googlenet-off")
    for step in steps:
        assert f"### {step}: ok, " in results, step
    assert "tensorflow not importable" in results and "Traceback" not in results
    assert "resnet_lite, fp32 on cpu" in results and "\nAccuracy: " in results
    assert "training images/s, evaluation excluded" in results
    assert "googlenet, --jit off on cpu" in results and "\n| cnn |" in results
    assert "| keras-cifar `airbench94` | 0 | 1 |" in results and "| airbench94, plain PyTorch | 0 | 1 |" in results
    assert "No steps failed, 0 skipped for the deadline." in results
    archive = assert_within_limits(out, 8, 16 * 2**20)  # the defaults
    assert {f"logs/{step}.log" for step in steps} <= set(archive), sorted(archive)
    assert any(name.endswith("/summary.json") for name in archive) and not any(".keras" in n for n in archive)
    assert "| cnn | none | graph |" in archive["logs/gpu_check.log"]


def test_cpu_mode_keeps_its_deadline_and_trims_its_results_to_the_limits(real_folder_small, tmp_path):
    """A deadline too short for every step: the steps that no longer fit are recorded as skipped
    and the job ends within it. Each Python command prints 300 KB of noise (random, so that gzip
    cannot shrink it, in lines of 1,000 characters) before its own output: logs.tar.gz keeps the end
    of each log, and results.md, which records the first 100 lines of some commands, its beginning
    and every step's outcome, each within 16 KiB."""
    data = fmt.tar_folder(str(real_folder_small), str(tmp_path / "slice.tar.gz"), ".")
    noisy = tmp_path / "noisy-python"
    noisy.write_text(f"#!/bin/bash\nhead -c 300000 /dev/urandom | base64 -w 1000\nexec {sys.executable} \"$@\"\n")
    noisy.chmod(0o755)
    result, out, seconds = run_first_look(tmp_path, data, DEADLINE="45", MAX_FILES="2", MAX_FILE_SIZE="16K",
                                          PYTHON=str(noisy))
    results = (out / "results.md").read_text()
    assert seconds < 45 + 10, (seconds, results[-3000:])
    assert "### env-python: ok, " in results, results[-3000:] + result.stderr[-2000:]
    assert "\n[results.md cut here: it must stay under 16K. Every step's outcome:]\n" in results
    outcomes = results.split("Every step's outcome:]\n")[1]
    assert "### install: ok, " in outcomes and "### env-python: ok, " in outcomes
    assert "### googlenet-off: skipped, " in outcomes and "skipped for the deadline." in outcomes
    archive = assert_within_limits(out, 2, 16 * 1024)
    log = archive["logs/env-python.log"]
    assert log.startswith("[... the first ") and "bytes cut: logs.tar.gz must stay under 16K]" in log
    assert log.rstrip().endswith(results.split("\n- keras ")[1].split("\n")[0])  # the log's own last line
    assert not any(name.startswith("runs/") for name in archive)  # left out first, before any log is cut


@pytest.mark.parametrize("settings, says", [
    ({"DEADLINE": "9m"}, "DEADLINE must be a whole number"),
    ({"MAX_FILES": "1"}, "MAX_FILES must be at least 2"),
    ({"MAX_FILE_SIZE": "lots"}, "MAX_FILE_SIZE must be bytes, or a number with K or M"),
    ({"MAX_FILE_SIZE": "1K"}, "MAX_FILE_SIZE must be at least 4K"),
])
def test_gpu_first_rejects_bad_settings(settings, says, tmp_path):
    result = subprocess.run(["bash", str(REPO / "gpu" / "gpu_first.sh"), str(tmp_path / "results")],
                            env=dict(os.environ, **settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert not (tmp_path / "results").exists()


def test_gpu_first_wants_an_empty_results_folder_and_a_work_folder_outside_it(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.md").write_text("an earlier run")
    result = subprocess.run(["bash", str(REPO / "gpu" / "gpu_first.sh"), str(tmp_path / "full")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "is not empty: name a new or empty one" in result.stderr
    result = subprocess.run(["bash", str(REPO / "gpu" / "gpu_first.sh"), str(tmp_path / "out")],
                            env=dict(os.environ, WORK=str(tmp_path / "out")), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "WORK must lie outside the results folder" in result.stderr
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("stage", ["muon", "95"])
def test_gpu_session_smoke_on_cpu_without_tensorflow(stage, real_folder_small, tmp_path, without_tensorflow):
    """gpu/gpu_session.sh, the prepared GPU session, as its header's CPU smoke run: both
    programs of the muon (or 95) stage on a slice of the real data, TensorFlow unavailable as
    on the GPU machine, and the runs collected into runs.tgz. (The airbench94 stage's two programs run
    in gpu/gpu_first.sh's CPU mode, above; the stages share the rest.)"""
    import tarfile

    data = fmt.tar_folder(str(real_folder_small), str(tmp_path / "slice.tar.gz"), ".")
    out = tmp_path / "out"
    env = dict(os.environ, **without_tensorflow, OUT=str(out), DEVICE="cpu", SEEDS="0", DATA=data,
               RUNS=str(tmp_path / "runs"), PYTHON=sys.executable,
               FIT_ARGS="--epochs 1 --batch-size 64 --eval-batch-size 100 --mixed-precision none --train-images 128",
               AIRBENCH_ARGS="--epochs 1 --batch-size 64 --train-images 128")
    result = subprocess.run(["bash", str(REPO / "gpu" / "gpu_session.sh"), stage], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    log = (out / "session.log").read_text()
    assert result.returncode == 0, log[-3000:]
    assert "without TFDS" in log and "Traceback" not in log
    with tarfile.open(out / "runs.tgz") as tar:
        names = tar.getnames()
    tag, recipe, program = {"airbench94": ("", "airbench94", "airbench94"), "muon": ("-muon", "airbench94_muon", "airbench94_muon"),
                            "95": ("-95", "airbench95", "airbench95")}[stage]
    assert any(n.startswith(f"./keras{tag}-seed0/") and n.endswith("summary.json") for n in names), names
    assert any(n.startswith(f"./keras{tag}-seed0/") and n.endswith("metrics.csv") for n in names), names
    assert f"./torch{tag}-seed0.json" in names and not any(n.endswith(".keras") for n in names)
    assert f"| keras-cifar `{recipe}` | 0 | 1 |" in log and f"| {program}, plain PyTorch | 0 | 1 |" in log
