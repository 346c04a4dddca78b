"""gpu/gpu_check.py, the GPU check, run as a CPU smoke test: it must run where only torch,
keras and pyyaml (and usually torchvision) are installed (the GPU machines), and its checks must
fail when what they check breaks."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

ABSENT = ("tensorflow", "tensorflow_datasets", "cv2", "matplotlib", "tensorboard")


def shadow_packages(folder, names=ABSENT):
    """Packages that fail to import, first on PYTHONPATH: as if they were not installed (the GPU
    machines have torch and keras only)."""
    for name in names:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    return folder


def test_gpu_check_runs_without_tensorflow_and_passes_on_cpu_printing_each_row_when_done(tmp_path):
    """Each row is printed (and flushed) before the next one starts: a check killed at its time
    limit keeps the rows it finished."""
    shadow_packages(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "gpu.gpu_check", "--device", "cpu", "--models", "cnn,resnet18", "--precisions",
         "float32", "--steps", "6", "--resize-to", "32"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}", "PYTHONUNBUFFERED": "1"},
    )
    output = result.stdout
    assert result.returncode == 0, output[-6000:]
    assert "| cnn | none | graph |" in output and "| resnet18 | none | graph |" in output
    assert output.index("| cnn | none | graph |") < output.index("resnet18 none graph ...")
    assert "All 2 rows passed." in output


def test_a_row_without_torchvision_keeps_its_checks_and_says_what_is_missing(monkeypatch):
    """Where no torchvision matches the installed torch (a new torch, before its torchvision is out),
    resnet18's plain-PyTorch column says so and the row passes on its checks; another missing module
    is still an error."""
    from gpu import gpu_check

    def missing(name):
        def create_reference(model_name):
            raise ModuleNotFoundError(f"{name} is not installed", name=name)
        return create_reference

    monkeypatch.setattr(gpu_check.reference, "create_reference", missing("torchvision"))
    assert gpu_check.plain_pytorch_images_per_s("resnet18", "none", "cpu", 4, 5, 32, 5) is None
    row = {"model": "resnet18", "precision": "none", "jit": "graph", "first_steps_s": 1.0, "timed_steps": 5,
           "images_per_s": 100.0, "torch_images_per_s": None, "setup_s": 0.01, "setup_share": 0.01,
           "peak_mib": float("nan"), "syncs": 0, "capture": 0.0, "reload": 0.0, "failed": []}
    assert "| 100 | - (needs torchvision) | - | 0.010 s, 1.0% |" in gpu_check.format_row(row)
    assert gpu_check.format_row(row).endswith("| ok |")
    monkeypatch.setattr(gpu_check.reference, "create_reference", missing("yaml"))
    with pytest.raises(ModuleNotFoundError):
        gpu_check.plain_pytorch_images_per_s("resnet18", "none", "cpu", 4, 5, 32, 5)


def test_gpu_check_flags_choose_the_rows_and_reject_unknown_values(monkeypatch):
    from click.testing import CliRunner

    from gpu import gpu_check

    calls = []

    def row(model_name, precision, device, batch_size, steps, resize_to=None, jit="graph"):
        calls.append((model_name, precision, jit))
        return {"model": model_name, "precision": precision, "jit": jit, "skipped": "not run here"}

    monkeypatch.setattr(gpu_check, "check_row", row)
    result = CliRunner().invoke(gpu_check.main, ["--device", "cpu", "--models", "cnn,googlenet", "--precisions",
                                                 "float32,bf16", "--jit", "graph,graph-compiled,off"])
    assert result.exit_code == 0, result.output
    assert calls == [(model, precision, jit) for model in ("cnn", "googlenet") for precision in ("none", "bf16")
                     for jit in ("graph", "graph-compiled", "off")]
    assert "| googlenet | bf16 | graph-compiled | - |" in result.output
    for flag, value in [("--jit", "graph,compile"), ("--precisions", "fp32"), ("--models", "cnn,resnet")]:
        result = CliRunner().invoke(gpu_check.main, ["--device", "cpu", flag, value])
        assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, result.output


def test_gpu_check_times_the_steps_alone_over_a_fit_long_enough_for_its_set_up(monkeypatch):
    """A `fit` whose set-up takes 0.3 s more (before its first step): images/s come from the steps
    alone, and the timed fit runs enough epochs that its set-up is under 5% of it."""
    from gpu import gpu_check

    fit_steps = gpu_check.fit_steps

    def slow_set_up(*args, **kwargs):
        time.sleep(0.3)
        fit_steps(*args, **kwargs)

    monkeypatch.setattr(gpu_check, "fit_steps", slow_set_up)
    row = gpu_check.check_row("cnn", "none", "cpu", 8, 6)
    assert row["failed"] == [], row
    steps_s = row["timed_steps"] * 8 / row["images_per_s"]
    assert steps_s <= row["fit_s"] - 0.3 and row["setup_s"] >= 0.3
    assert row["timed_steps"] > 6 and row["setup_share"] == pytest.approx(row["setup_s"] / row["fit_s"])
    assert f"{row['setup_s']:.3f} s, {row['setup_share']:.1%}" in gpu_check.format_row(row)
    # The epochs are chosen from the warm-up's timings (timings on a busy machine vary: the rule itself
    # is checked here): enough that the set-up is under SETUP_SHARE of the fit, within the cap.
    epochs = gpu_check.epochs_for(setup_s=0.3, step_s=0.01, steps=6)
    assert 0.3 / (0.3 + epochs * 6 * 0.01) < gpu_check.SETUP_SHARE


def test_gpu_check_rows_fail_when_a_step_syncs(monkeypatch):
    from gpu import gpu_check
    from keras_cifar.models.classifier import ImageClassifier

    original = ImageClassifier.train_step

    def syncing(self, data):
        logs = original(self, data)
        float(self.loss_tracker.running_mean())  # what a careless step would do: read its loss
        return logs

    monkeypatch.setattr(ImageClassifier, "train_step", syncing)
    row = gpu_check.check_row("cnn", "none", "cpu", 8, 8)
    assert row["syncs"] > 0 and "syncs" in row["failed"]


@pytest.mark.parametrize("broken", ["capture"])
def test_gpu_check_rows_fail_when_capture_differs(monkeypatch, broken):
    from gpu import gpu_check
    from keras_cifar.models import graph_capture

    original = graph_capture.ForwardGraphs.__call__

    def drifting(self, x, training):
        return original(self, x, training) * 1.001  # a captured graph that computes something else

    monkeypatch.setattr(graph_capture.ForwardGraphs, "__call__", drifting)
    row = gpu_check.check_row("cnn", "none", "cpu", 8, 8)
    assert "capture" in row["failed"], row
