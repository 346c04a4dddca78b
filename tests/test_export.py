"""`export`: every model of the zoo as ONNX and .pt2, at any batch size, with the Keras model's
logits; a .pt2 served by a process without Keras; clear errors. Each model is exported once."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_cifar
from keras_cifar.errors import ExportError, MissingExtraError, UsageError
from keras_cifar.data import CIFAR10_CLASSES
from keras_cifar.export import capture, export_checkpoint, export_model, metadata, read_metadata, write
from keras_cifar.models import list_models
from keras_cifar.serving import load_exported

RTOL = 1e-4


def build(name):
    keras.utils.set_random_seed(0)
    return keras_cifar.create_model(name, **({"weights": None} if name == "resnet18" else {}))


def batches(images):
    """Batch sizes 1 and 7: the program is not fixed to the batch it was captured at (2)."""
    return [images[:1], images[:7]]


def assert_close(actual, expected):
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= RTOL * scale, (np.abs(actual - expected).max(), scale)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, real_images):
    """{model: (.keras path, .onnx path, .pt2 path, [(images, Keras logits)])}, all models."""
    folder = tmp_path_factory.mktemp("export")
    files = {}
    for name in list_models():
        model = build(name)
        checkpoint = folder / f"{name}.keras"
        model.save(checkpoint)
        cases = [(images, keras.ops.convert_to_numpy(model(images, training=False)))
                 for images in batches(real_images)]
        program = capture(model)  # once for both formats
        onnx_path, pt2_path = str(folder / f"{name}.onnx"), str(folder / f"{name}.pt2")
        write(program, onnx_path, "onnx", metadata(model, CIFAR10_CLASSES))
        write(program, pt2_path, "torch", metadata(model, CIFAR10_CLASSES))
        files[name] = (checkpoint, onnx_path, pt2_path, cases)
    return files


@pytest.mark.parametrize("name", list_models())
def test_onnx_runs_in_onnxruntime_with_the_keras_logits(exported, name):
    import onnxruntime

    _, onnx_path, _, cases = exported[name]
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "images" and given.type == "tensor(uint8)" and given.shape == ["batch", 32, 32, 3]
    for images, expected in cases:
        assert_close(session.run(None, {"images": images})[0], expected)


def test_pt2_serves_in_a_process_without_keras(exported, tmp_path):
    """One process, all models: only torch and NumPy are imported."""
    jobs = {name: (str(pt2), [str(_save(tmp_path / f"{name}-{i}.npy", images)) for i, (images, _) in
                              enumerate(cases)]) for name, (_, _, pt2, cases) in exported.items()}
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import torch
        jobs = json.loads(sys.argv[1])
        for name, (pt2, inputs) in jobs.items():
            module = torch.export.load(pt2).module()
            for path in inputs:
                np.save(path + ".out.npy", module(torch.from_numpy(np.load(path))).detach().numpy())
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "keras_cifar", "tensorflow"))
        assert not loaded, loaded
    """)
    result = subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], capture_output=True, text=True,
                            timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, (_, _, _, cases) in exported.items():
        for (_, expected), path in zip(cases, jobs[name][1]):
            assert_close(np.load(path + ".out.npy"), expected)


def _save(path, array):
    np.save(path, array)
    return path


def test_exported_files_hold_class_names_and_the_run_config(exported, tmp_path):
    _, onnx_path, pt2_path, _ = exported["cnn"]
    for path in (onnx_path, pt2_path):
        meta = read_metadata(path)
        assert meta["class_names"] == list(CIFAR10_CLASSES) and meta["model"] == "cnn"
        assert load_exported(path).metadata == meta
    run = tmp_path / "cnn-20260101-000000"
    run.mkdir()
    build("cnn").save(run / "best.keras")
    (run / "config.yaml").write_text("model: cnn\nepochs: 3\nlr: 0.002\n")
    names = [f"kind{i}" for i in range(10)]
    (run / "state.json").write_text(json.dumps({"class_names": names}))
    for format in ("onnx", "torch"):
        path, _ = export_checkpoint(str(run), format)
        assert path == str(run / ("best.onnx" if format == "onnx" else "best.pt2"))
        meta = read_metadata(path)
        assert meta["class_names"] == names and meta["config"] == {"model": "cnn", "epochs": 3, "lr": 0.002}


def test_a_mixed_precision_checkpoint_exports_in_float32(tmp_path, real_images):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = build("cnn")
    finally:
        keras.config.set_dtype_policy("float32")
    reference = build("cnn")
    reference.set_weights(mixed.get_weights())
    path = tmp_path / "mixed.pt2"
    export_model(mixed, str(path), "torch", metadata(mixed, ["c"] * 10))
    expected = keras.ops.convert_to_numpy(reference(real_images[:3], training=False))
    assert_close(load_exported(str(path)).predict(real_images[:3]), expected)


