"""`export`: a checkpoint as a file that serves without Keras or keras-cifar.

Two formats, both from one `torch.export` capture of the plain Keras forward pass (inference
mode, float32, any batch size): `onnx` (for onnxruntime and other ONNX runtimes) and `torch`
(a `.pt2` ExportedProgram for `torch.export.load`). Each takes the raw images the checkpoint
takes (uint8, NHWC, RGB 0..255; the preprocessing is inside) and gives float32 logits, and
carries the class names and the run's config as metadata (`read_metadata`).

Keras 3.15's `model.export` is gone around in two places: its `format="torch"` cannot store
metadata in the file (`torch.export.save`'s `extra_files`), and its `format="onnx"` with a
dynamic batch falls back to the TorchScript exporter, which fails on googlenet. The capture
below is the call Keras's torch export makes (non-strict, a dynamic batch dimension traced at
batch 2 so that it is not specialised to 1), and the ONNX file is converted from it by torch's
own exporter.

A file is made on the CPU wherever the model is: a model on a GPU (loaded on a GPU machine) is
reloaded on the CPU first, and the capture runs under Keras's CPU device scope with a CPU sample,
so that the file holds CPU tensors only and serves on any machine.
"""

import json
import os
import time

from keras_cifar.errors import ExportError, MissingExtraError, UsageError

FORMATS = {"onnx": ".onnx", "torch": ".pt2"}
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH = "batch"
METADATA_FILE = "keras_cifar.json"  # the metadata's name among a .pt2's extra files
ONNX_EXPORT_PACKAGES = ("onnx", "onnxscript")
JSON_KEYS = ("class_names", "config")  # ONNX metadata values are strings: these are JSON


def require_packages(packages, purpose):
    """Raises MissingExtraError naming the export extra if a package of `packages` is missing."""
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs the package{'s' if len(missing) > 1 else ''} {' and '.join(missing)}, which "
            f"{'are' if len(missing) > 1 else 'is'} not installed. Install keras-cifar's export extra: "
            "pip install 'keras-cifar[export]' (in a checkout: pip install -e '.[export]')."
        )


def check_format(format):
    if format not in FORMATS:
        raise UsageError(f"Unknown export format {format!r}: `format` must be one of {', '.join(FORMATS)}. "
                         f"Received: `format={format!r}`")


def default_path(checkpoint, format):
    """`best.keras` -> `best.onnx` / `best.pt2`, beside the checkpoint."""
    return os.path.splitext(checkpoint)[0] + FORMATS[format]


def metadata(model, class_names, config=None, source=None):
    import keras_cifar

    return {
        "model": model.name,
        "class_names": list(class_names),
        "input": f"{INPUT_NAME}: uint8 (batch, {', '.join(str(d) for d in model.inputs[0].shape[1:])}), "
                 "RGB 0..255, channels last; the model preprocesses them",
        "output": f"{OUTPUT_NAME}: float32 (batch, {model.outputs[0].shape[-1]}), before softmax",
        "config": config or {},
        "source": os.path.basename(source) if source else "",
        "keras_cifar_version": keras_cifar.__version__,
    }


def export_model(model, path, format, meta):
    """Writes `model` (a Keras model taking raw images) to `path` in `format`; returns the seconds."""
    check_format(format)
    if format == "onnx":
        require_packages(ONNX_EXPORT_PACKAGES, "Exporting to ONNX")
    started = time.perf_counter()
    write(capture(model), path, format, meta)
    return time.perf_counter() - started


def write(program, path, format, meta):
    """Saves a captured program (`capture`) as `format`: one capture serves both formats."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"Cannot write {path!r}: the folder {folder!r} does not exist. Choose another `output`.")
    if format == "torch":
        _save_pt2(program, path, meta)
    else:
        _save_onnx(program, path, meta)


def _inference_module(model):
    """The forward pass as a torch module: uint8 images in, float32 logits out."""
    import torch

    # The Keras model is not a submodule: registered, its variables would be the program's parameters
    # while the forward reads their values as constants, so every weight would be stored twice, and
    # a non-float variable (a dropout seed) as a parameter breaks `torch.export.load` before torch 2.10.
    class Inference(torch.nn.Module):
        def forward(self, images):
            return model(images.to(torch.float32), training=False).to(torch.float32)

    return Inference()


def capture(model):
    """`torch.export` of the model at any batch size (as Keras's `export_torch` with `dynamic_shapes`)."""
    import keras
    import torch

    # Keras makes the forward pass's tensors (and the copies below) on the CPU in this scope.
    with keras.device("cpu"), torch.no_grad():
        model = float32_model(on_cpu(model))
        sample = torch.zeros((2, *model.inputs[0].shape[1:]), dtype=torch.uint8, device=variables_device(model))
        try:
            return torch.export.export(_inference_module(model), (sample,),
                                       dynamic_shapes=({0: torch.export.Dim(BATCH)},), strict=False)
        except Exception as error:
            layer = failing_layer(error, model)
            where = f"its layer {layer.name!r} ({type(layer).__name__})" if layer is not None else "its forward pass"
            raise ExportError(
                f"The model {model.name!r} cannot be exported: torch.export cannot capture {where} "
                f"({type(error).__name__}: {_first_line(error)}). Only layers made of tensor operations export; "
                "Python control flow on tensor values or NumPy calls inside a layer do not."
            ) from None


def failing_layer(error, model):
    """The innermost Keras layer (not the model) running when `error` was raised, or None."""
    import keras

    found = None
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        trace = error.__traceback__
        while trace is not None:
            candidate = trace.tb_frame.f_locals.get("self")
            if isinstance(candidate, keras.layers.Layer) and not isinstance(candidate, keras.Model):
                found = candidate
            trace = trace.tb_next
        error = error.__cause__ or error.__context__
    return found


def variables_device(model):
    """The device of the model's variables: "cpu", or another one where any of them lies there.
    (Read outside a CPU scope where Keras's default device is "meta", they are meta stubs.)"""
    devices = {str(variable.value.device) for variable in model.weights}
    return next(iter(devices - {"cpu"}), "cpu")


def on_cpu(model):
    """The model with its variables on the CPU: itself, or a copy saved and reloaded there (the
    checkpoint path, which every model takes)."""
    import tempfile

    import keras

    if variables_device(model) == "cpu":
        return model
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        with keras.device("cpu"):
            return keras.saving.load_model(path, compile=False)


def float32_model(model):
    """The model computing in float32: a copy if it was saved under a mixed-precision policy
    (its weights are float32 either way), so that the file takes no bfloat16/float16 kernels."""
    import keras

    from keras_cifar import keras_internals

    if all(layer.dtype_policy.name == "float32" for layer in [model, *keras_internals.all_layers(model)]):
        return model
    with _global_policy("float32"):
        copy = keras.models.clone_model(model, clone_function=lambda layer: layer.__class__.from_config(
            {**layer.get_config(), "dtype": "float32"}))
    copy.set_weights(model.get_weights())
    return copy


class _global_policy:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        import keras

        self.saved = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        import keras

        keras.config.set_dtype_policy(self.saved)


def _first_line(error):
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else "").strip()[:300]


