"""The commands on trained runs: `evaluate`, `predict`, `export`, `models`, `tensorboard`, `plot`
(`keras_cifar.cli` adds them to its group)."""

import json
import os
import sys

import click

from keras_cifar.cli_errors import handle_errors
from keras_cifar.errors import KerasCifarError, UsageError

DEFAULT_LOG_DIR = "logs"


# --- evaluate -------------------------------------------------------------------------------------

_checkpoint_option = click.option(
    "--checkpoint", type=click.Path(), default=None,
    help="A run folder (its best.keras) or a .keras file. Default: the latest run under --log-dir.")
_log_dir_option = click.option("--log-dir", type=click.Path(file_okay=False), default=DEFAULT_LOG_DIR,
                               show_default=True, help="Where run folders are.")
_device_option = click.option("--device", default="auto", show_default=True, metavar="AUTO|CPU|CUDA|CUDA:N",
                              help="Device: auto (cuda when available), cpu, cuda or cuda:N.")


def _load_for_inference(checkpoint, log_dir, device):
    import keras

    from keras_cifar.train.checkpoints import load_checkpoint
    from keras_cifar.train.device import select_device
    from keras_cifar.train.run_dir import resolve_checkpoint

    path = resolve_checkpoint(checkpoint, log_dir)
    device = select_device(device)
    with keras.device(device):
        model = load_checkpoint(path)
    model_run = os.path.dirname(os.path.abspath(path))
    return path, model, device, model_run


@click.command()
@_checkpoint_option
@_log_dir_option
@click.option("--data", default=None,
              help="Data to evaluate on. Default: the data of the checkpoint's run, else 'cifar10'.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="TFDS data directory.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Which split to evaluate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per step. Default: the run's eval_batch_size, else 500.")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: average the logits of the image, its mirror, and both shifted by one "
                   "pixel (6 passes; any model).")
@_device_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def evaluate(checkpoint, log_dir, data, data_dir, split, batch_size, tta, device, as_json):
    """Evaluate a checkpoint: accuracy, per-class accuracy and the confusion matrix."""
    import keras

    from keras_cifar.data import load_cifar
    from keras_cifar.train import run_dir as rd
    from keras_cifar.train.checkpoints import check_compatible
    from keras_cifar.train.evaluation import classification_report, format_report, predict_logits, predict_logits_tta

    path, model, device, run_path = _load_for_inference(checkpoint, log_dir, device)
    saved = _run_config(run_path) if rd.is_run_dir(run_path) else {}
    data = data or saved.get("data") or "cifar10"
    data_dir = data_dir or saved.get("data_dir")
    batch_size = batch_size or saved.get("eval_batch_size") or 500
    dataset = load_cifar(data, data_dir, log=lambda message: click.echo(message, err=True))
    check_compatible(model, path, dataset.num_classes)
    split_data = dataset.test if split == "test" else dataset.train
    with keras.device(device):
        if hasattr(model, "set_graph_capture"):  # checkpoints of the zoo are ImageClassifiers
            model.set_graph_capture(True)
        predict = predict_logits_tta if tta else predict_logits
        report = classification_report(split_data.labels, predict(model, split_data, batch_size),
                                       dataset.class_names)
    report.update(checkpoint=path, split=split, data=dataset.source, tta=tta)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        augmented = ", test-time augmentation (6 views)" if tta else ""
        click.echo(f"Checkpoint: {path}\nData: {dataset.source}, {split} split{augmented}\n")
        click.echo(format_report(report))


def _run_config(run_path):
    from keras_cifar.train import run_dir as rd
    from keras_cifar.train.config import read_config_file

    try:
        return read_config_file(os.path.join(run_path, rd.CONFIG))
    except KerasCifarError:
        return {}


# --- predict --------------------------------------------------------------------------------------


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", type=click.Path(), default=None,
              help="A run folder (its best.keras), a .keras file, or an exported .onnx or .pt2 file (run on the "
                   "CPU; see `export`). Default: the latest run under --log-dir.")