def test_a_model_on_a_gpu_exports_a_file_of_cpu_tensors(monkeypatch, tmp_path, real_images):
    """As on a GPU machine, where a loaded model's variables and Keras's default device are the
    GPU's. This machine has none: the device check is patched to place the model on "cuda:0", and
    Keras's default device is "meta" (a tensor made there, outside the CPU scope, holds no data).
    The file is made from a copy reloaded on the CPU, under the CPU scope: its tensors are all on
    the CPU and it gives the model's logits."""
    import torch

    try:
        from keras.src.backend.torch.ops import core  # Keras 3.16
    except ImportError:
        from keras.src.backend.torch import core  # Keras 3.15

    from keras_cifar import export

    model = build("cnn")
    expected = keras.ops.convert_to_numpy(model(real_images[:3], training=False))
    where, exported_models = export.variables_device, []
    monkeypatch.setattr(export, "variables_device", lambda m: "cuda:0" if m is model else where(m))
    inference_module = export._inference_module
    monkeypatch.setattr(export, "_inference_module", lambda m: exported_models.append(m) or inference_module(m))
    monkeypatch.setattr(core, "DEFAULT_DEVICE", "meta")
    path = str(tmp_path / "model.pt2")
    export_model(model, path, "torch", metadata(model, CIFAR10_CLASSES))
    monkeypatch.undo()
    (copy,) = exported_models
    assert copy is not model and where(copy) == "cpu"
    program = torch.export.load(path)
    tensors = [*program.state_dict.values(), *program.constants.values()]
    assert tensors and {tensor.device.type for tensor in tensors} == {"cpu"}
    assert_close(load_exported(path).predict(real_images[:3]), expected)


@keras.saving.register_keras_serializable(package="tests")
class DataDependent(keras.layers.Layer):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def call(self, x):
        return x * 2 if float(keras.ops.max(x)) > 0 else x

    def compute_output_shape(self, input_shape):
        return input_shape


def unexportable_model():
    inputs = keras.Input((32, 32, 3), name="images")
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(DataDependent(name="branchy")(inputs)))
    return keras.Model(inputs, outputs, name="custom")


@pytest.mark.parametrize("format", ["onnx", "torch"])
def test_a_layer_that_cannot_export_is_named(tmp_path, format):
    model = unexportable_model()
    with pytest.raises(ExportError, match=r"its layer 'branchy' \(DataDependent\)"):
        export_model(model, str(tmp_path / "m.x"), format, metadata(model, ["c"] * 10))


@pytest.fixture
def hidden(monkeypatch):
    """hidden(*packages): those packages cannot be found, as if not installed."""

    def hide(*packages):
        class NotInstalled:
            def __init__(self, finder):
                self.finder = finder

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in packages:
                    return None
                return self.finder.find_spec(name, path, target)

            def __getattr__(self, attribute):
                return getattr(self.finder, attribute)

        for module in [m for m in sys.modules if m.split(".")[0] in packages]:
            monkeypatch.delitem(sys.modules, module)
        monkeypatch.setattr(sys, "meta_path", [NotInstalled(finder) for finder in sys.meta_path])

    return hide


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "cnn.keras"
    build("cnn").save(path)
    return str(path)


def test_missing_export_packages_name_the_extra(cnn_checkpoint, hidden, tmp_path):
    pt2_path, _ = export_checkpoint(cnn_checkpoint, "torch", str(tmp_path / "m.pt2"))
    (tmp_path / "m.onnx").write_bytes(b"an ONNX file")  # never read: the missing package is found first
    hidden("onnxscript", "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"onnxscript, which is not installed.*keras-cifar\[export\]"):
        export_checkpoint(cnn_checkpoint, "onnx", str(tmp_path / "m.onnx"))
    with pytest.raises(MissingExtraError, match=r"onnxruntime, which is not installed.*keras-cifar\[export\]"):
        load_exported(str(tmp_path / "m.onnx"))
    assert load_exported(pt2_path).predict(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 10)  # torch only


def test_unknown_format_and_wrong_suffix(cnn_checkpoint, tmp_path):
    with pytest.raises(UsageError, match="`format` must be one of onnx, torch"):
        export_checkpoint(cnn_checkpoint, "tflite")
    with pytest.raises(UsageError, match=r"`output` must end in \.pt2"):
        export_checkpoint(cnn_checkpoint, "torch", str(tmp_path / "m.onnx"))
