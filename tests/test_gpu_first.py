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
