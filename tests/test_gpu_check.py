"""bench/gpu_check.py, the GPU check, run as a CPU smoke test: it must run where only torch,
torchvision, keras and pyyaml are installed (the GPU machines), and its checks must fail when
what they check breaks."""

import os
import subprocess
import sys

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


def test_gpu_check_runs_without_tensorflow_and_passes_on_cpu(tmp_path):
    shadow_packages(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--models", "cnn,resnet18", "--precisions",
         "none", "--steps", "6", "--resize-to", "32"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| cnn | none |" in result.stdout and "| resnet18 | none |" in result.stdout
    assert "All 2 rows passed." in result.stdout


def test_gpu_check_rows_fail_when_a_step_syncs(monkeypatch):
    from bench import gpu_check
    from keras_cifar.models.classifier import ImageClassifier

    original = ImageClassifier.train_step

    def syncing(self, data):
        logs = original(self, data)
        float(logs["loss"])  # what a careless step would do
        return logs

    monkeypatch.setattr(ImageClassifier, "train_step", syncing)
    row = gpu_check.check_row("cnn", "none", "cpu", 8, 8)
    assert row["syncs"] > 0 and "syncs" in row["failed"]


@pytest.mark.parametrize("broken", ["capture"])
def test_gpu_check_rows_fail_when_capture_differs(monkeypatch, broken):
    from bench import gpu_check
    from keras_cifar.models import graph_capture

    original = graph_capture.ForwardGraphs.__call__

    def drifting(self, x, training):
        return original(self, x, training) * 1.001  # a captured graph that computes something else

    monkeypatch.setattr(graph_capture.ForwardGraphs, "__call__", drifting)
    row = gpu_check.check_row("cnn", "none", "cpu", 8, 8)
    assert "capture" in row["failed"], row
