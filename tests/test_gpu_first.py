"""Installing on a GPU machine that has its own torch, and the first look there (gpu/gpu_first.sh)."""

import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from gpu import gpu_bundle
from tests import data_formats as fmt
from tests.conftest import BLOCKER, REPO


def dependencies():
    return gpu_bundle.tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_pip_keeps_the_torch_a_gpu_machine_came_with():
    """A GPU image's torch, built for its CUDA, satisfies the dependencies, and nothing required
    pins a torch of its own (torchvision's newest release pins the newest torch)."""
    import torch

    required = {gpu_bundle.name(r): Requirement(r) for r in dependencies()}
    for release in ("2.11.0+cu130", "2.9.1", torch.__version__):
        assert required["torch"].specifier.contains(release), release
    assert "torchvision" not in required


def test_the_bundle_installs_what_a_torch_only_machine_lacks():
    wanted = gpu_bundle.requirements(REPO / "pyproject.toml")
    names = {gpu_bundle.name(r) for r in wanted}
    assert {"keras", "numpy", "opencv-python-headless", "click", "pyyaml"} <= names
    assert not names & gpu_bundle.NOT_INSTALLED
    assert set(wanted) <= set(dependencies())


def test_resnet18_weights_without_torchvision_say_how_to_install_it(monkeypatch, tmp_path):
    import keras_cifar as kc
    from keras_cifar.errors import WeightsError

    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` raises ImportError
    with pytest.raises(WeightsError) as error:
        kc.create_model("resnet18", weights=str(tmp_path / "resnet18.pth"))
    message = str(error.value)
    assert "needs torchvision" in message and "pip install 'torchvision==0." in message and "\n" not in message


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


def test_cpu_mode_runs_every_step_without_tensorflow(real_folder_small, tmp_path):
    data = fmt.tar_folder(str(real_folder_small), str(tmp_path / "slice.tar.gz"), ".")
    env = dict(os.environ, **blocking(tmp_path), DEVICE="cpu", DATA=data)
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(REPO / "gpu" / "gpu_first.sh"), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    results = (out / "results.md").read_text()
    assert result.returncode == 0, results[-3000:]
    for step in ("env-python", "fit-fp32", "evaluate-fp32", "gpu_check", "fast-keras", "fast-airbench94",
                 "googlenet-trace", "googlenet-off"):
        assert f"### {step}: ok, " in results, step
    assert "tensorflow not importable" in results and "Traceback" not in results
    assert "resnet_lite, fp32 on cpu" in results and "\nAccuracy: " in results
    assert "googlenet, --jit off on cpu" in results and "\n| cnn |" in results
    assert "| keras-cifar `airbench94` | 0 | 1 |" in results and "| airbench94, plain PyTorch | 0 | 1 |" in results