@_log_dir_option
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many classes to show per image.")
@_device_option
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
@handle_errors
def predict(images, checkpoint, log_dir, top_k, device, as_json):
    """Classify image files (any size, colour or grey; a folder means every image in it).

    Images are read with OpenCV and preprocessed exactly as in training (converted to RGB
    and resized to 32x32; the model does the rest). An exported .onnx (needs the export
    extra's onnxruntime) or .pt2 file predicts as its checkpoint does. Files that cannot be read are listed
    and the command exits with status 1 after predicting the others.
    """
    import keras

    from keras_cifar.serving import is_exported, load_exported
    from keras_cifar.train.predict import class_names_of_run, predict_files

    if checkpoint is not None and is_exported(checkpoint):
        path, model = checkpoint, load_exported(checkpoint)
        results, failures = predict_files(model, images, model.class_names, top_k)
    else:
        path, model, device, run_path = _load_for_inference(checkpoint, log_dir, device)
        class_names = class_names_of_run(run_path, model.outputs[0].shape[-1])
        with keras.device(device):
            results, failures = predict_files(model, images, class_names, top_k)
    if as_json:
        click.echo(json.dumps({"checkpoint": path, "predictions": results, "failed": failures}, indent=2))
    else:
        for result in results:
            ranked = ", ".join(f"{p['class']} {100 * p['probability']:.1f}%" for p in result["top"])
            click.echo(f"{result['file']}: {ranked}")
        for failure in failures:
            click.echo(f"{failure['file']}: cannot read ({failure['reason']})", err=True)
    if failures:
        click.echo(f"Error: {len(failures)} of {len(results) + len(failures)} file(s) could not be read as images.",
                   err=True)
        sys.exit(1)


# --- export ---------------------------------------------------------------------------------------


@click.command()
@click.argument("checkpoint", required=False, type=click.Path())
@click.option("--format", "format", type=click.Choice(["onnx", "torch"]), default="onnx", show_default=True,
              help="onnx: a .onnx file for onnxruntime (needs the export extra: pip install "
                   "'keras-cifar[export]'). torch: a .pt2 torch.export program for torch.export.load.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="File to write (.onnx or .pt2). Default: beside the checkpoint, best.keras -> best.onnx.")
@_log_dir_option
@handle_errors
def export(checkpoint, format, output, log_dir):
    """Export a checkpoint for serving without Keras: CHECKPOINT is a run folder (its best.keras)
    or a .keras file; default the latest run under --log-dir.

    \b
    The file takes what the checkpoint takes, raw RGB images as uint8 (N, 32, 32, 3), any N,
    the preprocessing inside, and gives float32 logits (N, classes). Its metadata holds the class
    names and the run's config. Serving needs onnxruntime (.onnx) or torch (.pt2), nothing else:
      onnxruntime.InferenceSession("best.onnx").run(None, {"images": images})[0]
      torch.export.load("best.pt2").module()(torch.from_numpy(images))
    `predict --checkpoint best.onnx` runs it here.
    """
    from keras_cifar.export import export_checkpoint

    path, seconds = export_checkpoint(checkpoint, format, output, log_dir)
    size = os.path.getsize(path) / 1e6
    click.echo(f"Wrote {path} ({size:.1f} MB, {format}, {seconds:.1f} s)")


# --- models ---------------------------------------------------------------------------------------


@click.command()
@handle_errors
def models():
    """List the models: parameters, input size, and the original experiment each reproduces."""
    from keras_cifar.models import create_model, get_model_info, list_models
    from keras_cifar.train.config_files import configs_dir

    rows = [("name", "parameters", "input", "original experiment", "default config")]
    for name in list_models():
        info = get_model_info(name)
        model = create_model(name)
        trainable = sum(int(v.numpy().size) for v in model.trainable_variables)
        config = configs_dir() / f"{name}.yaml"
        rows.append((name, f"{trainable:,}", info.input_size, info.experiment,
                     f"configs/{config.name}" if config.is_file() else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            click.echo("  ".join("-" * width for width in widths))
    click.echo("\nParameters are trainable weights (batch-norm statistics excluded, as PyTorch counts them).")


# --- tensorboard ----------------------------------------------------------------------------------


@click.command()
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--log-dir", type=click.Path(file_okay=False), default=DEFAULT_LOG_DIR, show_default=True,
              help="Folder of runs to show when RUN_DIR is not given.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=6006, show_default=True,
              help="Port (0: any free port).")
@handle_errors
def tensorboard(run_dir, log_dir, host, port):
    """Start TensorBoard on logs/ (or on one run folder) and print its URL. Ctrl-C stops it."""
    from keras_cifar.train.board import serve

    target = run_dir or log_dir
    if not os.path.isdir(target):
        raise UsageError(f"{target!r} is not a folder. Train a run first or pass a run folder.")
    serve(target, host, port, echo=lambda message: click.echo(message))


# --- plot -----------------------------------------------------------------------------------------


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="curves.png", show_default=True,
              help="PNG file to write.")
@click.option("--label", "labels", multiple=True, help="Legend label of each run, in order (default: folder name).")
@click.option("--title", default=None, help="Figure title.")
@handle_errors
def plot(runs, output, labels, title):
    """Draw training curves (train and test accuracy per epoch) of run folders or metrics.csv files."""
    from keras_cifar.train.plots import plot_runs

    if labels and len(labels) != len(runs):
        raise UsageError(f"Give one --label per run: {len(runs)} run(s), {len(labels)} label(s).")
    plot_runs(runs, output, labels or None, title)
    click.echo(f"Wrote {output}")


COMMANDS = (evaluate, predict, export, models, tensorboard, plot)
