"""Trains a PyTorch reference module (pytorch_reference.originals) with a plain PyTorch
loop on the same data as `cli.py fit`, writing metrics.csv for `cli.py plot`.

    python -m pytorch_reference.train_reference --model cnn --data ../shared/data/cifar10-jpeg.tar.gz \
        --epochs 20 --batch-size 32 --lr 1e-3 --out logs/reference/cnn
"""

import json
import os
import time

import click

import keras_cifar  # noqa: F401  (backend first)
from keras_cifar.data import load_cifar
from pytorch_reference.torch_loop import final_and_best, train_reference


@click.command()
@click.option("--model", required=True)
@click.option("--data", default="cifar10", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--epochs", type=int, required=True)
@click.option("--batch-size", type=int, required=True)
@click.option("--lr", type=float, required=True)
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam", show_default=True)
@click.option("--momentum", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resize-to", type=int, default=None, help="googlenet/resnet18 upscale (default 224).")
@click.option("--max-steps", type=int, default=None, help="Stop after this many training steps.")
@click.option("--out", required=True, help="Folder for metrics.csv and summary.json.")
def main(model, data, data_dir, epochs, batch_size, lr, optimizer, momentum, seed, resize_to, max_steps, out):
    started = time.perf_counter()
    dataset = load_cifar(data, data_dir)
    history = train_reference(model, dataset, epochs, batch_size, lr, optimizer, momentum, seed, out,
                              resize_to if resize_to else "default", max_steps)
    final, best, best_epoch = final_and_best(history)
    summary = {"model": model, "framework": "pytorch", "epochs": len(history), "final_accuracy": final,
               "best_accuracy": best, "best_epoch": best_epoch,
               "train_time_s": sum(row["epoch_time_s"] for row in history),
               "total_time_s": time.perf_counter() - started, "batch_size": batch_size, "lr": lr,
               "optimizer": optimizer, "seed": seed}
    with open(os.path.join(out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"final {100 * final:.2f}%, best {100 * best:.2f}% (epoch {best_epoch})")


if __name__ == "__main__":
    main()
