"""Seconds and file sizes of `export` for every model of the zoo, both formats.

    python -m bench.export_times [--models cnn,resnet18]

Each model is built with random weights (resnet18 without ImageNet weights), saved as a `.keras`
file and exported as `cli.py export` does (`export_checkpoint`: load, capture, convert, write),
in this one process, so Python's start-up is not counted; the table is the README's.
"""

import os
import tempfile

import click

import keras_cifar  # noqa: F401  (selects Keras's torch backend first)
from keras_cifar.export import export_checkpoint
from keras_cifar.models import create_model, list_models


@click.command()
@click.option("--models", default=",".join(list_models()), show_default=True, help="Comma-separated models.")
def main(models):
    print("| model | `--format torch` | `.pt2` size | `--format onnx` | `.onnx` size |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in models.split(","):
            checkpoint = os.path.join(folder, f"{name}.keras")
            create_model(name, **({"weights": None} if name == "resnet18" else {})).save(checkpoint)
            cells = []
            for format in ("torch", "onnx"):
                path, seconds = export_checkpoint(checkpoint, format)
                cells += [f"{seconds:.1f} s", f"{os.path.getsize(path) / 1e6:.2f} MB"]
            print(f"| `{name}` | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
