"""What the CPU can check of the GPU path: TensorFlow kept off the GPU and out of the model, predict
and GPU-check paths; device choice and its errors; mixed-precision dtypes; the GPU math modes
recorded; out-of-memory errors without a traceback. gpu/gpu_check.py checks the rest on a GPU."""

import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from keras_cifar.errors import ConfigError, UsageError
from keras_cifar.train.config import resolve_config
from keras_cifar.train.device import gpu_settings, select_device, set_precision
from tests.conftest import REPO
from tests.test_gpu_check import shadow_packages

# --- TensorFlow: one import site, GPUs hidden, absent from models and inference


def test_tensorflow_is_imported_in_one_place_only():
    offenders = []
    for path in sorted((REPO / "keras_cifar").rglob("*.py")):
        if path.name == "tensorflow_cpu.py":
            continue
        text = path.read_text()
        if re.search(r"^\s*(import tensorflow\b(?!_)|from tensorflow\b(?!_))", text, re.M):
            offenders.append(f"{path.name}: imports tensorflow")
        if re.search(r"^\s*(import|from) tensorflow_datasets", text, re.M) and "import_tfds()" not in text:
            offenders.append(f"{path.name}: imports tensorflow_datasets without import_tfds()")
    assert not offenders, offenders


def test_import_tensorflow_hides_every_gpu_from_it(tmp_path):
    """With a GPU build of TensorFlow (a stand-in that records what it is asked), the first import
    through keras_cifar hides the GPUs before TensorFlow could claim their memory."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import json, os\n"
        "class config:\n"
        "    @staticmethod\n"
        "    def set_visible_devices(devices, kind):\n"
        "        open(os.environ['RECORD'], 'w').write(json.dumps([devices, kind]))\n"
        "    @staticmethod\n"
        "    def get_visible_devices(kind):\n"
        "        return []\n")
    record = tmp_path / "record.json"
    result = subprocess.run(
        [sys.executable, "-c", "from keras_cifar.tensorflow_cpu import import_tensorflow; import_tensorflow()"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}",
                                                       "RECORD": str(record)}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert record.read_text() == '[[], "GPU"]'


def test_models_checkpoints_and_predict_never_import_tensorflow(tmp_path, real_images):
    """Building every model, saving and loading a checkpoint and `predict` work where TensorFlow,
    TFDS and TensorBoard are not installed (the packages fail to import here)."""
    shadow_packages(tmp_path, ("tensorflow", "tensorflow_datasets", "tensorboard"))
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    import cv2

    for index, image in enumerate(real_images[:3]):
        cv2.imwrite(str(images_dir / f"{index}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    script = (
        "import sys, keras\n"
        "import keras_cifar\n"
        "from keras_cifar.train.predict import predict_files\n"
        "for name in keras_cifar.list_models():\n"
        "    options = {'resize_to': 32, 'weights': None} if name == 'resnet18' else {}\n"
        "    options = {'resize_to': 32} if name == 'googlenet' else options\n"
        "    keras_cifar.create_model(name, **options)\n"
        "model = keras_cifar.create_model('cnn')\n"
        f"model.save({str(tmp_path / 'cnn.keras')!r})\n"
        f"model = keras.saving.load_model({str(tmp_path / 'cnn.keras')!r})\n"
        f"results, failures = predict_files(model, [{str(images_dir)!r}], [str(i) for i in range(10)], 3)\n"
        "assert len(results) == 3 and not failures, (results, failures)\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


# --- device choice


def test_device_accepts_cuda_n_and_rejects_anything_else():
    assert resolve_config(None, {"model": "cnn", "device": "cuda:3"}).device == "cuda:3"
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match=r"`device` must be auto, cpu, cuda or cuda:N"):
            resolve_config(None, {"model": "cnn", "device": bad})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_names_the_torch_build():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(UsageError) as error:
            select_device(device)
        message = str(error.value)
        assert f"`device={device!r}` was requested" in message and torch.__version__ in message
        assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build") in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_auto_warns_when_the_big_models_fall_back_to_the_cpu():
    with pytest.warns(UserWarning, match="googlenet at 224x224 on the CPU takes hours"):
        assert select_device("auto", model="googlenet") == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_device("auto", model="cnn") == "cpu"
        assert select_device("cpu", model="resnet18") == "cpu"


# --- the test suite's device


def test_the_suite_runs_on_the_cpu_even_where_torch_sees_a_gpu():
    """tests/conftest.py pins Keras's default device, `device='auto'` and subprocesses to the CPU
    (a subprocess here is told that CUDA is available, as on a GPU machine)."""
    assert select_device("auto") == "cpu"
    script = ("import torch\n"
              "torch.cuda.is_available = lambda: True\n"
              "import keras_cifar, keras\n"
              "print(keras.ops.zeros(1).device.type)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "cpu", result.stderr[-2000:]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # and subprocesses' torch sees no GPU


@pytest.mark.gpu
def test_a_gpu_test_runs_on_cuda(pinned_device):
    assert pinned_device == "cuda" and keras.ops.zeros(1).device.type == "cuda"
    assert select_device("auto") == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on a machine without a GPU")
def test_gpu_tests_are_skipped_without_a_gpu():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu",
                             "tests/test_gpu_readiness.py"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b[1-9]\d* skipped\b", result.stdout) and "failed" not in result.stdout, result.stdout[-3000:]
    assert "needs a CUDA GPU" in result.stdout


def test_gpu_tests_collect_where_tensorflow_tfds_and_tensorboard_are_not_installed(without_tensorflow):
    """`pytest -m gpu tests/` on a GPU image without them: the modules that use them import them
    lazily or skip, and collection has no error."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-rs", "-m", "gpu", "tests/"],
                            cwd=REPO, env={**os.environ, **without_tensorflow}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "tests/test_gpu_readiness.py::test_a_gpu_test_runs_on_cuda" in result.stdout
    assert "error" not in result.stdout.lower()
    assert "could not import 'tensorflow'" in result.stdout  # test_tensorboard.py, skipped