def _save_pt2(program, path, meta):
    import torch

    torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(meta)})


def _save_onnx(program, path, meta):
    import contextlib
    import io
    import logging
    import warnings

    import torch

    # torch's ONNX exporter logs a warning per torchvision operator it cannot register when no
    # torchvision is installed (torch 2.15), which keras-cifar does not need: its log below errors.
    # onnxscript before 0.7 prints its optimizer's rewrites to stdout, which is the command's output.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        exporter_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, dynamo=True, input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME], verbose=False)
            onnx_program.optimize()
    except Exception as error:
        raise ExportError(f"The model {meta['model']!r} cannot be converted to ONNX ({type(error).__name__}: "
                          f"{_first_line(error)}).") from None
    finally:
        exporter_log.setLevel(level)
    ir_model = onnx_program.model
    for value in (*ir_model.graph.inputs, *ir_model.graph.outputs):
        value.shape = _named_batch(value.shape)
    ir_model.metadata_props.update(
        {key: json.dumps(value) if key in JSON_KEYS else str(value) for key, value in meta.items()})
    onnx_program.save(path)


def _named_batch(shape):
    """The shape with its first (symbolic) dimension called `batch` (torch names it s0, s77...)."""
    import onnx_ir

    return onnx_ir.Shape([BATCH, *list(shape)[1:]])


def decode_onnx_metadata(props):
    """ONNX metadata_props (all strings) -> the metadata dict, its JSON values decoded."""
    return {key: json.loads(value) if key in JSON_KEYS else value for key, value in props.items()}


def read_metadata(path):
    """The metadata of an exported file (a dict: model, class_names, config, input, output...)."""
    if path.endswith(FORMATS["onnx"]):
        require_packages(("onnx",), "Reading an ONNX file's metadata")
        import onnx

        return decode_onnx_metadata({p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props})
    import torch

    extra = {METADATA_FILE: ""}
    torch.export.load(path, extra_files=extra)
    return json.loads(extra[METADATA_FILE] or "{}")


def export_checkpoint(checkpoint=None, format="onnx", output=None, log_dir="logs"):
    """Exports a run's best checkpoint (or a .keras file; None: the latest run under `log_dir`)
    -> (the written path, seconds). The file goes beside the checkpoint unless `output` is given."""
    from keras_cifar.train import run_dir as rd
    from keras_cifar.train.checkpoints import load_checkpoint
    from keras_cifar.train.predict import class_names_of_run

    check_format(format)
    path = rd.resolve_checkpoint(checkpoint, log_dir)
    output = output or default_path(path, format)
    suffix = FORMATS[format]
    if not str(output).endswith(suffix):
        raise UsageError(f"`output` must end in {suffix} for `format={format!r}`. Received: `output={str(output)!r}`")
    if format == "onnx":
        require_packages(ONNX_EXPORT_PACKAGES, "Exporting to ONNX")
    import keras

    with keras.device("cpu"):  # on a GPU machine too: the file is made on the CPU
        model = load_checkpoint(path)
    run_path = os.path.dirname(os.path.abspath(path))
    config = _run_config(run_path) if rd.is_run_dir(run_path) else {}
    meta = metadata(model, class_names_of_run(run_path, model.outputs[0].shape[-1]), config, path)
    return output, export_model(model, str(output), format, meta)


def _run_config(run_path):
    from keras_cifar.errors import KerasCifarError
    from keras_cifar.train import run_dir as rd
    from keras_cifar.train.config import read_config_file

    try:
        return read_config_file(os.path.join(run_path, rd.CONFIG))
    except KerasCifarError:
        return {}