# --- precision and GPU math modes


def test_bf16_is_refused_on_a_gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args, **kwargs: "Tesla T4")
    with pytest.raises(UsageError, match="Tesla T4 has no bfloat16 support"):
        set_precision("bf16", "cuda")


@pytest.fixture
def gpu_math():
    """The GPU math modes as they were before the test (set again through `allow_tf32`)."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled())
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[:4]
    torch.use_deterministic_algorithms(saved[4])
    keras.mixed_precision.set_global_policy("float32")


def tf32_as_read_by_torch_and_inductor():
    """Every TF32 getter that keras-cifar, users' scripts and Inductor (torch.compile: its cache
    keys, autotuning and kernel templates) read; with a mix of torch's two TF32 APIs the legacy
    ones raise."""
    return {
        "matmul precision": torch.get_float32_matmul_precision(),
        "cublas allow_tf32": torch._C._get_cublas_allow_tf32(),
        "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
    }


def test_tf32_stays_readable_by_every_api_after_set_precision_and_the_checks_float32_block(gpu_math):
    from gpu import gpu_check

    set_precision("none", "cuda")
    on = tf32_as_read_by_torch_and_inductor()
    with gpu_check.deterministic("cuda"):
        off = tf32_as_read_by_torch_and_inductor()
        assert gpu_settings("cuda")["tf32"] is False
    assert on == tf32_as_read_by_torch_and_inductor()  # restored
    assert on == {"matmul precision": "high", "cublas allow_tf32": True, "matmul.allow_tf32": True,
                  "cudnn.allow_tf32": True, "matmul.fp32_precision": "tf32", "cudnn.conv.fp32_precision": "tf32"}
    assert (off["matmul precision"], off["cublas allow_tf32"], off["matmul.allow_tf32"], off["cudnn.allow_tf32"],
            off["matmul.fp32_precision"]) == ("highest", False, False, False, "ieee")
    assert off["cudnn.conv.fp32_precision"] != "tf32"


def test_deterministic_switches_tf32_and_autotuning_off_and_is_recorded(monkeypatch, gpu_math):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert set_precision("none", "cuda", deterministic=True) == {
        "tf32": False, "cudnn_benchmark": False, "deterministic": True}
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_float32_matmul_precision() == "highest"
    assert set_precision("none", "cuda") == {"tf32": True, "cudnn_benchmark": True, "deterministic": False}
    assert gpu_settings("cpu") is None and set_precision("none", "cpu") is None


@pytest.mark.parametrize("model_name", ["inception_lite", "resnet18"])
def test_mixed_precision_keeps_the_head_in_float32_and_reloads_with_the_runs_policy(model_name, tmp_path):
    from keras_cifar import create_model
    from keras_cifar.keras_internals import all_layers

    options = {"resize_to": 32, "weights": None} if model_name == "resnet18" else {}
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = create_model(model_name, **options)
        model.save(tmp_path / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    assert keras.ops.convert_to_numpy(model(images)).dtype == np.float32  # logits in float32
    reloaded = keras.saving.load_model(tmp_path / "model.keras")  # under the float32 global policy
    policies = {layer.name: layer.dtype_policy.name for layer in all_layers(reloaded)}
    assert policies["fc"] == "float32"
    convs = {name: policy for name, policy in policies.items() if "conv" in name}
    assert convs and set(convs.values()) == {"mixed_bfloat16"}, convs  # inside the custom blocks too
    assert keras.ops.convert_to_numpy(reloaded(images)).dtype == np.float32


# --- the jit setting


def test_jit_graph_compiled_captures_the_graph_for_torch_compile(monkeypatch, tmp_path, real_folder_small):
    from keras_cifar.models.classifier import ImageClassifier
    from keras_cifar.train.trainer import fit

    calls = []
    original = ImageClassifier.set_graph_capture

    def recording(self, enabled, compiled=False):
        calls.append((enabled, compiled))
        original(self, enabled, compiled)

    monkeypatch.setattr(ImageClassifier, "set_graph_capture", recording)
    config = resolve_config(None, dict(model="cnn", epochs=1, train_images=32, eval_images=16, jit="graph-compiled",
                                       data=str(real_folder_small), data_dir=str(tmp_path / "tfds"),
                                       log_dir=str(tmp_path / "logs"), tensorboard=False))
    fit(config, verbose=0, echo=lambda message: None)
    assert calls[0] == (True, True)


# --- out of memory, anywhere


def test_out_of_memory_in_evaluate_ends_with_a_message_and_the_runs_batch_size(monkeypatch, tmp_path,
                                                                              real_folder_small):
    from keras_cifar.cli import cli
    from keras_cifar.train import evaluation
    from keras_cifar.train.trainer import fit

    config = resolve_config(None, dict(model="cnn", epochs=1, train_images=64, eval_images=32, eval_batch_size=7,
                                       data=str(real_folder_small), data_dir=str(tmp_path / "tfds"),
                                       log_dir=str(tmp_path / "logs")))
    run = fit(config, verbose=0, echo=lambda message: None).run_path
    seen = []

    def out_of_memory(model, split, batch_size):
        seen.append(batch_size)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(evaluation, "predict_logits", out_of_memory)
    result = CliRunner().invoke(cli, ["evaluate", "--checkpoint", run, "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "out of GPU memory. Lower --batch-size" in result.output and "Traceback" not in result.output
    assert seen == [7]  # the run's eval_batch_size
